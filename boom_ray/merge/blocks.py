"""Block-parallel work over flat tensor data: the worker threads and scratch that merge/driver.py
runs every statistics and combine step on, whichever merge drives it.

A span of elements is cut on block boundaries into one slice per worker thread; every worker
converts its blocks to float32 in its own cache-sized scratch and runs the given work on them
(or hands the stored rows as they are to a fused kernel). numpy and the kernels release the GIL,
so the workers use every core. Blocks never depend on the number of threads, and per-block
results come back in block order, so what a merge computes does not depend on it either.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, Union

import numpy as np

from boom_ray.merge.io import rows_to_float32

Rows = Union[np.ndarray, list[np.ndarray]]
"""A block's model rows: float32 scratch, (n, m), or the stored rows as they are (a list of
slices, for the fused kernels)."""
BlockWork = Callable[[int, Rows, "np.ndarray | None", int], "np.ndarray | None"]
"""`work(start in the span, model rows, base row or None, worker index)`: a block's result."""


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
    """Per worker: float32 rows of one block, a float32 result row and a uint32 row (bfloat16
    rounding), allocated once per merge so no block allocates."""

    def __init__(self, threads: int, rows: int, block: int) -> None:
        self.rows = rows
        self.xs = [np.empty(rows * block, dtype=np.float32) for _ in range(threads)]
        self.res = [np.empty(block, dtype=np.float32) for _ in range(threads)]
        self.bits = [np.empty(block, dtype=np.uint32) for _ in range(threads)]


def on_blocks(raws: Sequence[np.ndarray], dtype: str, n: int, block: int, scratch: BlockScratch,
              workers: ThreadPoolExecutor | None, work: BlockWork, reduce: bool = False,
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


class Workers:
    """The worker threads of one merge and their block scratch: `run` is `on_blocks` with the
    scratch grown (once per size) to the largest block met, or sized up front by `block`."""

    def __init__(self, pool: ThreadPoolExecutor | None, threads: int, rows: int, block: int = 0) -> None:
        self.pool, self.threads, self.rows = pool, threads, rows
        self.scratch = BlockScratch(threads, rows, block)

    def run(self, raws: Sequence[np.ndarray], dtype: str, n: int, block: int, work: BlockWork,
            reduce: bool = False, widen: bool = True) -> list:
        need = min(block, raws[0].size)
        if need > self.scratch.res[0].size:
            self.scratch = BlockScratch(self.threads, self.rows, need)
        return on_blocks(raws, dtype, n, block, self.scratch, self.pool, work, reduce, widen)
