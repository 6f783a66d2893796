"""The DeepSpeed configuration of one bag's run, and its learning-rate schedule.

Pure functions: the same inputs give the same JSON on every rank, in the driver (to validate
early) and in the benchmark's plain PyTorch loop (which uses the same schedule).

A user DeepSpeed JSON (``train.deepspeed_config``) replaces the generated one; any value
written as ``"auto"`` in it (the Hugging Face convention) takes the generated value, so a
user file can pin ZeRO details without restating batch sizes (``"data_types": {"grad_accum_dtype":
"auto"}`` takes the fp32 accumulation rule below; a user file without it keeps DeepSpeed's default).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from boom_ray.config import TrainConfig
from boom_ray.errors import BoomError


class DeepSpeedConfigError(BoomError):
    """A DeepSpeed setting that cannot work (unreadable JSON, fp16 on CPU, ...)."""


def resolve_precision(precision: str, on_gpu: bool) -> str:
    """auto -> bf16 on GPU, fp32 on CPU. fp16 needs a GPU (DeepSpeed's loss scaler is CUDA-only)."""
    if precision == "auto":
        return "bf16" if on_gpu else "fp32"
    if precision == "fp16" and not on_gpu:
        raise DeepSpeedConfigError("train.precision: fp16 needs a GPU; use fp32 or bf16 on CPU")
    return precision


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str = "linear") -> float:
    """Multiplier of the peak learning rate before optimizer step `step` (0-based): linear
    warmup over `warmup_steps`, then linear or cosine decay to 0 at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected linear or cosine")


def warmup_steps(train: TrainConfig, total_steps: int) -> int:
    return int(math.ceil(train.warmup_ratio * total_steps))


def fp32_accumulation(train: TrainConfig, precision: str) -> bool:
    """Whether DeepSpeed must sum gradients in fp32: under bf16/fp16 it adds every backward pass
    of an optimizer step (accumulation micro steps, GradCache mini-batches) into a buffer of the
    model dtype unless `data_types.grad_accum_dtype` says otherwise, and bf16 keeps 8 bits: each
    addition drops the low bits of the smaller addend, a loss that grows with the passes."""
    return precision in ("bf16", "fp16") and (train.gradient_accumulation_steps > 1
                                              or train.mini_batch_size is not None)


def effective_zero_stage(stage: int, world_size: int, fp32_accum: bool = False) -> int:
    """ZeRO stages 1 and 2 partition optimizer state and gradients over the ranks; with one rank
    there is nothing to partition and they only add flattening and copies (measured: ~20 % of a
    MiniLM step on CPU), so a single worker runs stage 0. Stage 3 is kept as asked.

    fp32 accumulation needs ZeRO: DeepSpeed 0.19 honours `grad_accum_dtype` from stage 1 on (the
    bf16 optimizer of stage 1, the ZeRO optimizers of 2 and 3) and refuses it at stage 0
    ("unsupported mix of model_dtype and grad_accum_dtype"), so such a run takes stage 1 at least."""
    if world_size == 1 and stage in (1, 2):
        stage = 0
    return 1 if fp32_accum and stage == 0 else stage


def check_mini_batch_size(train: TrainConfig) -> None:
    """GradCache cuts each rank's rows into mini-batches: train.mini_batch_size must divide the
    per-rank batch, so that every mini-batch of a full batch is the same size (checked in the
    driver before any trainer starts, and by `boom plan`)."""
    m, batch, workers = train.mini_batch_size, train.global_batch_size, train.num_workers
    if m is not None and (batch % workers or (batch // workers) % m):
        raise DeepSpeedConfigError(f"train.mini_batch_size: {m} must divide the per-rank batch (global_batch_size "
                                   f"{batch} / num_workers {workers} = {batch / workers:g} rows)")


def generated_config(train: TrainConfig, *, world_size: int, micro_batch_per_rank: int, on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed JSON boom-ray writes for `train`.

    One plan batch (one global batch of one task) is one micro step on every rank; an optimizer
    step covers ``gradient_accumulation_steps`` of them; under bf16/fp16 with accumulation or
    GradCache they are summed in fp32 (:func:`fp32_accumulation`). The optimizer (AdamW) and the
    schedule are passed to ``deepspeed.initialize`` as objects, so the plain PyTorch loop of the
    benchmark uses exactly the same ones; DeepSpeed still saves and restores both in its checkpoints."""
    precision = resolve_precision(train.precision, on_gpu)
    fp32_accum = fp32_accumulation(train, precision)
    stage = effective_zero_stage(train.zero_stage, world_size, fp32_accum)
    zero: dict[str, Any] = {"stage": stage, "contiguous_gradients": True, "overlap_comm": on_gpu}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    ga = train.gradient_accumulation_steps
    config = {
        "train_micro_batch_size_per_gpu": micro_batch_per_rank,
        "gradient_accumulation_steps": ga,
        "train_batch_size": micro_batch_per_rank * world_size * ga,
        "gradient_clipping": 1.0,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if fp32_accum:
        config["data_types"] = {"grad_accum_dtype": "fp32"}
    return config


def _fill_auto(user: Any, generated: Any) -> Any:
    if isinstance(user, dict):
        gen = generated if isinstance(generated, dict) else {}
        return {k: _fill_auto(v, gen.get(k)) for k, v in user.items()}
    if user == "auto":
        return generated
    return user


def load_user_config(path: str) -> dict[str, Any]:
    file = Path(path).expanduser()
    try:
        data = json.loads(file.read_text())
    except OSError as exc:
        raise DeepSpeedConfigError(f"train.deepspeed_config: cannot read {file}: {exc}") from None
    except ValueError as exc:
        raise DeepSpeedConfigError(f"train.deepspeed_config: {file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DeepSpeedConfigError(f"train.deepspeed_config: {file} must hold a JSON object")
    return data


def deepspeed_config(train: TrainConfig, *, world_size: int, micro_batch_per_rank: int, on_gpu: bool,
                     user: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config handed to DeepSpeed: the user's JSON with "auto" filled in, else the generated one."""
    generated = generated_config(train, world_size=world_size, micro_batch_per_rank=micro_batch_per_rank,
                                 on_gpu=on_gpu)
    if user is None:
        return generated
    merged = _fill_auto(user, generated)
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        merged.setdefault(key, generated[key])
    if "train_batch_size" not in merged or user.get("train_batch_size") == "auto":
        merged["train_batch_size"] = (merged["train_micro_batch_size_per_gpu"] * world_size
                                      * merged["gradient_accumulation_steps"])
    return merged


def accumulation_steps(ds_config: dict[str, Any]) -> int:
    value = ds_config.get("gradient_accumulation_steps", 1)
    if not isinstance(value, int) or value < 1:
        raise DeepSpeedConfigError(f"gradient_accumulation_steps must be a positive integer, got {value!r}")
    return value


def precision_of(ds_config: dict[str, Any]) -> str:
    if (ds_config.get("bf16") or {}).get("enabled"):
        return "bf16"
    if (ds_config.get("fp16") or {}).get("enabled"):
        return "fp16"
    return "fp32"
