"""Merges of tensors already in memory, for sweeps: statistics once, then one weighted pass per trial.

A sweep merges the same bags hundreds of times with different weights. Reading them from disk
and writing a checkpoint per trial costs far more than the maths, so a sweep holds the bags'
tensors in memory once (in their stored dtype: bfloat16 stays 2 bytes an element) and builds
each trial's merged tensors here, block by block, through the same driver (merge/driver.py:
method protocol, float32 conversions, fused kernels, rounding, worker threads) as the streaming
executor, storing each block straight into the resident model's parameters when the caller gives
them as targets.

Statistics whose value does not depend on the weights (`Method.weight_free_statistics`: the Gram
matrix of multislerp, the dot products of slerp) are computed once per sweep by
`sweep_statistics` and passed to every trial and to the final streaming merge of the winner
(`StreamingMerge(statistics=...)`), so the written model is bit for bit the one the trial scored:
the combine step is elementwise, so its result does not depend on how a tensor is cut into
blocks. Other methods compute their statistics per trial, over whole tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
from threadpoolctl import threadpool_limits

from boom_ray.merge.blocks import Workers, default_threads, worker_pool
from boom_ray.merge.driver import ArrayOutput, Arrays, gather_statistics, merge_tensor
from boom_ray.merge.io import FLOAT_DTYPES, TensorReader, index_model
from boom_ray.merge.methods import Method, Settings, TensorState
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


class _Tensors:
    """The tensors of one merge (models, then the base), with each tensor's state and source."""

    def __init__(self, method: Method, settings: Settings, models: list[Mapping[str, StoredTensor]],
                 base: Mapping[str, StoredTensor] | None) -> None:
        self.method, self.settings, self.models, self.base = method, settings, models, base
        self.positions = layer_positions(models[0])
        self.rows = len(models) + (base is not None)

    def source(self, name: str) -> Arrays:
        rows = [m[name] for m in self.models] + ([self.base[name]] if self.base is not None else [])
        return Arrays([t.raw for t in rows], rows[0].dtype, len(self.models))

    def state(self, name: str) -> TensorState:
        """A tensor's state, its parameters resolved for it from the validated settings."""
        first = self.models[0][name]
        params = self.method.resolve(self.settings, name, self.positions[name])
        return self.method.new_state(params, first.raw.size, first.shape, name)


def sweep_statistics(method: Method, settings: Settings, models: list[Mapping[str, StoredTensor]],
                     base: Mapping[str, StoredTensor] | None, threads: int | None = None
                     ) -> dict[str, list[np.ndarray]]:
    """tensor name -> the summed statistics of each pass, for a method whose statistics do not
    depend on the weights (empty for others, and for methods without statistics)."""
    if not method.weight_free_statistics:
        return {}
    out = {}
    tensors = _Tensors(method, settings, models, base)
    threads = threads or default_threads()
    with worker_pool(threads) as pool, threadpool_limits(1):
        workers = Workers(pool, threads, tensors.rows)
        for name, first in models[0].items():
            if first.dtype not in FLOAT_DTYPES:
                continue
            state = tensors.state(name)
            if state.passes:
                out[name] = gather_statistics(method, state, tensors.source(name), workers, _block(method, state))
    return out


def merge_in_memory(method: Method, settings: Settings, models: list[Mapping[str, StoredTensor]],
                    base: Mapping[str, StoredTensor] | None, statistics: Mapping[str, list[np.ndarray]] | None = None,
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
    tensors = _Tensors(method, settings, models, base)
    threads = threads or default_threads()
    with worker_pool(threads) as pool, threadpool_limits(1):
        workers = Workers(pool, threads, tensors.rows)
        for name, first in models[0].items():
            into = targets(name) if targets is not None else None
            if first.dtype not in FLOAT_DTYPES:
                if into is not None:
                    into[0][...] = first.raw
                else:
                    emit(name, first.raw.reshape(first.shape))
                continue
            state = tensors.state(name)
            output = ArrayOutput(*(into or (np.empty(first.raw.size, np.float32), "F32")))
            merge_tensor(method, state, tensors.source(name), output, workers, _block(method, state),
                         statistics.get(name))
            if into is None:
                emit(name, output.array.reshape(first.shape))
    return out
