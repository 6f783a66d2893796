"""The streaming merge: checks the inputs, then merges one tensor at a time in memory-bounded
blocks and writes each result straight into its place in the output shards.

Memory plan: the budget pays for one raw buffer per input (the slice of a tensor being merged,
in its stored dtype), two output buffers, and float32 scratch for one cache-sized block that the
method computes on. A tensor that fits the raw buffers is read once and all
of a method's passes run over it in memory; a bigger one is cut into chunks and re-read once per
statistics pass (two reads for multislerp and slerp, three for ties with density < 1, one for
linear and task arithmetic). Two output buffers alternate, so a background thread writes one chunk
while the next is computed. Nothing is memory-mapped, so RSS is the interpreter plus these
buffers, whatever the model size.
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from boom_ray.errors import BoomError
from boom_ray.merge.io import (DTYPES, FLOAT_DTYPES, OUTPUT_DTYPES, OutTensor, ShardedWriter, TensorLoc,
                               TensorReader, index_model, itemsize)
from boom_ray.merge.methods import Method, new_state


class MergeError(BoomError):
    """A merge that cannot run or produced an unusable result; the message names tensor and model."""


class InputMismatchError(MergeError):
    """The input models do not have the same tensors, shapes and dtypes."""


class NonFiniteError(MergeError):
    """A merged tensor holds NaN or Inf."""


MIN_BLOCK = 1 << 8
MAX_BLOCK = 1 << 17
"""Elements per row of a float32 block: a few MB for all rows, so the conversions, the
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


