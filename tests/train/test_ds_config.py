"""The generated DeepSpeed config, the learning-rate schedule and the export request (pure)."""

from __future__ import annotations

import json

import pytest

from boom_ray.config import BoomConfig, TrainConfig
from boom_ray.train.ds_config import (DeepSpeedConfigError, deepspeed_config, effective_zero_stage, load_user_config,
                                      lr_factor, precision_of, resolve_precision, warmup_steps)
from boom_ray.train.export import request_hash, train_request
from boom_ray.train.launch import concurrent_bags, worker_env


def test_precision_auto_is_bf16_on_gpu_and_fp32_on_cpu():
    assert resolve_precision("auto", on_gpu=True) == "bf16"
    assert resolve_precision("auto", on_gpu=False) == "fp32"
    assert resolve_precision("bf16", on_gpu=False) == "bf16"
    with pytest.raises(DeepSpeedConfigError, match="fp16 needs a GPU"):
        resolve_precision("fp16", on_gpu=False)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_generated_config_carries_stage_batches_and_precision(stage):
    train = TrainConfig(zero_stage=stage, global_batch_size=64, gradient_accumulation_steps=4)
    cfg = deepspeed_config(train, world_size=4, micro_batch_per_rank=16, on_gpu=True)
    assert cfg["zero_optimization"]["stage"] == stage
    assert cfg["train_batch_size"] == 16 * 4 * 4
    assert cfg["gradient_accumulation_steps"] == 4
    assert precision_of(cfg) == "bf16"
    assert ("stage3_gather_16bit_weights_on_model_save" in cfg["zero_optimization"]) == (stage == 3)
    assert precision_of(deepspeed_config(train, world_size=1, micro_batch_per_rank=64, on_gpu=False)) == "fp32"


def test_one_rank_skips_zero_1_and_2_which_have_nothing_to_partition():
    for stage, expected in ((0, 0), (1, 0), (2, 0), (3, 3)):
        cfg = deepspeed_config(TrainConfig(zero_stage=stage), world_size=1, micro_batch_per_rank=8, on_gpu=False)
        assert cfg["zero_optimization"]["stage"] == expected
    assert deepspeed_config(TrainConfig(zero_stage=2), world_size=2, micro_batch_per_rank=8,
                            on_gpu=False)["zero_optimization"]["stage"] == 2


def test_mixed_precision_sums_accumulated_and_gradcache_gradients_in_fp32():
    """Every accumulation micro step and every GradCache mini-batch adds into DeepSpeed's gradient
    buffer, in the model dtype unless data_types.grad_accum_dtype says fp32 (bf16 keeps 8 bits)."""
    def ds(world=4, **train):
        return deepspeed_config(TrainConfig(**train), world_size=world, micro_batch_per_rank=8, on_gpu=True)

    fp32 = {"grad_accum_dtype": "fp32"}
    for precision in ("bf16", "fp16"):
        assert ds(precision=precision, gradient_accumulation_steps=2)["data_types"] == fp32
        assert ds(precision=precision, mini_batch_size=2)["data_types"] == fp32
        assert "data_types" not in ds(precision=precision)  # one backward per step: nothing to sum
    assert "data_types" not in ds(precision="fp32", gradient_accumulation_steps=2, mini_batch_size=2)
    assert ds(gradient_accumulation_steps=2)["data_types"] == fp32  # auto on GPU: bf16
    assert "data_types" not in deepspeed_config(TrainConfig(gradient_accumulation_steps=2), world_size=1,
                                                micro_batch_per_rank=8, on_gpu=False)  # auto on CPU: fp32


def test_fp32_accumulation_takes_zero_1_where_it_would_run_zero_0():
    """DeepSpeed 0.19 refuses grad_accum_dtype at ZeRO 0 (tests/train/test_grad_cache.py sees it),
    so one rank (where ZeRO 1/2 otherwise run as 0) and an explicit ZeRO 0 take ZeRO 1."""
    assert [effective_zero_stage(s, 1, fp32_accum=True) for s in (0, 1, 2, 3)] == [1, 1, 1, 3]
    assert [effective_zero_stage(s, 4, fp32_accum=True) for s in (0, 1, 2, 3)] == [1, 1, 2, 3]
    assert [effective_zero_stage(s, 1) for s in (0, 1, 2, 3)] == [0, 0, 0, 3]  # unchanged without it
    for world in (1, 4):
        cfg = deepspeed_config(TrainConfig(zero_stage=0, precision="bf16", mini_batch_size=1), world_size=world,
                               micro_batch_per_rank=8, on_gpu=True)
        assert cfg["zero_optimization"]["stage"] == 1 and cfg["data_types"] == {"grad_accum_dtype": "fp32"}


