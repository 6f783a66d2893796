"""Metric reductions on 2 gloo ranks (Ray Train workers): the reduced tensor lives on the
training device, and no other code under boom_ray/train reduces anything by itself.

Why this matters although gloo takes any device: with use_gpu the process group is NCCL, which
reduces CUDA tensors only, so a CPU tensor there fails every multi-GPU run at its first logging
step; CPU tests can only catch it by checking the device.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from boom_ray.train import collective


def _worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from boom_ray.train.collective import all_reduce_sum

    seen = []
    real = dist.all_reduce

    def recording(tensor, *args, **kwargs):  # records, then does the real collective
        seen.append(str(tensor.device))
        return real(tensor, *args, **kwargs)

    dist.all_reduce = recording
    try:
        rank = ray.train.get_context().get_world_rank()
        total = all_reduce_sum([1.5 + rank, 10 * rank, 3])
    finally:
        dist.all_reduce = real
    out = {"rank": rank, "backend": dist.get_backend(), "device": str(ray.train.torch.get_device()),
           "reduced_on": seen, "total": total}
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(out))


@pytest.mark.slow
def test_metric_all_reduce_on_two_gloo_ranks_uses_the_training_device(ray_session, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    TorchTrainer(_worker, train_loop_config={"out": str(tmp_path)},
                 scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                 run_config=RunConfig(name="collective", storage_path=str(tmp_path / "runs"))).fit()
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["backend"] == "gloo"
        assert r["reduced_on"] == [r["device"]]  # exactly one collective, on get_device()
        assert r["total"] == [1.5 + 2.5, 10.0, 6.0]


def test_no_other_training_code_reduces_by_itself():
    """Every metric reduction goes through collective.all_reduce_sum (the loss's all_gather of
    embeddings works on the model's output, already on the device)."""
    train_dir = Path(collective.__file__).parent
    offenders = [p.name for p in train_dir.glob("*.py")
                 if p.name != "collective.py" and re.search(r"\ball_reduce\(", p.read_text())]
    assert offenders == []


def test_without_a_process_group_it_is_the_identity():
    assert collective.all_reduce_sum([1.0, 2.0], device="cpu") == [1.0, 2.0]
