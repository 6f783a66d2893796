"""Merges of tensors already in memory, for sweeps: statistics once, then one weighted pass per trial.

A sweep merges the same bags hundreds of times with different weights. Reading them from disk
and writing a checkpoint per trial costs far more than the maths, so a sweep holds the bags'
tensors in memory once (in their stored dtype: bfloat16 stays 2 bytes an element) and builds
each trial's merged tensors here, block by block, with the same method protocol, float32
conversions, rounding and worker threads (`blocks.on_blocks`) as the streaming executor, storing
each block straight into the resident model's parameters when the caller gives them as targets.

Statistics whose value does not depend on the weights (`Method.weight_free_statistics`: the Gram
matrix of multislerp, the dot products of slerp) are computed once per sweep by
`sweep_statistics` and passed to every trial and to the final streaming merge of the winner
(`StreamingMerge(statistics=...)`), so the written model is bit for bit the one the trial scored:
the combine step is elementwise, so its result does not depend on how a tensor is cut into
blocks. Other methods compute their statistics per trial, over whole tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping

import numpy as np
from threadpoolctl import threadpool_limits

from boom_ray.merge.blocks import BlockScratch, default_threads, fused_combine, fused_statistics, on_blocks, worker_pool
from boom_ray.merge.io import FLOAT_DTYPES, from_float32, index_model, itemsize
from boom_ray.merge.methods import Method, TensorState, new_state
from boom_ray.merge.methods.params import layer_positions

BLOCK = 1 << 16
"""Elements per float32 block: the temporaries of a block stay in cache whatever the tensor size."""


@dataclass(frozen=True)
class StoredTensor:
    """One tensor's bytes as stored (numpy dtype holding the safetensors dtype) and its shape."""

    raw: np.ndarray  # flat
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]


def load_model_tensors(model_dir: str) -> dict[str, StoredTensor]:
    """Every tensor of a safetensors model (local directory), copied into memory as stored."""
    from boom_ray.merge.io import TensorReader

    out: dict[str, StoredTensor] = {}
    with TensorReader() as reader:
        for name, loc in index_model(model_dir).items():
            window = reader.map(loc, 0, loc.numel)
            try:
                out[name] = StoredTensor(np.array(window.data, copy=True), loc.dtype, tuple(loc.shape))
            finally:
                window.close()
    return out


def _block(method: Method, state: TensorState) -> int:
    """BLOCK, or the nearest multiple of the rows a method wants whole (`Method.alignment`)."""
    align = method.alignment(state)
    return BLOCK if align <= 1 else max(align, BLOCK - BLOCK % align)


def _state(method: Method, name: str, t: float, first: StoredTensor, params: dict[str, Any],
           model_params: list[dict[str, Any]]) -> TensorState:
    """A tensor's state, its parameters resolved for it from the validated settings."""
    shared, per_model = method.resolve(params, model_params, name, t)
    return new_state(method, shared, per_model, first.raw.size, first.shape, name)


class _Workers:
    """Worker threads and their block scratch for one in-memory merge (see `blocks.on_blocks`)."""

    def __init__(self, pool: ThreadPoolExecutor | None, threads: int, rows: int) -> None:
        self.pool, self.threads, self.rows = pool, threads, rows
        self.scratch = BlockScratch(threads, rows, 0)

    def run(self, rows: list[StoredTensor], n: int, block: int, work: Callable[..., Any], reduce: bool = False,
            widen: bool = True) -> list:
        need = min(block, rows[0].raw.size)
        if need > self.scratch.res[0].size:  # grown once to the largest block the merge meets
            self.scratch = BlockScratch(self.threads, self.rows, need)
        return on_blocks([t.raw for t in rows], rows[0].dtype, n, block, self.scratch, self.pool, work, reduce, widen)


def tensor_statistics(method: Method, state: TensorState, rows: list[StoredTensor], n: int,
                      workers: _Workers | None = None) -> list[np.ndarray]:
    """Run every statistics pass of `state` over the tensor (n models, then the base if any),
    finishing each; returns the summed statistics of each pass (summed in block order, so the
    same whatever the threads)."""
    workers = workers or _Workers(None, 1, len(rows))
    block = _block(method, state)
    totals = []
    for p in range(state.passes):
        fused = fused_statistics(method, state, p, rows[0].dtype, len(rows) > n)
        if fused is not None:
            parts = workers.run(rows, n, block, lambda a, xs, base, k: fused(xs), widen=False)
        else:
            parts = workers.run(rows, n, block, lambda a, xs, base, k: method.statistics(state, p, xs, base, a), True)
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        method.finish(state, p, total)
        totals.append(total)
    return totals


