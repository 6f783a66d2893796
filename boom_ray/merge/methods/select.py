"""Streaming building blocks shared by the sparsifying methods: an exact k-th-largest select over
a tensor of any size (two histogram passes), and random numbers that depend only on where an
element is, not on how the tensor was cut into blocks."""

from __future__ import annotations

import hashlib

import numpy as np

BINS = 1 << 16


class RadixSelect:
    """The k-th largest of each of several rows of non-negative float32 keys, exactly, in two
    statistics passes: a histogram of the high 16 bits of the keys' bit patterns (non-negative
    floats sort like their bit patterns), then one of the low 16 bits inside the bin that holds
    the k-th largest. `ks[q]` is query q's k (1 <= k <= numel); `keys(xs)` in the caller gives a
    (len(ks), m) float32 array per block, one row per query (rows may repeat)."""

    def __init__(self, ks: list[int]) -> None:
        self.ks = list(ks)
        self.hi: np.ndarray | None = None
        self.need: np.ndarray | None = None
        self.values: list[float] = []

    def histogram(self, pass_index: int, keys: np.ndarray) -> np.ndarray:
        bits = keys.view(np.int32)
        q = len(self.ks)
        offsets = np.arange(q, dtype=np.int64).reshape(-1, 1) * BINS
        if pass_index == 0:
            idx = (bits >> 16).astype(np.int64) + offsets
        else:
            idx = ((bits & 0xFFFF).astype(np.int64) + offsets)[(bits >> 16) == self.hi.reshape(-1, 1)]
        return np.bincount(idx.reshape(-1), minlength=q * BINS).reshape(q, BINS)

    def finish(self, pass_index: int, counts: np.ndarray) -> None:
        at_least = counts[:, ::-1].cumsum(1)[:, ::-1]  # at_least[q, b]: keys of row q in bins >= b
        need = np.array(self.ks if pass_index == 0 else self.need, dtype=np.int64).reshape(-1, 1)
        top = (at_least >= need).sum(1) - 1  # the largest bin whose suffix count reaches need
        if pass_index == 0:
            padded = np.concatenate([at_least, np.zeros((len(top), 1), dtype=at_least.dtype)], 1)
            self.hi = top.astype(np.int32)
            self.need = (need - np.take_along_axis(padded, (top + 1).reshape(-1, 1), 1)).reshape(-1)
        else:
            bits = ((self.hi.astype(np.int64) << 16) | top).astype(np.int32)
            self.values = [float(v) for v in bits.view(np.float32)]


def stream_key(*parts: object) -> int:
    """A 64-bit key for `uniform` from anything printable (tensor name, model index, seed)."""
    return int.from_bytes(hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


_GOLDEN, _M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def uniform(key: int, start: int, count: int) -> np.ndarray:
    """float64 uniforms in [0, 1) for elements start .. start + count - 1 of the stream `key`:
    SplitMix64 of (key + index), so element i gets the same number however a tensor is blocked."""
    z = np.arange(start, start + count, dtype=np.uint64)
    z += np.uint64(key)
    z *= _GOLDEN
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
