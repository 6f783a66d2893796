"""Seeds and RNG states of a training rank.

Why: ``train.seed`` must make a run reproducible (two runs of one config gave OOD means 0.3932
and 0.3824 before this, as large as the effect the report is about), and a resumed run must
draw the same dropout masks (LoRA dropout too) as an uninterrupted one. So every generator in
use -- python's ``random``, numpy's global one, torch's CPU generator and every CUDA device's --
is seeded on every rank and saved in, and restored from, every checkpoint.

The batch plan and the sampled negatives do not use these generators: they are seeded by
(seed, micro step, rank) in :mod:`boom_ray.train.feed`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily where CUDA is not up yet)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s training loop: ranks must not share dropout masks, and the
    model itself is built under the plain seed so every rank starts from the same weights."""
    return seed + 1_000_003 * (rank + 1)


def rng_states() -> dict[str, Any]:
    """Every generator's state, for a checkpoint."""
    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                              "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Undo :func:`rng_states`; a file from before every state was saved holds a bare torch state."""
    if isinstance(states, torch.Tensor):
        torch.set_rng_state(states)
        return
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
