"""Block-parallel work over flat tensor data, shared by the streaming executor (mapped windows) and
the in-memory sweep merge (tensors held in memory).

A span of elements is cut on block boundaries into one slice per worker thread; every worker
converts its blocks to float32 in its own cache-sized scratch and runs the method's statistics or
combine on them, or, for weighted sums of bfloat16 models, hands the stored rows to a fused kernel
(`fused_combine`, `fused_statistics`). numpy and the kernels release the GIL, so the workers use
every core. Blocks never depend on the number of threads, and per-block results come back in
block order, so what a merge computes does not depend on it either.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from boom_ray.merge.io import rows_to_float32


def block_slices(count: int, block: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges covering [0, count), cut on block boundaries into at most `parts` nearly
    equal slices, so every block lies in one slice and the blocks do not depend on `parts`."""
    blocks = -(-count // block)
    k = max(1, min(parts, blocks))
    cuts = [blocks * j // k * block for j in range(k)] + [count]
    return list(zip(cuts[:-1], cuts[1:]))


def default_threads() -> int:
    """Worker threads when none are configured: OMP_NUM_THREADS where set (Ray sets it to a task's
    num_cpus), else the CPUs this process may run on. (BLAS itself runs single-threaded inside a
    merge: the workers split the work, and BLAS thread teams on cache-sized blocks would only
    wait for each other.)"""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextmanager
def worker_pool(threads: int) -> Iterator[ThreadPoolExecutor | None]:
    """Worker threads for `on_blocks` (None for one thread: the caller's thread does the work)."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="merge-worker") if threads > 1 else None
    try:
        yield pool
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class BlockScratch:
    """Per worker: float32 rows of one block, a float32 result row, a uint32 row (bfloat16
    rounding) and a staging row of `out_size` bytes per element (the result in the output dtype,
    to be written; 0 where nothing is staged), allocated once per merge so no block allocates."""

    def __init__(self, threads: int, rows: int, block: int, out_size: int = 0) -> None:
        self.rows = rows
        self.xs = [np.empty(rows * block, dtype=np.float32) for _ in range(threads)]
        self.res = [np.empty(block, dtype=np.float32) for _ in range(threads)]
        self.bits = [np.empty(block, dtype=np.uint32) for _ in range(threads)]
        self.store = [np.empty(out_size * block, dtype=np.uint8) for _ in range(threads)]


def on_blocks(raws: Sequence[np.ndarray], dtype: str, n: int, block: int, scratch: BlockScratch,
              workers: ThreadPoolExecutor | None, work: Callable[..., Any], reduce: bool = False,
              widen: bool = True) -> list:
    """`work(start, xs, base, worker)` on every block of `block` elements of the flat arrays `raws`
    (one per input, storage of safetensors `dtype`; the first `n` are models, a further one the
    base), with `xs` the models' rows and `base` the base row as float32 scratch (without `widen`:
    the rows as stored, a list of slices of `raws`, for the fused kernels) and `worker` the
    index of the thread's own scratch; one block-aligned slice per worker. Returns the results in
    block order. With `reduce`, integer results (histograms) are summed per slice as they come (a
    histogram per block would outgrow a memory budget); float results stay separate, for the
    caller to sum in block order whatever the threads."""
    rows_n = scratch.rows

    def one_slice(k: int, a0: int, a1: int) -> list:
        out = []
        for a in range(a0, a1, block):
            m = min(block, a1 - a)
            if widen:
                rows = scratch.xs[k][: rows_n * m].reshape(rows_n, m)
                rows_to_float32([raw[a:a + m] for raw in raws], dtype, rows)
            else:
                rows = [raw[a:a + m] for raw in raws]
            res = work(a, rows[:n], rows[n] if rows_n > n else None, k)
            if reduce and out and res.dtype.kind in "iu":  # integer sums are exact in any order
                out[0] += res
            else:
                out.append(res)
        return out

    slices = block_slices(raws[0].size, block, len(scratch.xs))
    if workers is None or len(slices) == 1:
        parts = [one_slice(k, a, b) for k, (a, b) in enumerate(slices)]
    else:
        futures = [workers.submit(one_slice, k, a, b) for k, (a, b) in enumerate(slices)]
        wait(futures)  # every slice done before an error surfaces (and windows unmap or scratch is reused)
        parts = [f.result() for f in futures]
    return [r for part in parts for r in part]


FusedCombine = Callable[[list, np.ndarray, "np.ndarray | None"], np.ndarray]
_NO_OUTPUT = np.empty(0, dtype=np.uint16)


def fused_combine(method: Any, state: Any, dtype: str, has_base: bool) -> FusedCombine | None:
    """For bfloat16 inputs whose merge is a weighted sum of the models (`Method.weighted_sum`):
    `run(raw rows, res, out)`, which puts the block's float32 result in `res` and, when `out`
    (uint16 storage) is given, its bfloat16 rounding there, in one pass (`kernels`). None where
    the tensor takes the numpy path (`on_blocks` with `widen`)."""
    coef = method.weighted_sum(state, has_base) if dtype == "BF16" else None
    if coef is None:
        return None
    from boom_ray.merge import kernels

    coef = np.ascontiguousarray(coef, dtype=np.float32)

    def run(raws: list, res: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        kernels.weighted_sum_bf16(tuple(raws), coef, res, _NO_OUTPUT if out is None else out, out is not None)
        return res

    return run


def fused_statistics(method: Any, state: Any, pass_index: int, dtype: str,
                     has_base: bool) -> Callable[[list], np.ndarray] | None:
    """For bfloat16 inputs whose pass is the Gram matrix of the models (`Method.gram_statistics`):
    the block's Gram matrix from the raw rows in one pass (`kernels`); None otherwise."""
    if dtype != "BF16" or not method.gram_statistics(state, pass_index, has_base):
        return None
    from boom_ray.merge import kernels

    return lambda raws: kernels.gram_bf16(tuple(raws))
