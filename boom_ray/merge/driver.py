"""The one driver of the merge-method protocol: statistics passes, finish, combine, over a tensor's
blocks.

Three merges run it: the streaming merge (executor.py: windows mapped from disk, results written
in place), the in-memory sweep merge (in_memory.py: tensors held in memory, results stored into a
resident model's parameters) and `methods.merge_tensors` (whole arrays, one block). They differ
only in where the rows come from (a `Source`), where the results go (an `Output`), the block size
and the threads. The protocol, the order its sums are taken in, the fused bfloat16 paths and the
rounding live here once, so the three cannot drift apart: their results agree bit for bit given
the same statistics (a combine is elementwise, so it does not depend on the blocks), and the
statistics of the same blocks and windows are summed in the same order whatever the threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Protocol, Sequence

import numpy as np

from boom_ray.merge.blocks import Rows, Workers
from boom_ray.merge.io import from_float32

if TYPE_CHECKING:  # methods/ runs its reference merge (`merge_tensors`) through this driver
    from boom_ray.merge.methods.base import Method, TensorState

WindowRows = tuple[int, Sequence[np.ndarray]]
"""(first element, one flat array per input in its stored dtype: the models, then the base)."""


class Source(Protocol):
    """Where one tensor's input rows come from, one window after another. `windows()` is called
    once per pass over the tensor, so a source that is read from disk may map each window anew."""

    dtype: str  # safetensors dtype every input is stored in
    n: int  # models; one further input is the base
    numel: int

    def windows(self) -> Iterable[WindowRows]: ...


class Output(Protocol):
    """Where one tensor's merged blocks go, in `dtype` (F32, BF16 or F16)."""

    dtype: str

    def target(self, worker: int, start: int, count: int) -> np.ndarray:
        """Storage of `dtype` for elements [start, start + count), for worker `worker` to fill."""
        ...

    def put(self, worker: int, start: int, merged: np.ndarray, stored: np.ndarray) -> None:
        """Elements from `start` are done: `merged` (float32) rounded into `stored` (the target)."""
        ...


@dataclass
class Arrays:
    """A `Source` of a tensor held whole in memory: one window."""

    raws: list[np.ndarray]
    dtype: str
    n: int

    @property
    def numel(self) -> int:
        return self.raws[0].size

    def windows(self) -> Iterable[WindowRows]:
        return [(0, self.raws)] if self.numel else []


@dataclass
class ArrayOutput:
    """An `Output` into a flat array in memory (a resident parameter's storage, or a new one)."""

    array: np.ndarray
    dtype: str

    def target(self, worker: int, start: int, count: int) -> np.ndarray:
        return self.array[start:start + count]

    def put(self, worker: int, start: int, merged: np.ndarray, stored: np.ndarray) -> None:
        pass


FusedCombine = Callable[[Rows, np.ndarray, "np.ndarray | None"], np.ndarray]
_NO_OUTPUT = np.empty(0, dtype=np.uint16)


def fused_combine(coef: np.ndarray | None, dtype: str) -> FusedCombine | None:
    """For bfloat16 inputs whose combine is the weighted sum with `coef` (`Method.weighted_sum`):
    `run(raw rows, res, out)`, which puts the block's float32 result in `res` and, when `out`
    (uint16 storage) is given, its bfloat16 rounding there, in one pass (`kernels`). None where
    the tensor takes the numpy path."""
    if coef is None or dtype != "BF16":
        return None
    from boom_ray.merge import kernels  # lazy: numba, compiled on first use

    coef = np.ascontiguousarray(coef, dtype=np.float32)

    def run(raws: Rows, res: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        kernels.weighted_sum_bf16(tuple(raws), coef, res, _NO_OUTPUT if out is None else out, out is not None)
        return res

    return run


def fused_gram(gram: bool, dtype: str) -> Callable[[Rows], np.ndarray] | None:
    """For bfloat16 inputs whose pass is the Gram matrix of the models (`Method.gram_statistics`):
    the block's Gram matrix from the raw rows in one pass (`kernels`); None otherwise."""
    if not gram or dtype != "BF16":
        return None
    from boom_ray.merge import kernels  # lazy: numba, compiled on first use

    return lambda raws: kernels.gram_bf16(tuple(raws))


def _window_statistics(method: Method, state: TensorState, p: int, source: Source, window: WindowRows,
                       workers: Workers, block: int) -> np.ndarray:
    """One window's share of pass `p`: its blocks' statistics, summed in block order."""
    first, raws = window
    fused = fused_gram(method.gram_statistics(state, p, len(raws) > source.n), source.dtype)
    if fused is not None:
        parts = workers.run(raws, source.dtype, source.n, block, lambda a, xs, base, k: fused(xs), widen=False)
    else:
        parts = workers.run(raws, source.dtype, source.n, block,
                            lambda a, xs, base, k: method.statistics(state, p, xs, base, first + a), reduce=True)
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def gather_statistics(method: Method, state: TensorState, source: Source, workers: Workers,
                      block: int) -> list[np.ndarray]:
    """Run every statistics pass of `state` over `source`, finishing each; returns each pass's
    summed statistics (windows' sums added in window order)."""
    totals: list[np.ndarray] = []
    if not source.numel:
        return totals
    for p in range(state.passes):
        total = None
        for window in source.windows():
            part = _window_statistics(method, state, p, source, window, workers, block)
            total = part if total is None else total + part
        method.finish(state, p, total)
        totals.append(total)
    return totals


def combine(method: Method, state: TensorState, source: Source, output: Output, workers: Workers,
            block: int) -> None:
    """Every block of the merged tensor from a state whose passes are finished, into `output`,
    rounded to its dtype (bfloat16 by the fused kernel where the merge is a weighted sum)."""
    dtype = output.dtype
    for first, raws in source.windows():
        fused = fused_combine(method.weighted_sum(state, len(raws) > source.n), source.dtype)

        def one(a: int, xs: Rows, base: np.ndarray | None, k: int) -> None:
            start, m = first + a, len(xs[0])
            stored = output.target(k, start, m)
            res = stored if dtype == "F32" else workers.scratch.res[k][:m]  # (scratch as `run` sized it)
            if fused is not None:  # bfloat16 targets are rounded into by the kernel
                merged = fused(xs, res, stored if dtype == "BF16" else None)
            else:
                merged = method.combine(state, xs, base, res, start)
            if merged is not stored and (fused is None or dtype != "BF16"):
                from_float32(merged, dtype, stored, workers.scratch.bits[k][:m])
            output.put(k, start, merged, stored)

        workers.run(raws, source.dtype, source.n, block, one, widen=fused is None)


def merge_tensor(method: Method, state: TensorState, source: Source, output: Output, workers: Workers,
                 block: int, statistics: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """One tensor, start to end: its statistics passes (or, given `statistics` computed earlier
    for the same inputs, those), then the combine into `output`. Returns the statistics."""
    if statistics is not None and state.passes:
        for p, total in enumerate(statistics):
            method.finish(state, p, total)
        state.passes = 0
        totals = list(statistics)
    else:
        totals = gather_statistics(method, state, source, workers, block)
    combine(method, state, source, output, workers, block)
    return totals
