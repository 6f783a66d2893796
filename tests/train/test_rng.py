"""RNG states in a checkpoint folder: a round trip brings every generator back, the files hold no
pickle, an old pickled file of plain states still resumes and one holding an object is refused
without running it (a checkpoint folder lives in the shared work dir)."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from boom_ray.train.rng import load_rng_states, rng_states, save_rng_states, seed_everything


def _draws() -> tuple:
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), torch.randn(2).tolist()


def test_round_trip_restores_every_generator_from_files_without_pickles(tmp_path):
    seed_everything(7)
    np.random.randn()  # leave a cached gaussian in numpy's state
    save_rng_states(str(tmp_path), 1)
    expected = _draws()
    seed_everything(99)
    assert _draws() != expected
    assert load_rng_states(str(tmp_path), 1)
    assert _draws() == expected
    assert sorted(os.listdir(tmp_path)) == ["rng_rank1.json", "rng_rank1.safetensors"]
    with open(tmp_path / "rng_rank1.json") as f:
        assert set(json.load(f)) == {"python", "numpy"}
    assert load_file(str(tmp_path / "rng_rank1.safetensors"))["torch"].dtype == torch.uint8


def test_a_rank_without_states_in_the_folder_restores_nothing(tmp_path):
    save_rng_states(str(tmp_path), 0)
    assert not load_rng_states(str(tmp_path), 1)


def test_an_old_pickled_file_of_plain_states_still_resumes(tmp_path):
    seed_everything(3)
    torch.save(rng_states(), tmp_path / "rng_rank0.pt")
    expected = _draws()
    seed_everything(4)
    assert load_rng_states(str(tmp_path), 0)
    assert _draws() == expected


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_an_old_pickled_file_holding_an_object_is_refused_without_running_it(tmp_path):
    _Payload.marker = str(tmp_path / "ran")
    states = rng_states()
    states["python"] = _Payload()
    torch.save(states, tmp_path / "rng_rank0.pt")
    with pytest.raises(RuntimeError, match="rng_rank0.pt.*newer checkpoint or start fresh"):
        load_rng_states(str(tmp_path), 0)
    assert not os.path.exists(_Payload.marker)
