"""Seeds and RNG states of a training rank.

Why: ``train.seed`` must make a run reproducible (two runs of one config gave OOD means 0.3932
and 0.3824 before this, as large as the effect the report is about), and a resumed run must
draw the same dropout masks (LoRA dropout too) as an uninterrupted one. So every generator in
use -- python's ``random``, numpy's global one, torch's CPU generator and every CUDA device's --
is seeded on every rank and saved in, and restored from, every checkpoint.

Files without pickles (a checkpoint folder is in the shared work dir: a pickle there would run
the code of whoever can write it on every worker): python's and numpy's states as JSON
(``rng_rank<r>.json``), torch's CPU and CUDA states as uint8 tensors in safetensors
(``rng_rank<r>.safetensors``). An older checkpoint's ``rng_rank<r>.pt`` is read with torch's
``weights_only`` unpickler, which builds tensors, containers and (allow-listed here) plain numpy
arrays but no other object; anything else in it is refused, never executed.

The batch plan and the sampled negatives do not use these generators: they are seeded by
(seed, micro step, rank) in :mod:`boom_ray.train.feed`.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


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


def save_rng_states(folder: str, rank: int) -> None:
    """This rank's :func:`rng_states` into `folder` as JSON + safetensors (no pickle)."""
    states = rng_states()
    version, internal, gauss = states["python"]
    name, key, pos, has_gauss, cached = states["numpy"]
    doc = {"python": [version, list(internal), gauss],
           "numpy": [name, [int(k) for k in key], int(pos), int(has_gauss), float(cached)]}
    tensors = {"torch": states["torch"]}
    tensors.update({f"cuda.{i}": t for i, t in enumerate(states.get("cuda", []))})
    save_file({k: t.contiguous() for k, t in tensors.items()}, _path(folder, rank, "safetensors"))
    with open(_path(folder, rank, "json"), "w") as f:
        json.dump(doc, f)


def load_rng_states(folder: str, rank: int) -> bool:
    """Restore this rank's states from `folder`; False if it holds none for this rank (a rank
    that did not exist when the checkpoint was written). Raises on an old pickle that holds
    anything but plain data."""
    json_path, tensors_path = _path(folder, rank, "json"), _path(folder, rank, "safetensors")
    if os.path.exists(json_path) and os.path.exists(tensors_path):
        with open(json_path) as f:
            doc = json.load(f)
        tensors = load_file(tensors_path)
        version, internal, gauss = doc["python"]
        name, key, pos, has_gauss, cached = doc["numpy"]
        cuda = [tensors[f"cuda.{i}"] for i in range(sum(k.startswith("cuda.") for k in tensors))]
        restore_rng_states({"python": (version, tuple(internal), gauss),
                            "numpy": (name, np.array(key, dtype=np.uint32), pos, has_gauss, cached),
                            "torch": tensors["torch"], **({"cuda": cuda} if cuda else {})})
        return True
    legacy = _path(folder, rank, "pt")
    if not os.path.exists(legacy):
        return False
    restore_rng_states(_load_legacy(legacy))
    return True


def _path(folder: str, rank: int, ext: str) -> str:
    return os.path.join(folder, f"rng_rank{rank}.{ext}")


def _load_legacy(path: str) -> Any:
    """An old ``rng_rank<r>.pt`` (a dict of states or a bare torch state), unpickled with
    ``weights_only=True``: numpy's state holds a uint32 array, so numpy's array reconstruction
    (under numpy 2's and numpy 1's module names) is allowed for this one load; nothing else is."""
    _reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
    allowed = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), _reconstruct,
               (_reconstruct, "numpy.core.multiarray._reconstruct")]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise RuntimeError(f"{path} holds more than RNG states and was not loaded (it would run code): "
                           f"resume from a newer checkpoint or start fresh") from e


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
