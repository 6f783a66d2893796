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

The passes themselves are merge/driver.py's, as for the in-memory sweep merge: this module is
the disk's side of them, a `Source` of mapped windows and an `Output` into the output shards.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from boom_ray.errors import BoomError
from boom_ray.merge import driver
from boom_ray.merge.blocks import Workers, default_threads, worker_pool
from boom_ray.merge.io import (FLOAT_DTYPES, OUTPUT_DTYPES, STORAGE, OutTensor, ShardedWriter, TensorLoc,
                               TensorReader, Window, index_model, itemsize, planned_file_sizes)
from boom_ray.merge.methods import Method, Settings, TensorState
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
    settings: Settings
    """As `Method.validate` returns them (gradients and filters resolved per tensor)."""
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
        self.resolved = {name: self.method.resolve(inputs.settings, name, positions[name])
                         for name, loc in self.ref.items() if loc.dtype in FLOAT_DTYPES}

    def out_dtype(self, loc: TensorLoc) -> str:
        return self.inputs.dtype if self.inputs.dtype and loc.dtype in FLOAT_DTYPES else loc.dtype

    def state(self, loc: TensorLoc) -> TensorState:
        return self.method.new_state(self.resolved[loc.name], loc.numel, loc.shape, loc.name)

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

    def out_tensors(self) -> list[OutTensor]:
        return [OutTensor(name, self.out_dtype(loc), loc.shape) for name, loc in self.ref.items()]

    def output_file_sizes(self) -> list[int]:
        """Bytes of each file `run` will write, known before it writes any (the free-space check)."""
        return planned_file_sizes(self.out_tensors(), self.max_shard_size)

    def run(self, out_dir: str) -> dict[str, Any]:
        """Merge every tensor into `out_dir`; returns a summary (tensors, bytes, shards)."""
        out_tensors = self.out_tensors()
        writer = ShardedWriter(out_dir, out_tensors, self.max_shard_size)
        bar = tqdm(total=self.total_read_bytes(), unit="B", unit_scale=True, unit_divisor=1024,
                   desc=f"merge ({self.method.name})", disable=not self.progress, mininterval=1.0)
        try:
            with worker_pool(self.plan.threads) as pool, TensorReader() as reader, threadpool_limits(1):
                run = _Run(self, reader, writer, bar, pool)
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
    """The moving parts of one `StreamingMerge.run`: reader, writer, worker threads and their
    scratch, and per worker a staging row for results in the output dtype."""

    def __init__(self, job: StreamingMerge, reader: TensorReader, writer: ShardedWriter, bar: tqdm,
                 pool: ThreadPoolExecutor | None) -> None:
        self.job, self.method, self.plan = job, job.method, job.plan
        self.reader, self.writer, self.bar = reader, writer, bar
        block = min(self.plan.block, job.largest)
        self.workers = Workers(pool, self.plan.threads, job.rows, block)
        self.staging = [np.empty(job.out_size * block, dtype=np.uint8) for _ in range(self.plan.threads)]

    def copy_tensor(self, loc: TensorLoc) -> None:
        for first in range(0, loc.numel, self.plan.chunk):
            count = min(self.plan.chunk, loc.numel - first)
            window = self.reader.map(loc, first, count)
            try:
                self.writer.write(loc.name, first * loc.itemsize, window.data)
            finally:
                window.close()
            self.bar.update(count * loc.itemsize)

    def merge_tensor(self, locs: list[TensorLoc]) -> None:
        job, loc = self.job, locs[0]
        state = job.state(loc)
        block, chunk = self.plan.block, self.plan.chunk
        align = self.method.alignment(state)
        if align > 1:  # whole rows per block and per chunk
            if align > block:
                raise MergeError(f"{self.method.name} needs whole rows of {loc.name!r} ({align} elements) in one "
                                 f"block of at most {block}; raise merge.memory_budget")
            block -= block % align
            chunk -= chunk % block
        output = _OutputTensor(self.writer, loc.name, self.staging, self.method.name)
        with _MappedTensor(self.reader, locs, job.n, chunk, self.bar) as source:
            driver.merge_tensor(self.method, state, source, output, self.workers, block, job.statistics.get(loc.name))
        self.writer.count(loc.name, loc.numel * itemsize(output.dtype))


class _MappedTensor:
    """A driver `Source`: one tensor's windows of `chunk` elements, mapped from every input's file
    and unmapped after use, the next one announced to the kernel first. A tensor that fits one
    window is mapped once, on the first pass, and serves every pass until `close`."""

    def __init__(self, reader: TensorReader, locs: list[TensorLoc], n: int, chunk: int, bar: tqdm) -> None:
        self.reader, self.locs, self.n, self.chunk, self.bar = reader, locs, n, chunk, bar
        self.dtype, self.numel = locs[0].dtype, locs[0].numel
        self._held: list[Window] | None = None

    def _map(self, first: int, count: int) -> list[Window]:
        wins = [self.reader.map(loc, first, count) for loc in self.locs]
        self.bar.update(count * self.locs[0].itemsize * len(self.locs))
        return wins

    def windows(self) -> Iterator[driver.WindowRows]:
        if self.numel <= self.chunk:
            if self._held is None and self.numel:
                self._held = self._map(0, self.numel)
            if self._held is not None:
                yield 0, [w.data for w in self._held]
            return
        for first in range(0, self.numel, self.chunk):
            count = min(self.chunk, self.numel - first)
            nxt = first + count
            if nxt < self.numel:
                for loc in self.locs:
                    self.reader.prefetch(loc, nxt, min(count, self.numel - nxt))
            wins = self._map(first, count)
            try:
                yield first, [w.data for w in wins]
            finally:
                for w in wins:
                    w.close()

    def __enter__(self) -> "_MappedTensor":
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self._held or []:
            w.close()
        self._held = None


class _OutputTensor:
    """A driver `Output` into one tensor of the output shards: each worker's blocks are rounded
    into its own staging row and written in place (`ShardedWriter.pwrite`), after the checks."""

    def __init__(self, writer: ShardedWriter, name: str, staging: list[np.ndarray], method: str) -> None:
        self.writer, self.name, self.staging, self.method = writer, name, staging, method
        self.dtype = writer.dtype(name)
        self.size = itemsize(self.dtype)

    def target(self, worker: int, start: int, count: int) -> np.ndarray:
        return self.staging[worker][: count * self.size].view(STORAGE[self.dtype])

    def put(self, worker: int, start: int, merged: np.ndarray, stored: np.ndarray) -> None:
        if not math.isfinite(float(merged.sum())) and not bool(np.isfinite(merged).all()):
            bad = int(np.flatnonzero(~np.isfinite(merged))[0]) + start
            raise NonFiniteError(f"merged tensor {self.name!r} has NaN or Inf values (first at flat index "
                                 f"{bad}; method {self.method}); check the inputs and weights")
        if self.dtype == "F16" and not bool(np.isfinite(stored).all()):
            raise NonFiniteError(f"merged tensor {self.name!r} overflows float16; use bfloat16 or float32")
        self.writer.pwrite(self.name, start * self.size, stored)


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

