"""Pieces every demo-data builder shares: seeded sampling that does not depend on the process,
hash splits, and the built-suite record that `output.write_build` writes."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Iterable


def rng_for(seed: int, *parts: str) -> random.Random:
    """A generator that depends only on the seed and a name (string seeds hash with SHA-512,
    so this is the same in every process, whatever PYTHONHASHSEED)."""
    return random.Random(":".join([str(seed), *parts]))


def unit_hash(seed: int, key: str) -> float:
    """A number in [0, 1) from (seed, key) alone: splits that ignore limits and read order."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "big") / 2**64


def sample(keys: Iterable[str], n: int | None, rng: random.Random) -> list[str]:
    """`n` keys (all when None) in a seeded random order."""
    keys = sorted(keys)
    if n is None or n >= len(keys):
        rng.shuffle(keys)
        return keys
    return rng.sample(keys, n)


@dataclass(frozen=True)
class Suite:
    """A built suite: its files (name -> list of JSON rows, or the qrels text) and suite.json."""

    name: str
    type: str
    instruction: str
    domain: str
    files: dict
    counts: dict
    describe: str


def suite_json(suite: Suite) -> dict:
    return {"type": suite.type, "instruction": suite.instruction, "domain": suite.domain}