def test_user_json_keeps_its_own_data_types_and_auto_takes_the_rule(tmp_path):
    train = TrainConfig(precision="bf16", gradient_accumulation_steps=4)
    auto = deepspeed_config(train, world_size=2, micro_batch_per_rank=8, on_gpu=True,
                            user={"zero_optimization": {"stage": 2}, "data_types": {"grad_accum_dtype": "auto"}})
    assert auto["data_types"] == {"grad_accum_dtype": "fp32"}
    own = deepspeed_config(train, world_size=2, micro_batch_per_rank=8, on_gpu=True,
                           user={"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}})
    assert "data_types" not in own  # replaced, not merged: the user's file decides


def test_user_json_replaces_generated_config_and_auto_takes_generated_values(tmp_path):
    user_file = tmp_path / "ds.json"
    user_file.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 2,
                                     "zero_optimization": {"stage": 3, "reduce_bucket_size": 1000},
                                     "bf16": {"enabled": "auto"}}))
    train = TrainConfig(zero_stage=1, gradient_accumulation_steps=1)
    cfg = deepspeed_config(train, world_size=2, micro_batch_per_rank=8, on_gpu=True,
                           user=load_user_config(str(user_file)))
    assert cfg["zero_optimization"] == {"stage": 3, "reduce_bucket_size": 1000}
    assert cfg["train_micro_batch_size_per_gpu"] == 8
    assert cfg["gradient_accumulation_steps"] == 2
    assert cfg["train_batch_size"] == 8 * 2 * 2
    assert cfg["bf16"] == {"enabled": True}
    assert "gradient_clipping" not in cfg  # replaced, not merged


def test_bad_user_json_names_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{nope")
    with pytest.raises(DeepSpeedConfigError, match="broken.json"):
        load_user_config(str(bad))
    with pytest.raises(DeepSpeedConfigError, match="missing.json"):
        load_user_config(str(tmp_path / "missing.json"))


def test_schedule_warms_up_linearly_then_decays_to_zero():
    total, warm = 100, 10
    f = [lr_factor(s, total, warm, "linear") for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))
    assert f[-1] == pytest.approx(1 / 90, abs=1e-9)
    c = [lr_factor(s, total, warm, "cosine") for s in range(total)]
    assert c[10] == pytest.approx(1.0) and c[55] == pytest.approx(0.5, abs=0.02)
    assert lr_factor(100, total, warm, "cosine") == pytest.approx(0.0)
    assert warmup_steps(TrainConfig(warmup_ratio=0.1), 95) == 10
    assert lr_factor(0, 10, 0) == 1.0


def _cfg(**train):
    return BoomConfig.model_validate({"workdir": "/tmp/w", "corpus": {"path": "/tmp/c"}, "train": train})


def test_request_ignores_resources_but_not_what_changes_weights():
    base = request_hash(train_request(_cfg(), "bag20", {"request": {"ratio": 0.2}}, "fp32"))
    resources = _cfg(num_workers=4, cpus_per_worker=0.5, max_failures=3, log_every=1, checkpoint_every=7,
                     mini_batch_size=2)  # GradCache splits a step, it does not change its gradient
    assert request_hash(train_request(resources, "bag20", {"request": {"ratio": 0.2}}, "fp32")) == base
    assert request_hash(train_request(_cfg(learning_rate=1e-4), "bag20", {"request": {"ratio": 0.2}}, "fp32")) != base
    assert request_hash(train_request(_cfg(), "bag20", {"request": {"ratio": 0.4}}, "fp32")) != base
    assert request_hash(train_request(_cfg(), "bag20", {"request": {"ratio": 0.2}}, "bf16")) != base


def test_every_bag_is_submitted_at_once_unless_capped():
    """Nothing is sized from the cluster: a fresh autoscaling cluster has no GPUs yet."""
    gpu = TrainConfig(use_gpu=True, num_workers=8, cpus_per_worker=2, gpus_per_worker=1)
    assert concurrent_bags(gpu, 5) == 5
    assert concurrent_bags(TrainConfig(max_concurrent_bags=2), 5) == 2
    assert concurrent_bags(TrainConfig(max_concurrent_bags=9), 3) == 3


def test_workers_inherit_the_drivers_hub_settings_instead_of_being_forced_offline():
    cpu, gpu = TrainConfig(), TrainConfig(use_gpu=True)
    online = worker_env(gpu, {"HF_HOME": "/cache/hf", "HF_TOKEN": "hf_x", "PATH": "/bin"})
    assert online == {"HF_HOME": "/cache/hf", "HF_TOKEN": "hf_x", "TOKENIZERS_PARALLELISM": "false",
                      "RAY_USAGE_STATS_ENABLED": "0"}  # no HF_HUB_OFFLINE, nothing unrelated
    offline = worker_env(cpu, {"HF_HUB_OFFLINE": "1"})
    assert offline["HF_HUB_OFFLINE"] == "1" and offline["DS_ACCELERATOR"] == "cpu"