def combine_tensor(method: Method, state: TensorState, rows: list[StoredTensor], n: int,
                   into: tuple[np.ndarray, str] | None = None, workers: _Workers | None = None) -> np.ndarray:
    """The merged tensor from a state whose passes are finished: stored into `into` = (flat
    storage array, safetensors dtype) when given, rounded exactly as the streaming writer rounds,
    else into a new float32 array of the rows' shape. Returns the array written."""
    workers = workers or _Workers(None, 1, len(rows))
    out, dtype = into if into is not None else (np.empty(rows[0].raw.size, dtype=np.float32), "F32")
    fused = fused_combine(method, state, rows[0].dtype, len(rows) > n)

    def combine(a: int, xs: np.ndarray | list, base: np.ndarray | None, k: int) -> None:
        m, scratch = len(xs[0]), workers.scratch  # (scratch as sized for this tensor by `run`)
        part = out[a:a + m]
        res = part if dtype == "F32" else scratch.res[k][:m]  # float32 targets take the result directly
        if fused is not None:  # bfloat16 targets are rounded into by the kernel
            fused(xs, res, part if dtype == "BF16" else None)
            if dtype not in ("F32", "BF16"):
                from_float32(res, dtype, part, scratch.bits[k][:m])
            return
        merged = method.combine(state, xs, base, res, a)
        if merged is not part:  # methods may return a new array instead of filling `res`
            from_float32(merged, dtype, part, scratch.bits[k][:m])

    workers.run(rows, n, _block(method, state), combine, widen=fused is None)
    return out if into is not None else out.reshape(rows[0].shape)


def sweep_statistics(method: Method, models: list[Mapping[str, StoredTensor]],
                     base: Mapping[str, StoredTensor] | None, params: dict[str, Any],
                     model_params: list[dict[str, Any]], threads: int | None = None) -> dict[str, list[np.ndarray]]:
    """tensor name -> the summed statistics of each pass, for a method whose statistics do not
    depend on the weights (empty for others, and for methods without statistics)."""
    if not method.weight_free_statistics:
        return {}
    out = {}
    positions = layer_positions(models[0])
    threads = threads or default_threads()
    with worker_pool(threads) as pool, threadpool_limits(1):
        workers = _Workers(pool, threads, len(models) + (base is not None))
        for name, first in models[0].items():
            if first.dtype not in FLOAT_DTYPES:
                continue
            rows = [m[name] for m in models] + ([base[name]] if base is not None else [])
            state = _state(method, name, positions[name], first, params, model_params)
            if state.passes:
                out[name] = tensor_statistics(method, state, rows, len(models), workers)
    return out


def merge_in_memory(method: Method, models: list[Mapping[str, StoredTensor]],
                    base: Mapping[str, StoredTensor] | None, params: dict[str, Any],
                    model_params: list[dict[str, Any]], statistics: Mapping[str, list[np.ndarray]] | None = None,
                    sink: Callable[[str, np.ndarray], None] | None = None,
                    targets: Callable[[str], tuple[np.ndarray, str] | None] | None = None,
                    threads: int | None = None) -> dict[str, np.ndarray]:
    """Merge validated inputs tensor by tensor on `threads` worker threads (default: as many as
    the streaming merge uses); the result does not depend on their number.

    Where `targets(name)` gives (flat writable storage array, safetensors dtype F32/BF16/F16, or
    the tensor's own dtype for non-float tensors), the merged tensor is stored there block by block
    (a resident model's parameters: no merged float32 tensor is allocated or copied). Other
    results go to `sink(name, float32 array)` when given (one merged tensor in memory at a time),
    else into the returned dict. Non-float tensors come from the first model."""
    statistics = statistics or {}
    out: dict[str, np.ndarray] = {}
    emit = sink or out.__setitem__
    positions = layer_positions(models[0])
    threads = threads or default_threads()
    with worker_pool(threads) as pool, threadpool_limits(1):
        workers = _Workers(pool, threads, len(models) + (base is not None))
        for name, first in models[0].items():
            into = targets(name) if targets is not None else None
            if first.dtype not in FLOAT_DTYPES:
                if into is not None:
                    into[0][...] = first.raw
                else:
                    emit(name, first.raw.reshape(first.shape))
                continue
            rows = [m[name] for m in models] + ([base[name]] if base is not None else [])
            state = _state(method, name, positions[name], first, params, model_params)
            cached = statistics.get(name)
            if cached is not None and state.passes:
                for p, total in enumerate(cached):
                    method.finish(state, p, total)
            else:
                tensor_statistics(method, state, rows, len(models), workers)
            merged = combine_tensor(method, state, rows, len(models), into, workers)
            if into is None:
                emit(name, merged)
    return out


def nbytes(tensors: Mapping[str, StoredTensor]) -> int:
    return sum(t.raw.size * itemsize(t.dtype) for t in tensors.values())
