"""One merge from request to finished output directory, and the Ray task that runs it.

Inputs and output may be local paths or pyarrow filesystem URIs. A local (or file://) input is
read in place. A remote input (s3://, gs://, ...) is first copied to a local temporary
directory, because the executor needs positional reads of a local file; the output of a remote
merge is built locally and uploaded to a temporary name beside the destination, then renamed.
Either way the destination only ever holds a finished merge: an existing one is replaced only
with `force=True`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from boom_ray.runtime import disk_space, storage
from boom_ray.config import MergeConfig
from boom_ray.merge.executor import LocalInputs, MergeError, StreamingMerge, output_dtype_name
from boom_ray.merge.files import copy_model_files, model_file_sizes
from boom_ray.merge.modules import ModuleMerges
from boom_ray.merge.request import MANIFEST, MergeRequest, build_manifest, fingerprint, validated
from boom_ray.cards.write import write_merge_card


class MergeOutputExists(MergeError):
    """The output directory exists and `force` was not given."""


def _localize(uri: str, stack: contextlib.ExitStack, cache: dict[str, str]) -> str:
    """A local directory holding the model at `uri` (the same path when it is local)."""
    if uri in cache:
        return cache[uri]
    fs, path = storage.resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        local = path
    else:
        if not storage.is_dir(fs, path):
            raise MergeError(f"{uri}: model directory not found")
        local = stack.enter_context(tempfile.TemporaryDirectory(prefix="boom-merge-in-"))
        pafs.copy_files(path, local, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    cache[uri] = local
    return local


def merge(request: MergeRequest, out: str, cfg: MergeConfig | None = None, *, force: bool = False,
          progress: bool = True, statistics: dict[str, list[np.ndarray]] | None = None) -> dict[str, Any]:
    """Merge as `request` says into `out`; returns the manifest written there (`boom_merge.json`).

    Everything that can be checked is checked before any tensor is merged: method parameters, the
    output's existence, and that all inputs have the same tensors, shapes and dtypes, and the same
    weighted sentence-transformers modules (merged too: merge/modules.py).
    `statistics`: per-tensor statistics already computed for these inputs (a sweep's)."""
    cfg = cfg or MergeConfig()
    began = time.perf_counter()
    method, settings = validated(request)
    dtype = output_dtype_name(request.dtype)
    out_fs, out_path = storage.resolve(out)
    if storage.exists(out_fs, out_path) and not force:
        raise MergeOutputExists(f"{out} already exists; pass --force (force=True) to overwrite it")
    with contextlib.ExitStack() as stack:
        cache: dict[str, str] = {}
        paths = [_localize(m.path, stack, cache) for m in request.models]
        base = _localize(request.base_model, stack, cache) if request.base_model else None
        files_from = _localize(request.files_source(), stack, cache)
        inputs = LocalInputs(method, paths, base, settings, dtype)
        job = StreamingMerge(inputs, cfg.memory_budget, cfg.max_shard_size, progress=progress,
                             threads=cfg.threads, statistics=statistics)
        modules = ModuleMerges.plan(inputs, files_from, cfg.memory_budget, cfg.threads, stack, progress)
        fingerprints = {uri: fingerprint(local) for uri, local in cache.items()}
        local_out = isinstance(out_fs, pafs.LocalFileSystem)
        # the local disk that gets the bytes: the output's own, or the temporary build of a remote one
        space_at, what = (out, "the merge output") if local_out else (tempfile.gettempdir(), f"the local build of {out}")
        needed = output_bytes(job, modules, files_from)
        disk_space.check_free_space(space_at, needed, what)
        # outside staged_dir: a disk that fills anyway is reported once the partial output is gone
        with disk_space.disk_full_as_error(space_at, what, needed), \
                storage.staged_dir(out_fs, out_path) as staged:
            build = staged if local_out else stack.enter_context(tempfile.TemporaryDirectory(prefix="boom-merge-out-"))
            summary = modules.run(build, job.run(build))
            copy_model_files(files_from, build, request.dtype)
            write_merge_card(request, cache, build, out, cfg)  # README.md: what went in, how to redo it
            manifest = build_manifest(request, fingerprints, summary, time.perf_counter() - began)
            storage.write_json(pafs.LocalFileSystem(), os.path.join(build, MANIFEST), manifest)
            if not local_out:
                pafs.copy_files(build, staged, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=out_fs)
    return manifest


SMALL_FILES = 64 << 10
"""Room for what a merge writes besides the weights and the copied files: the model card, the
manifest, the staging owner file (a few KiB each)."""


def output_bytes(job: StreamingMerge, modules: ModuleMerges, files_from: str) -> int:
    """Disk bytes of a merge's output, known before any is written: every weight file (the top
    level's and the modules'), the files copied from `files_from`, and the small ones."""
    sizes = job.output_file_sizes() + modules.output_file_sizes() + model_file_sizes(files_from)
    return disk_space.allocated(sizes) + SMALL_FILES


@functools.cache
def _remote_merge():
    import ray  # lazy: ray, kept off `boom merge`'s local path

    return ray.remote(merge)


def task_memory(cfg: MergeConfig) -> int:
    """Bytes of memory a merge reserves on the cluster: `cfg.memory`, default twice the memory budget."""
    return cfg.memory or 2 * cfg.memory_budget


def submit_merge(request: MergeRequest, out: str, cfg: MergeConfig, *, force: bool = False):
    """Start `merge` as a Ray task reserving `cfg.num_cpus` CPUs and `task_memory(cfg)` bytes;
    returns its ObjectRef (the manifest)."""
    return _remote_merge().options(num_cpus=cfg.num_cpus, memory=task_memory(cfg)).remote(
        request, out, cfg, force=force, progress=False)
