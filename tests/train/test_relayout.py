"""A bag interrupted on 1 worker and rerun on 2 (CPU, gloo): the run identity changes with the
layout, and the new run either resumes through a DeepSpeed universal checkpoint (ZeRO-3 both
times) or starts fresh with a one-line warning (1 worker runs ZeRO-2 as ZeRO-0, which has no
conversion). Neither case retries."""

from __future__ import annotations

import os

import pytest

from boom_ray.config import BoomConfig
from boom_ray.train.export import read_export_manifest
from boom_ray.train.launch import prepare_job, train_bags
from tests.train.bagtools import learnable_rows, run_config, write_bag
from tests.train.runtools import train_and_kill_after_first_checkpoint

pytestmark = pytest.mark.slow


def _cfg(work, model, **train):
    return BoomConfig.model_validate(run_config(work, model, ["bag40"], max_steps=16, checkpoint_every=4,
                                               log_every=4, max_failures=0, **train))


def _interrupt_on_one_worker(work, model, zero_stage):
    write_bag(work, "bag40", {"words": learnable_rows(64, 11)})
    cfg = _cfg(work, model, zero_stage=zero_stage, num_workers=1)
    [res], killed = train_and_kill_after_first_checkpoint(train_bags, work, cfg)
    assert killed is not None and res.status == "failed", res
    return cfg


def test_run_identity_includes_world_size_and_effective_zero_stage(tiny_qwen3_path, tmp_path):
    write_bag(tmp_path, "bag40", {"words": learnable_rows(16, 1)})
    jobs = {(w, z): prepare_job(_cfg(tmp_path, tiny_qwen3_path, num_workers=w, zero_stage=z), "bag40")
            for w, z in [(1, 2), (2, 2), (1, 3), (2, 3), (1, 0)]}
    assert len({j["request_hash"] for j in jobs.values()}) == 3  # zero_stage 2, 3, 0 are different requests
    assert jobs[(1, 2)]["layout"] == {"world_size": 1, "zero_stage": 0}  # one worker: ZeRO-2 runs as 0
    assert jobs[(2, 2)]["layout"] == {"world_size": 2, "zero_stage": 2}
    assert len({j["run_name"] for j in jobs.values()}) == 5


def test_two_workers_resume_a_one_worker_zero3_run_through_a_universal_checkpoint(ray_session, tiny_qwen3_path,
                                                                                 tmp_path, capsys):
    _interrupt_on_one_worker(tmp_path, tiny_qwen3_path, zero_stage=3)
    capsys.readouterr()
    [res] = train_bags(_cfg(tmp_path, tiny_qwen3_path, zero_stage=3, num_workers=2))
    out = capsys.readouterr().out
    assert res.status == "trained", res.error
    assert "through a DeepSpeed universal checkpoint" in out, out
    m = read_export_manifest(str(tmp_path), "bag40")
    assert (m["world_size"], m["zero_stage"], m["steps"], m["restarts"]) == (2, 3, 16, 1)
    [resumed] = m["resumed_from"]
    assert resumed >= 4 and resumed % 4 == 0
    assert [s for s, _ in m["loss_history"]] == list(range(4, 20, 4))  # the old run's history carried on
    assert os.listdir(tmp_path / "train_runs") == []  # both runs' folders removed after the export


def test_a_zero0_run_on_one_worker_is_not_resumed_on_two_and_says_why(ray_session, tiny_qwen3_path, tmp_path,
                                                                       capsys):
    _interrupt_on_one_worker(tmp_path, tiny_qwen3_path, zero_stage=2)
    capsys.readouterr()
    [res] = train_bags(_cfg(tmp_path, tiny_qwen3_path, zero_stage=2, num_workers=2))
    err = capsys.readouterr().err
    assert res.status == "trained", res.error
    warnings = [line for line in err.splitlines() if "WARNING: not resuming" in line]
    assert len(warnings) == 1 and "ZeRO-0 checkpoint has no conversion to ZeRO-2" in warnings[0] \
        and "starting fresh" in warnings[0], err
    m = read_export_manifest(str(tmp_path), "bag40")
    assert (m["world_size"], m["zero_stage"], m["steps"], m["restarts"], m["resumed_from"]) == (2, 2, 16, 0, [])
    assert os.listdir(tmp_path / "train_runs") == []
