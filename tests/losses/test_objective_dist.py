"""The training objective on 2 gloo ranks with cross-device negatives equals the single-process
objective of the whole global batch (losses and rank-averaged gradients), for InfoNCE, both
distillation losses and Matryoshka, with false negatives that sit on the other rank masked."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from boom_ray.config import TrainConfig
from boom_ray.losses.info_nce import info_nce_loss
from boom_ray.losses.objective import training_loss

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_module():
    spec = importlib.util.spec_from_file_location("dist_objective_worker", HERE / "dist_objective_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_ranks_equal_the_single_process_objective(tmp_path):
    proc = subprocess.run([sys.executable, str(HERE / "dist_objective_worker.py"), str(tmp_path), str(_free_port())],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w = _worker_module()
    data = w.global_batch()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(w.WORLD)]
    everything = w.micro(data, slice(None), slice(None))
    for name, settings in w.OBJECTIVES.items():
        weight = data["weight"].clone().requires_grad_(True)
        ref = training_loss(w.embed(weight, data["xq"]), w.embed(weight, data["xp"]), everything,
                            TrainConfig(temperature=w.TEMPERATURE, **settings))
        ref.backward()
        got = torch.stack([r[name]["loss"] for r in ranks]).mean()
        assert got.item() == pytest.approx(ref.item(), rel=1e-12), name
        torch.testing.assert_close(torch.stack([r[name]["weight_grad"] for r in ranks]).mean(0), weight.grad,
                                   rtol=1e-9, atol=1e-12)


def test_the_planted_cross_device_copies_are_what_gets_masked():
    """Masking leaves out exactly the planted candidates, all across the rank boundary: for row 0
    the copy of its positive in row 3's group (column 7), and for rows 1 and 4 each other's copy
    of their shared positive; row 3 keeps its own hard negative (own groups are never masked)."""
    w = _worker_module()
    data = w.global_batch()
    q, p = w.embed(data["weight"], data["xq"]), w.embed(data["weight"], data["xp"])
    masked = info_nce_loss(q, p, w.TEMPERATURE, data["in_batch"], passage_ids=data["ids"])
    plain = info_nce_loss(q, p, w.TEMPERATURE, data["in_batch"])
    assert masked.item() < plain.item()
    logits = q @ p.T / w.TEMPERATURE
    logits[0, 3 * w.G + 1] = logits[1, 4 * w.G] = logits[4, 1 * w.G] = float("-inf")
    allowed = data["in_batch"].unsqueeze(1) | (torch.arange(p.shape[0]) // w.G == torch.arange(q.shape[0]).unsqueeze(1))
    logits = logits.masked_fill(~allowed, float("-inf"))
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(q.shape[0]) * w.G)
    assert masked.item() == pytest.approx(expected.item(), rel=1e-12)
