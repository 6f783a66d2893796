"""Streaming, memory-bounded model merging (mergekit-compatible methods) as a Ray task.

Public API (import from the submodules; this package imports nothing heavy, so `boom --help`
stays instant):

- `methods.METHODS`, `methods.merge_tensors`: the per-tensor maths, on in-memory tensors.
- `driver`: the one driver of a method's passes (statistics, finish, combine) that the streaming
  merge (`executor`), the in-memory sweep merge (`in_memory`) and `merge_tensors` all run.
- `request.MergeRequest`, `request.ModelInput`, `request.load_mergekit_yaml`: what to merge.
- `task.merge(request, out, MergeConfig, force=...)`: one merge, local paths or URIs.
- `task.submit_merge(...)`: the same as a Ray task (`num_cpus`/`memory` from MergeConfig).
- `stage.run_merges(BoomConfig, force=...)`: the run config's merges of its bags.
"""
