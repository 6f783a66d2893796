"""The I/O floor of a merge: the fastest plain way to read every input byte once and write an
output of the merged size, done the way `boom merge` does I/O (memory-mapped files, the same
number of worker threads, windows of the same size), with no maths. Run as a subprocess by
benchmarks/merge_bench.py, so that process start counts here as it does for the tools:

    python benchmarks/merge_floor.py --threads 2 --out /tmp/floor.bin --out-bytes 1590000000 IN.safetensors ...

Reading: each thread maps its share of the input bytes window by window and sums them as uint64
(every byte passes through a core once, as boom-ray's conversion to float32 makes it). Writing:
the output is created with ftruncate and each thread pwrites its share from a 1 MiB buffer, the
fastest way measured here (as boom-ray's writer does; stores through a shared mapping were about
10x slower on ext4: a journalled write fault per fresh page).
"""

from __future__ import annotations

import argparse
import mmap
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

WINDOW = 64 << 20
"""Bytes mapped at a time: boom-ray's windows at its default 512 MiB budget for five inputs are
of this order, and larger maps gain nothing once page faults are batched by the kernel."""
BUFFER = 1 << 20


def spans(sizes: list[tuple[str, int]], parts: int) -> list[list[tuple[str, int, int]]]:
    """The files' bytes as (path, start, length) pieces, cut into `parts` nearly equal shares."""
    total = sum(s for _, s in sizes)
    bounds = [total * k // parts for k in range(parts + 1)]
    shares: list[list[tuple[str, int, int]]] = [[] for _ in range(parts)]
    pos = 0
    for path, size in sizes:
        for k in range(parts):
            lo, hi = max(bounds[k], pos), min(bounds[k + 1], pos + size)
            if lo < hi:
                shares[k].append((path, lo - pos, hi - lo))
        pos += size
    return shares


def _windows(start: int, length: int):
    """(aligned offset, mapping length, data offset) for each window of a byte range."""
    end = start + length
    while start < end:
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        stop = min(end, aligned + WINDOW)
        yield aligned, stop - aligned, start - aligned
        start = stop


def read_share(share: list[tuple[str, int, int]]) -> int:
    acc = 0
    for path, start, length in share:
        fd = os.open(path, os.O_RDONLY)
        try:
            for aligned, size, skip in _windows(start, length):
                with mmap.mmap(fd, size, access=mmap.ACCESS_READ, offset=aligned) as m:
                    data = np.frombuffer(m, dtype=np.uint8, offset=skip)
                    body = data[: data.size - data.size % 8].view(np.uint64)
                    acc += int(body.sum(dtype=np.uint64)) + int(data[body.size * 8:].sum())
                    del data, body
        finally:
            os.close(fd)
    return acc


def write_share(fd: int, start: int, length: int) -> None:
    buf = memoryview(np.full(BUFFER, 0x3F, dtype=np.uint8))
    end = start + length
    while start < end:
        start += os.pwrite(fd, buf[:min(BUFFER, end - start)], start)


def floor(inputs: list[str], out: str, out_bytes: int, threads: int) -> float:
    t0 = time.perf_counter()
    shares = spans([(p, os.path.getsize(p)) for p in inputs], threads)
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, out_bytes)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(read_share, shares))
            cuts = [out_bytes * k // threads for k in range(threads + 1)]
            list(pool.map(lambda k: write_share(fd, cuts[k], cuts[k + 1] - cuts[k]), range(threads)))
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--out-bytes", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    print(f"{floor(args.inputs, args.out, args.out_bytes, args.threads):.3f}")


if __name__ == "__main__":
    main()
