"""Fused kernels for the merges that are a weighted sum of bfloat16 models (numba, compiled once).

Multi-SLERP and linear merges of bfloat16 checkpoints (the reference job's Qwen3 bags) spend
their time in numpy's separate passes over each block: widen every row to float32, take the dot
products or the weighted sum, round back to bfloat16. These kernels do each in one pass over
the raw rows, a few hundred elements at a time in L1 cache, at about the speed the rows can be
read from memory (benchmarks/RESULTS.md, Merge): the weighted sum 2.5x and the Gram matrix 2.8x
faster per block.

They compute what the numpy path computes, in another order: the weighted sum adds
c_0 x_0 + c_1 x_1 + ... per element in float32 (the numpy path takes BLAS's dot), the Gram matrix
sums float32 products over 256 elements, then those sums in float64. Both paths are
deterministic and independent of the thread count; which one a tensor takes depends only on its
method, base and stored dtype (`driver.fused_combine`, `driver.fused_gram`), so the streaming
merge and the in-memory sweep merge of the same inputs agree bit for bit.

Compiled on first use (numba caches the machine code beside this file, so later processes load
it in a fraction of a second); importing this module imports numba, so callers import it only
when a tensor takes the fused path.
"""

from __future__ import annotations

import numpy as np
from numba import literal_unroll, njit

CHUNK = 256
"""Elements per inner step: the widened rows and the accumulators stay in L1 cache."""


@njit(nogil=True, cache=True)
def _round_bf16(src, dst):
    """float32 bits -> bfloat16 bits, rounded to nearest even (as io.from_float32 and torch)."""
    for i in range(src.size):
        v = src[i]
        dst[i] = np.uint16((v + np.uint32(0x7FFF) + ((v >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))


@njit(nogil=True, cache=True)
def weighted_sum_bf16(raws, coef, res, out, round_out):
    """res[i] = sum_j coef[j] * x_j[i] (float32), x_j the bfloat16 rows in `raws` (a tuple of
    uint16 arrays of res's length); with `round_out`, also the result as bfloat16 bits into
    `out` (uint16)."""
    bits = np.empty(CHUNK, np.uint32)
    wide = bits.view(np.float32)
    res_bits = res.view(np.uint32)
    m = res.size
    for s in range(0, m, CHUNK):
        n = min(CHUNK, m - s)
        acc = res[s:s + n]
        j = 0
        for raw in literal_unroll(raws):
            r = raw[s:s + n]
            for i in range(n):
                bits[i] = np.uint32(r[i]) << np.uint32(16)
            c = coef[j]
            if j == 0:
                for i in range(n):
                    acc[i] = c * wide[i]
            else:
                for i in range(n):
                    acc[i] += c * wide[i]
            j += 1
        if round_out:
            _round_bf16(res_bits[s:s + n], out[s:s + n])


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def gram_bf16(raws):
    """The (k, k) float64 Gram matrix of the k bfloat16 rows in `raws` (a tuple of uint16 arrays
    of one length): float32 dot products over each chunk (reassociated, so vectorised), summed in
    float64."""
    k = len(raws)
    m = raws[0].size
    bits = np.zeros((k, CHUNK), np.uint32)
    wide = bits.view(np.float32)
    g = np.zeros((k, k))
    for s in range(0, m, CHUNK):
        n = min(CHUNK, m - s)
        if n < CHUNK:
            bits[:] = 0
        j = 0
        for raw in literal_unroll(raws):
            r = raw[s:s + n]
            for i in range(n):
                bits[j, i] = np.uint32(r[i]) << np.uint32(16)
            j += 1
        for a in range(k):
            for b in range(a, k):
                acc = np.float32(0.0)
                for i in range(CHUNK):
                    acc += wide[a, i] * wide[b, i]
                g[a, b] += acc
    for a in range(k):
        for b in range(a):
            g[a, b] = g[b, a]
    return g
