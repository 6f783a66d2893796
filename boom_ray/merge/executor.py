"""The streaming merge: checks the inputs, then merges one tensor at a time in memory-bounded
windows and stores each result straight into its place in the output shards.

Memory plan: the budget pays for one mapped window per input (the slice of a tensor being
merged, in its stored dtype), one window's worth for the output (kept in the plan, though results
now go out by pwrite from per-worker staging rows), and float32 scratch for one cache-sized
block per worker thread (see `io.Window`). A tensor that fits a window is mapped
once and all of a method's passes run over it; a bigger one is cut into chunks and mapped again
for every pass (its statistics passes plus the combine: two for multislerp, slerp, karcher and
model_stock, three for ties with density < 1, up to four for sce and rescaled ties or
breadcrumbs, one for linear and task arithmetic). Chunks and blocks hold whole rows for methods
that ask for them (`Method.alignment`: DELLA). RSS is the interpreter plus these, whatever the model size.

Time plan: inputs are read straight from the page cache (mapped); the work is converting to
float32, a few flops per element, and writing the output (pwrite of each rounded block: on
ext4, stores through a mapped output cost a journalled write fault per fresh page, 10x the
pwrite). Each window is cut into one block-aligned slice per worker thread and every worker does
all three for its slice, so the whole merge uses every core.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from boom_ray.errors import BoomError
from boom_ray.merge.blocks import BlockScratch, default_threads, fused_combine, fused_statistics, on_blocks, worker_pool
from boom_ray.merge.io import (FLOAT_DTYPES, OUTPUT_DTYPES, STORAGE, OutTensor, ShardedWriter, TensorLoc,
                               TensorReader, Window, from_float32, index_model, itemsize)
from boom_ray.merge.methods import Method, TensorState, new_state
from boom_ray.merge.methods.params import layer_positions


class MergeError(BoomError):
    """A merge that cannot run or produced an unusable result; the message names tensor and model."""


class InputMismatchError(MergeError):
    """The input models do not have the same tensors, shapes and dtypes."""


class NonFiniteError(MergeError):
    """A merged tensor holds NaN or Inf."""


MIN_BLOCK = 1 << 8
MAX_BLOCK = 1 << 16
"""Elements per row of a float32 block: about 1.3 MB for five rows (the fastest of 8K to 128K
elements per row measured on the 2-vCPU box, as in merge/in_memory.py), so the conversions, the
statistics and the combine of a block run in cache and RAM sees each input byte about once per
pass."""


@dataclass(frozen=True)
class LocalInputs:
    """Resolved, validated inputs of one merge: `paths[i]` for the non-base models, then the base."""

    method: Method
    paths: list[str]
    base: str | None
    params: dict[str, Any]
    model_params: list[dict[str, Any]]
    """Settings as `Method.validate` returns them (gradients and filters resolved per tensor)."""
    dtype: str | None  # safetensors dtype name of the output's float tensors, None = as input


def check_inputs(labels: list[str], indexes: list[dict[str, TensorLoc]]) -> None:
    """Every model has the first model's tensors with the same shape and dtype; the error names the
    first tensor (in the first model's storage order) and the model that differ."""
    ref_label, ref = labels[0], indexes[0]
    for label, index in zip(labels[1:], indexes[1:]):
        for name, loc in ref.items():
            other = index.get(name)
            if other is None:
                raise InputMismatchError(f"tensor {name!r} of {ref_label} is missing from {label}")
            if other.shape != loc.shape:
                raise InputMismatchError(f"tensor {name!r} has shape {list(other.shape)} in {label} but "
                                         f"{list(loc.shape)} in {ref_label}")
            if other.dtype != loc.dtype:
                raise InputMismatchError(f"tensor {name!r} has dtype {other.dtype} in {label} but "
                                         f"{loc.dtype} in {ref_label}")
        extra = [name for name in index if name not in ref]
        if extra:
            raise InputMismatchError(f"tensor {extra[0]!r} of {label} is missing from {ref_label}")


@dataclass(frozen=True)
class MemoryPlan:
    """Elements per mapped window (`chunk`) and per float32 scratch row (`block`), and the worker
    `threads` that fit."""

    chunk: int
    block: int
    threads: int


def plan_memory(budget: int, rows: int, in_size: int, out_size: int, scratch: int,
                threads: int = 1) -> MemoryPlan:
    """Split the budget: `rows` input windows of `in_size` bytes per element and an output window
    of `out_size` bytes per element, plus float32 scratch per worker thread (`scratch` copies of
    the rows plus the result) for a block. A sixteenth of the budget is left for everything else
    a merge allocates (statistics, views, the allocator's own slack). A chunk is whole blocks, so
    a tensor's blocks never depend on how it was cut. Threads are a speed choice and the budget a
    limit: a budget too small for the requested threads gets fewer, down to one."""
    usable = budget * 15 // 16
    for t in range(max(1, threads), 0, -1):
        per_block_elem = 4 * (rows * scratch + 3) * t
        block = max(MIN_BLOCK, min(MAX_BLOCK, usable // 8 // per_block_elem))
        chunk = (usable - block * per_block_elem) // (rows * in_size + out_size)
        chunk -= chunk % block
        if chunk >= block * t:
            return MemoryPlan(chunk, block, t)
    need = MIN_BLOCK * (4 * (rows * scratch + 3) + rows * in_size + out_size) * 16 // 15 + 1
    raise MergeError(f"memory_budget of {budget} bytes is too small to merge {rows} models; "
                     f"give it at least {need} bytes")


class StreamingMerge:
    """Runs one merge into an already created (empty) output directory."""

    def __init__(self, inputs: LocalInputs, memory_budget: int, max_shard_size: int, progress: bool = True,
                 threads: int | None = None, statistics: dict[str, list[np.ndarray]] | None = None) -> None:
        """`statistics`: tensor name -> summed statistics of each pass, computed earlier for these
        inputs (a sweep's, see merge/in_memory.py); those tensors skip their statistics passes."""
        self.inputs = inputs
        self.statistics = statistics or {}
        self.method = inputs.method
        self.max_shard_size = max_shard_size
        self.progress = progress
        labels = inputs.paths + ([inputs.base] if inputs.base else [])
        self.indexes = [index_model(p) for p in labels]
        check_inputs(labels, self.indexes)
        self.ref = self.indexes[0]
        self.rows = len(labels)
        self.n = len(inputs.paths)
        in_size = max(loc.itemsize for loc in self.ref.values())
        self.out_size = out_size = max(itemsize(self.out_dtype(loc)) for loc in self.ref.values())
        self.plan = plan_memory(memory_budget, self.rows, in_size, out_size, self.method.scratch,
                                threads or default_threads())
        self.largest = max(loc.numel for loc in self.ref.values())
        positions = layer_positions(self.ref)
        # every tensor's parameters, resolved before any tensor is read (errors surface up front)
        self.resolved = {name: self.method.resolve(inputs.params, inputs.model_params, name, positions[name])
                         for name, loc in self.ref.items() if loc.dtype in FLOAT_DTYPES}

    def out_dtype(self, loc: TensorLoc) -> str:
        return self.inputs.dtype if self.inputs.dtype and loc.dtype in FLOAT_DTYPES else loc.dtype

    def state(self, loc: TensorLoc) -> TensorState:
        params, model_params = self.resolved[loc.name]
        return new_state(self.method, params, model_params, loc.numel, loc.shape, loc.name)

    def total_read_bytes(self) -> int:
        total = 0
        for loc in self.ref.values():
            if loc.dtype not in FLOAT_DTYPES:
                total += loc.nbytes
                continue
            passes = 0 if loc.name in self.statistics else self.state(loc).passes
            reads = 1 if loc.numel <= self.plan.chunk else 1 + passes
            total += reads * self.rows * loc.nbytes
        return total

    def run(self, out_dir: str) -> dict[str, Any]:
        """Merge every tensor into `out_dir`; returns a summary (tensors, bytes, shards)."""
        out_tensors = [OutTensor(name, self.out_dtype(loc), loc.shape) for name, loc in self.ref.items()]
        writer = ShardedWriter(out_dir, out_tensors, self.max_shard_size)
        bar = tqdm(total=self.total_read_bytes(), unit="B", unit_scale=True, unit_divisor=1024,
                   desc=f"merge ({self.method.name})", disable=not self.progress, mininterval=1.0)
        try:
            with worker_pool(self.plan.threads) as workers, TensorReader() as reader, threadpool_limits(1):
                run = _Run(self, reader, writer, bar, workers)
                names = list(self.ref)
                for k, (name, loc) in enumerate(self.ref.items()):
                    locs = [index[name] for index in self.indexes]
                    if k + 1 < len(names):  # have the disk read the next tensor while this one merges
                        for index in self.indexes:
                            nxt = index[names[k + 1]]
                            reader.prefetch(nxt, 0, min(nxt.numel, self.plan.chunk))
                    if loc.dtype in FLOAT_DTYPES:
                        run.merge_tensor(locs)
                    else:
                        run.copy_tensor(loc)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
        return {"tensors": len(out_tensors), "bytes": writer.total_size, "shards": writer.files}


class _Run:
    """The moving parts of one `StreamingMerge.run`: reader, writer, scratch and worker threads."""

    def __init__(self, job: StreamingMerge, reader: TensorReader, writer: ShardedWriter, bar: tqdm,
                 workers: ThreadPoolExecutor | None) -> None:
        self.job, self.method, self.plan = job, job.method, job.plan
        self.reader, self.writer, self.bar, self.workers = reader, writer, bar, workers
        self.scratch = BlockScratch(self.plan.threads, job.rows, min(self.plan.block, job.largest), job.out_size)

    def copy_tensor(self, loc: TensorLoc) -> None:
        for first in range(0, loc.numel, self.plan.chunk):
            count = min(self.plan.chunk, loc.numel - first)
            window = self.reader.map(loc, first, count)
            try:
                self.writer.write(loc.name, first * loc.itemsize, window.data)
            finally:
                window.close()
            self.bar.update(count * loc.itemsize)

    def windows(self, locs: list[TensorLoc], chunk: int) -> Iterator[tuple[int, list[Window]]]:
        """(first element, one mapped window per input) for each chunk of a tensor, unmapped after
        use; the next chunk's read is announced to the kernel first."""
        numel = locs[0].numel
        for first in range(0, numel, chunk):
            count = min(chunk, numel - first)
            nxt = first + count
            if nxt < numel:
                for loc in locs:
                    self.reader.prefetch(loc, nxt, min(count, numel - nxt))
            wins = [self.reader.map(loc, first, count) for loc in locs]
            try:
                self.bar.update(count * locs[0].itemsize * len(locs))
                yield first, wins
            finally:
                for w in wins:
                    w.close()

    def on_blocks(self, wins: list[Window], block: int, work: Callable[..., Any], reduce: bool = False,
                  widen: bool = True) -> list:
        """`blocks.on_blocks` over the mapped windows (one slice per worker thread)."""
        return on_blocks([w.data for w in wins], wins[0].dtype, self.job.n, block, self.scratch, self.workers,
                         work, reduce, widen)

    def merge_tensor(self, locs: list[TensorLoc]) -> None:
        job, method, loc = self.job, self.method, locs[0]
        state = job.state(loc)
        cached = job.statistics.get(loc.name)
        if cached is not None and state.passes:
            for p, total in enumerate(cached):
                method.finish(state, p, total)
            state.passes = 0
        block, chunk = self.plan.block, self.plan.chunk
        align = method.alignment(state)
        if align > 1:  # whole rows per block and per chunk
            if align > block:
                raise MergeError(f"{method.name} needs whole rows of {loc.name!r} ({align} elements) in one block "
                                 f"of at most {block}; raise merge.memory_budget")
            block -= block % align
            chunk -= chunk % block
        if loc.numel <= chunk:  # one window serves every pass
            for _, wins in self.windows(locs, chunk):
                for p in range(state.passes):
                    method.finish(state, p, self._statistics(state, p, 0, wins, block))
                self._combine(state, loc, 0, wins, block)
            return
        for p in range(state.passes):
            total = None
            for first, wins in self.windows(locs, chunk):
                part = self._statistics(state, p, first, wins, block)
                total = part if total is None else total + part
            method.finish(state, p, total)
        for first, wins in self.windows(locs, chunk):
            self._combine(state, loc, first, wins, block)

    def _statistics(self, state: TensorState, p: int, first: int, wins: list[Window], block: int) -> np.ndarray:
        fused = fused_statistics(self.method, state, p, wins[0].dtype, len(wins) > self.job.n)
        if fused is not None:
            stats = self.on_blocks(wins, block, lambda a, xs, base, k: fused(xs), widen=False)
        else:
            stats = self.on_blocks(wins, block,
                                   lambda a, xs, base, k: self.method.statistics(state, p, xs, base, first + a), True)
        total = stats[0]
        for s in stats[1:]:
            total = total + s
        return total

    def _combine(self, state: TensorState, loc: TensorLoc, first: int, wins: list[Window], block: int) -> None:
        """Output elements [first, first + window length): each worker rounds its blocks into its own
        staging row and writes them in place (`ShardedWriter.pwrite`)."""
        method, writer = self.method, self.writer
        out_dtype = writer.dtype(loc.name)
        size = itemsize(out_dtype)
        fused = fused_combine(method, state, wins[0].dtype, len(wins) > self.job.n)

        def combine(a: int, xs: np.ndarray | list, base: np.ndarray | None, k: int) -> None:
            m = len(xs[0])
            staged = self.scratch.store[k][: m * size].view(STORAGE[out_dtype]) if out_dtype != "F32" else None
            if fused is not None:  # bfloat16 outputs are rounded into the staging row by the kernel
                merged = fused(xs, self.scratch.res[k][:m], staged if out_dtype == "BF16" else None)
            else:
                merged = method.combine(state, xs, base, self.scratch.res[k][:m], first + a)
            if not math.isfinite(float(merged.sum())) and not bool(np.isfinite(merged).all()):
                bad = int(np.flatnonzero(~np.isfinite(merged))[0]) + first + a
                raise NonFiniteError(f"merged tensor {loc.name!r} has NaN or Inf values (first at flat index "
                                     f"{bad}; method {method.name}); check the inputs and weights")
            if out_dtype == "F32":
                part = merged
            else:
                part = staged
                if fused is None or out_dtype != "BF16":
                    from_float32(merged, out_dtype, part, self.scratch.bits[k][:m])
                if out_dtype == "F16" and not bool(np.isfinite(part).all()):
                    raise NonFiniteError(f"merged tensor {loc.name!r} overflows float16; use bfloat16 or float32")
            writer.pwrite(loc.name, (first + a) * size, part)

        self.on_blocks(wins, block, combine, widen=fused is None)
        writer.count(loc.name, wins[0].data.size * size)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n}"


def output_dtype_name(dtype: str | None) -> str | None:
    """Safetensors dtype of an output dtype option (float32/bfloat16/float16)."""
    if dtype is None:
        return None
    try:
        return OUTPUT_DTYPES[dtype]
    except KeyError:
        raise MergeError(f"unknown output dtype {dtype!r}; use one of {sorted(OUTPUT_DTYPES)}") from None

