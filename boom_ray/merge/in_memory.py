"""Merges of tensors already in memory, for sweeps: statistics once, then one weighted pass per trial.

A sweep merges the same bags hundreds of times with different weights. Reading them from disk
and writing a checkpoint per trial costs far more than the maths, so a sweep holds the bags'
tensors in memory once (in their stored dtype: bfloat16 stays 2 bytes an element) and builds
each trial's merged tensors here, block by block, with the same method protocol and the same
float32 conversions as the streaming executor.

Statistics whose value does not depend on the weights (`Method.weight_free_statistics`: the Gram
matrix of multislerp, the dot products of slerp) are computed once per sweep by
`sweep_statistics` and passed to every trial and to the final streaming merge of the winner
(`StreamingMerge(statistics=...)`), so the written model is bit for bit the one the trial scored:
the combine step is elementwise, so its result does not depend on how a tensor is cut into
blocks. Other methods compute their statistics per trial, over whole tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from threadpoolctl import threadpool_limits

from boom_ray.merge.io import FLOAT_DTYPES, index_model, itemsize, to_float32
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


def _blocks(rows: list[StoredTensor], block: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first element, float32 [len(rows), m]) for each block of the rows' flat data."""
    numel = rows[0].raw.size
    scratch = np.empty((len(rows), min(block, numel)), dtype=np.float32)
    for a in range(0, numel, block):
        m = min(block, numel - a)
        xs = scratch[:, :m]
        for i, t in enumerate(rows):
            to_float32(t.raw[a:a + m], t.dtype, xs[i])
        yield a, xs


def _split(xs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    return xs[:n], (xs[n] if xs.shape[0] > n else None)


def _block(method: Method, state: TensorState) -> int:
    """BLOCK, or the nearest multiple of the rows a method wants whole (`Method.alignment`)."""
    align = method.alignment(state)
    return BLOCK if align <= 1 else max(align, BLOCK - BLOCK % align)


def _state(method: Method, name: str, t: float, first: StoredTensor, params: dict[str, Any],
           model_params: list[dict[str, Any]]) -> TensorState:
    """A tensor's state, its parameters resolved for it from the validated settings."""
    shared, per_model = method.resolve(params, model_params, name, t)
    return new_state(method, shared, per_model, first.raw.size, first.shape, name)


def tensor_statistics(method: Method, state: TensorState, rows: list[StoredTensor], n: int) -> list[np.ndarray]:
    """Run every statistics pass of `state` over the tensor (n models, then the base if any),
    finishing each; returns the summed statistics of each pass."""
    totals = []
    for p in range(state.passes):
        total = None
        for a, xs in _blocks(rows, _block(method, state)):
            models, base = _split(xs, n)
            part = method.statistics(state, p, models, base, a)
            total = part if total is None else total + part
        method.finish(state, p, total)
        totals.append(total)
    return totals


def combine_tensor(method: Method, state: TensorState, rows: list[StoredTensor], n: int) -> np.ndarray:
    """The merged tensor (float32, the rows' shape) from a state whose passes are finished."""
    out = np.empty(rows[0].raw.size, dtype=np.float32)
    for a, xs in _blocks(rows, _block(method, state)):
        models, base = _split(xs, n)
        view = out[a:a + xs.shape[1]]
        merged = method.combine(state, models, base, view, a)
        if merged is not view:  # methods may return a new array instead of filling `out`
            view[...] = merged
    return out.reshape(rows[0].shape)


def sweep_statistics(method: Method, models: list[Mapping[str, StoredTensor]],
                     base: Mapping[str, StoredTensor] | None, params: dict[str, Any],
                     model_params: list[dict[str, Any]]) -> dict[str, list[np.ndarray]]:
    """tensor name -> the summed statistics of each pass, for a method whose statistics do not
    depend on the weights (empty for others, and for methods without statistics)."""
    if not method.weight_free_statistics:
        return {}
    out = {}
    positions = layer_positions(models[0])
    with threadpool_limits(1):
        for name, first in models[0].items():
            if first.dtype not in FLOAT_DTYPES:
                continue
            rows = [m[name] for m in models] + ([base[name]] if base is not None else [])
            state = _state(method, name, positions[name], first, params, model_params)
            if state.passes:
                out[name] = tensor_statistics(method, state, rows, len(models))
    return out


def merge_in_memory(method: Method, models: list[Mapping[str, StoredTensor]],
                    base: Mapping[str, StoredTensor] | None, params: dict[str, Any],
                    model_params: list[dict[str, Any]], statistics: Mapping[str, list[np.ndarray]] | None = None,
                    sink: Callable[[str, np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """Merge validated inputs tensor by tensor. Each result goes to `sink(name, float32 array)`
    when given (so a caller can copy it into a model and drop it: one merged tensor in memory at a
    time), else into the returned dict. Non-float tensors come from the first model."""
    statistics = statistics or {}
    out: dict[str, np.ndarray] = {}
    emit = sink or out.__setitem__
    positions = layer_positions(models[0])
    with threadpool_limits(1):
        for name, first in models[0].items():
            if first.dtype not in FLOAT_DTYPES:
                emit(name, first.raw.reshape(first.shape))
                continue
            rows = [m[name] for m in models] + ([base[name]] if base is not None else [])
            state = _state(method, name, positions[name], first, params, model_params)
            cached = statistics.get(name)
            if cached is not None and state.passes:
                for p, total in enumerate(cached):
                    method.finish(state, p, total)
            else:
                tensor_statistics(method, state, rows, len(models))
            emit(name, combine_tensor(method, state, rows, len(models)))
    return out


def nbytes(tensors: Mapping[str, StoredTensor]) -> int:
    return sum(t.raw.size * itemsize(t.dtype) for t in tensors.values())
