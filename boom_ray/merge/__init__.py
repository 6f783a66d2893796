"""Streaming, memory-bounded model merging (mergekit-compatible methods) as a Ray task.

Public API (import from the submodules; this package imports nothing heavy, so `boom --help`
stays instant):

- `methods.METHODS`, `methods.merge_tensors`: the per-tensor maths, on in-memory tensors.
- `request.MergeRequest`, `request.ModelInput`, `request.load_mergekit_yaml`: what to merge.
- `task.merge(request, out, MergeConfig, force=...)`: one merge, local paths or URIs.
- `task.submit_merge(...)`: the same as a Ray task (`num_cpus`/`memory` from MergeConfig).
- `command.run_merges(RunConfig, force=...)`: the run config's merges of its bags.
"""