def plan_memory(budget: int, rows: int, in_size: int, out_size: int, scratch: int) -> tuple[int, int]:
    """(chunk, block) element counts: `rows` raw input buffers of `in_size` bytes per element plus an
    output buffer of `out_size` hold one chunk; float32 scratch (`scratch` copies of the rows plus
    the result) holds one block. A sixteenth of the budget is left for everything else a merge
    allocates (statistics, views, the allocator's own slack)."""
    usable = budget * 15 // 16
    per_block_elem = 4 * (rows * scratch + 3)
    block = max(MIN_BLOCK, min(MAX_BLOCK, usable // 8 // per_block_elem))
    chunk = (usable - block * per_block_elem) // (rows * in_size + out_size)
    if chunk < block:
        need = block * (per_block_elem + rows * in_size + out_size) * 16 // 15 + 1
        raise MergeError(f"memory_budget of {budget} bytes is too small to merge {rows} models; "
                         f"give it at least {need} bytes")
    return chunk, block


class _Buffers:
    """Raw input buffers, one output buffer and float32 block scratch, allocated once and reused."""

    def __init__(self, rows: int, chunk: int, block: int, in_size: int, out_size: int, largest: int) -> None:
        n = min(chunk, largest)
        self.raw = [torch.empty(n * in_size, dtype=torch.uint8) for _ in range(rows)]
        self.outs = [torch.empty(n * out_size, dtype=torch.uint8) for _ in range(2)]
        self.xs = torch.empty(rows * min(block, largest), dtype=torch.float32)
        self.pending: list[Future | None] = [None, None]
        self.turn = 0

    def take_out(self) -> tuple[int, torch.Tensor]:
        """The output buffer whose previous write has finished (two alternate, so computing one
        chunk overlaps writing the last)."""
        slot, self.turn = self.turn, self.turn ^ 1
        self.wait(slot)
        return slot, self.outs[slot]

    def wait(self, slot: int | None = None) -> None:
        for k in ([slot] if slot is not None else [0, 1]):
            if self.pending[k] is not None:
                future, self.pending[k] = self.pending[k], None
                future.result()


class StreamingMerge:
    """Runs one merge into an already created (empty) output directory."""

    def __init__(self, inputs: LocalInputs, memory_budget: int, max_shard_size: int, progress: bool = True) -> None:
        self.inputs = inputs
        self.method = inputs.method
        self.budget = memory_budget
        self.max_shard_size = max_shard_size
        self.progress = progress
        labels = inputs.paths + ([inputs.base] if inputs.base else [])
        self.labels = labels
        self.indexes = [index_model(p) for p in labels]
        check_inputs(labels, self.indexes)
        self.ref = self.indexes[0]
        self.rows = len(labels)
        self.n = len(inputs.paths)
        floats = [loc for loc in self.ref.values() if loc.dtype in FLOAT_DTYPES] or list(self.ref.values())
        self.in_size = max(loc.itemsize for loc in self.ref.values())
        self.out_size = max([itemsize(self.out_dtype(loc)) for loc in floats] + [self.in_size])
        self.chunk, self.block = plan_memory(memory_budget, self.rows, self.in_size, 2 * self.out_size,
                                             self.method.scratch)
        self.largest = max(loc.numel for loc in self.ref.values())

    def out_dtype(self, loc: TensorLoc) -> str:
        return self.inputs.dtype if self.inputs.dtype and loc.dtype in FLOAT_DTYPES else loc.dtype

    def _state(self, loc: TensorLoc):
        weights = [mp["weight"] for mp in self.inputs.model_params]
        return new_state(self.method, weights, self.inputs.params, self.inputs.model_params, loc.numel)

    def total_read_bytes(self) -> int:
        total = 0
        for loc in self.ref.values():
            if loc.dtype not in FLOAT_DTYPES:
                total += loc.nbytes
                continue
            passes = self._state(loc).passes
            reads = 1 if loc.numel <= self.chunk else 1 + passes
            total += reads * self.rows * loc.nbytes
        return total

    def run(self, out_dir: str) -> dict[str, Any]:
        """Merge every tensor into `out_dir`; returns a summary (tensors, bytes, shards)."""
        out_tensors = [OutTensor(name, self.out_dtype(loc), loc.shape) for name, loc in self.ref.items()]
        writer = ShardedWriter(out_dir, out_tensors, self.max_shard_size)
        bufs = _Buffers(self.rows, self.chunk, self.block, self.in_size, self.out_size, self.largest)
        bar = tqdm(total=self.total_read_bytes(), unit="B", unit_scale=True, unit_divisor=1024,
                   desc=f"merge ({self.method.name})", disable=not self.progress, mininterval=1.0)
        pool = ThreadPoolExecutor(1, thread_name_prefix="merge-writer")
        try:
            with TensorReader() as reader, _one_thread():
                names = list(self.ref)
                for k, (name, loc) in enumerate(self.ref.items()):
                    locs = [index[name] for index in self.indexes]
                    if k + 1 < len(names):  # read the next tensor ahead while this one merges
                        for index in self.indexes:
                            nxt = index[names[k + 1]]
                            reader.prefetch(nxt, 0, min(nxt.numel, self.chunk))
                    if loc.dtype in FLOAT_DTYPES:
                        self._merge_tensor(reader, writer, bufs, locs, bar, pool)
                    else:
                        self._copy_tensor(reader, writer, bufs, loc, bar)
                bufs.wait()
            writer.close()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            writer.abort()
            raise
        finally:
            pool.shutdown(wait=True)
            bar.close()
        return {"tensors": len(out_tensors), "bytes": writer.total_size, "shards": writer.files}

    def _copy_tensor(self, reader, writer, bufs, loc, bar) -> None:
        for first in range(0, loc.numel, self.chunk):
            count = min(self.chunk, loc.numel - first)
            data = reader.read(loc, first, count, bufs.raw[0])
            writer.write(loc.name, first * loc.itemsize, data)
            bar.update(count * loc.itemsize)

    def _load(self, reader, bufs, locs, first, count, bar) -> list[torch.Tensor]:
        nxt = first + count
        if nxt < locs[0].numel:  # a chunked tensor: read its next chunk ahead
            for loc in locs:
                reader.prefetch(loc, nxt, min(count, loc.numel - nxt))
        raws = [reader.read(loc, first, count, buf) for loc, buf in zip(locs, bufs.raw)]
        bar.update(count * locs[0].itemsize * len(locs))
        return raws

    def _blocks(self, bufs, raws, count):
        """(start, xs, base) per block of a loaded chunk: float32 copies of the inputs."""
        n = self.n
        for a in range(0, count, self.block):
            m = min(self.block, count - a)
            rows = bufs.xs[: self.rows * m].view(self.rows, m)
            for i, raw in enumerate(raws):
                rows[i].copy_(raw[a:a + m])
            yield a, rows[:n], (rows[n] if self.rows > n else None)

    def _merge_tensor(self, reader, writer, bufs, locs, bar, pool) -> None:
        loc = locs[0]
        state = self._state(loc)
        starts = list(range(0, loc.numel, self.chunk))
        whole = len(starts) == 1
        raws = self._load(reader, bufs, locs, 0, loc.numel, bar) if whole else None
        for p in range(state.passes):
            for first in starts:
                count = min(self.chunk, loc.numel - first)
                chunk_raws = raws if whole else self._load(reader, bufs, locs, first, count, bar)
                for _, xs, base in self._blocks(bufs, chunk_raws, count):
                    self.method.accumulate(state, p, xs, base)
            self.method.finish(state, p)
        out_dtype = DTYPES[self.out_dtype(loc)]
        out_size = itemsize(self.out_dtype(loc))
        for first in starts:
            count = min(self.chunk, loc.numel - first)
            chunk_raws = raws if whole else self._load(reader, bufs, locs, first, count, bar)
            slot, out_buf = bufs.take_out()
            out = out_buf[: count * out_size].view(out_dtype)
            for a, xs, base in self._blocks(bufs, chunk_raws, count):
                merged = self.method.combine(state, xs, base)
                if not math.isfinite(float(merged.sum())) and not bool(torch.isfinite(merged).all()):
                    bad = int((~torch.isfinite(merged)).nonzero()[0]) + first + a
                    raise NonFiniteError(f"merged tensor {loc.name!r} has NaN or Inf values (first at flat index "
                                         f"{bad}; method {self.method.name}); check the inputs and weights")
                part = out[a:a + merged.numel()]
                part.copy_(merged)
                if out_dtype == torch.float16 and not bool(torch.isfinite(part).all()):
                    raise NonFiniteError(f"merged tensor {loc.name!r} overflows float16; use bfloat16 or float32")
            bufs.pending[slot] = pool.submit(writer.write, loc.name, first * out_size, out)


@contextlib.contextmanager
def _one_thread():
    """Blocks are cache-sized and the work is memory-bound: one thread is as fast as several on an
    idle machine and far faster on a busy one, where OpenMP threads wait for each other on
    every small op."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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

