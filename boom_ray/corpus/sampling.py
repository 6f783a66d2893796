"""Seeded, stratified sampling without replacement, identical on any cluster.

Every row gets a 64-bit key hashed from (seed, bag, task, line) - its identity, not its position
in a block - and a bag takes, in each task, the round(ratio * n) rows with the smallest keys.
So the selection does not depend on how many blocks, CPUs or nodes read the corpus, nor on the
order files are read in. With `nested`, all bags share one key per row, so each smaller bag is
the prefix of every larger one; otherwise each bag has its own salt and bags are independent.
"""

from __future__ import annotations

import hashlib

import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A strong 64-bit mixer (Steele et al.); uint64 arithmetic wraps modulo 2**64."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
    return x ^ (x >> np.uint64(31))


def _hash64(text: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little"))


def bag_salt(ratio: float, nested: bool) -> str:
    """Independent bags are salted by their ratio (not their position in the list), so adding a
    bag to the config never changes the others."""
    return "nested" if nested else f"ratio={ratio:.12g}"


def row_keys(seed: int, salt: str, task: str, lines: np.ndarray) -> np.ndarray:
    """Sampling key of each row of `task`, identified by its 1-based line (or Parquet row)."""
    with np.errstate(over="ignore"):
        base = _splitmix64(np.array([_hash64(f"{seed}|{salt}|{task}")], dtype=np.uint64))
        return _splitmix64(np.asarray(lines, dtype=np.uint64) ^ base)


def sample_size(ratio: float, n: int) -> int:
    """Rows a bag takes from a task of n rows: ratio * n rounded half up (1.0 takes all)."""
    return min(n, int(np.floor(ratio * n + 0.5)))


def select(keys: np.ndarray, lines: np.ndarray, ratio: float) -> np.ndarray:
    """Boolean mask of the rows a bag takes: the sample_size smallest keys (ties by line)."""
    k = sample_size(ratio, len(keys))
    mask = np.zeros(len(keys), dtype=bool)
    if k == len(keys):
        mask[:] = True
    elif k:
        order = np.lexsort((np.asarray(lines), keys))
        mask[order[:k]] = True
    return mask
