"""The per-worker training loop of one bag (runs inside a Ray Train worker).

Life cycle, one named helper each: set up the embedder and the DeepSpeed engine; load the last
checkpoint if Ray Train hands one back (a restarted worker group, or a re-run of the same
request); step through this rank's micro batches; every ``train.log_every`` optimizer steps send
one metrics record (:mod:`boom_ray.train.metrics`) to one sink, which reaches the console, the
bag's log file and Ray Train, with a checkpoint (:mod:`boom_ray.train.checkpoint`) every
``train.checkpoint_every`` steps; export the full model at the end, unless DeepSpeed skipped
every optimizer step (inf/NaN gradients): then the bag fails rather than export its base weights.

The driver imports this module only to hand :func:`train_loop` to a TorchTrainer, with torch and
Ray already loaded (transformers adds half a second); DeepSpeed, whose import picks an
accelerator and prints which, and peft are imported where they are used, in the workers.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from boom_ray.config import BoomConfig
from boom_ray.errors import BoomError
from boom_ray.losses.objective import training_loss
from boom_ray.model.embedder import Embedder
from boom_ray.train import progress
from boom_ray.train.checkpoint import RayReport, TrainState, load_checkpoint, save_checkpoint
from boom_ray.train.collective import all_reduce_sum
from boom_ray.train.ds_config import (accumulation_steps, deepspeed_config, load_user_config, lr_factor,
                                      precision_of, resolve_precision, warmup_steps)
from boom_ray.train.export import (check_steps_applied, export_manifest, full_model_for_export, write_export,
                                   write_export_zero3)
from boom_ray.train.feed import BagFeed, BagTooSmallError
from boom_ray.train.grad_cache import cached_backward, deepspeed_backward
from boom_ray.train.metrics import MetricsSink
from boom_ray.train.relayout import load_other_layout
from boom_ray.train.rng import rank_seed, seed_everything

log = logging.getLogger(__name__)


@dataclass
class Setup:
    embedder: Any
    engine: Any
    ds_config: dict
    accumulation: int
    total_steps: int
    feed: Any


# --------------------------------------------------------------------------- helpers
def _ctx():
    return ray.train.get_context()


def log_rank0(message: str, notice: bool = False, **metrics: Any) -> None:
    """Rank 0's messages: to the driver's live view where the job names a board (with any
    `metrics` known at this point: total_steps, step), else printed (`--verbose`). `notice`: the
    view prints it as a line. Step records take the metrics sink instead (:func:`metrics_sink`)."""
    if _ctx().get_world_rank() == 0 and not progress.emit(message, notice, **metrics):
        print(message, flush=True)


def load_options(cfg: BoomConfig, on_gpu: bool) -> dict[str, Any]:
    """dtype and attention kernel for from_pretrained. The loaded weights are the master
    weights: fp32 unless `model.dtype` says otherwise (transformers 5 would load Qwen3 in its
    stored bf16, where AdamW's small updates vanish); DeepSpeed makes the bf16/fp16 compute copy."""
    dtype, attn = cfg.model.dtype, cfg.model.attn_implementation
    if resolve_precision(cfg.train.precision, on_gpu) == "fp32" and dtype != "float32":
        raise BoomError(f"train.precision fp32 trains float32 weights; model.dtype {dtype} would not")
    if attn == "flash_attention_2" and not (on_gpu and importlib.util.find_spec("flash_attn")):
        raise BoomError("model.attn_implementation flash_attention_2 needs train.use_gpu and the flash-attn "
                        "package; use sdpa")
    return {"dtype": dtype if dtype == "auto" else getattr(torch, dtype), "attn_implementation": attn}


def build_embedder(cfg: BoomConfig, on_gpu: bool):
    """The embedder to train: base weights, gradient checkpointing, optional LoRA adapters."""
    embedder = Embedder.from_pretrained(cfg.model.name_or_path, cfg.model, **load_options(cfg, on_gpu))
    embedder.matryoshka_dims = cfg.train.matryoshka_dims or embedder.matryoshka_dims
    if cfg.train.gradient_checkpointing:
        embedder.gradient_checkpointing_enable()
    if cfg.model.lora is not None:
        from peft import LoraConfig, get_peft_model  # lazy: peft, LoRA runs only

        lora = cfg.model.lora
        embedder.model = get_peft_model(embedder.model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules))
    embedder.train()
    return embedder


def make_optimizer_and_schedule(embedder, cfg: BoomConfig, total_steps: int):
    """AdamW over the trainable parameters, and warmup + linear/cosine decay as a LambdaLR."""
    params = [p for p in embedder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    warm = warmup_steps(cfg.train, total_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warm, cfg.train.lr_schedule))
    return optimizer, schedule


def setup_model_and_engine(cfg: BoomConfig, bag: str, bag_uri: str, on_gpu: bool, universal: bool = False) -> Setup:
    """Embedder, feed and DeepSpeed engine; `universal`: the engine will load a universal checkpoint."""
    import deepspeed  # lazy: deepspeed, picks an accelerator on import: workers only, not the driver

    ctx = _ctx()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    embedder = build_embedder(cfg, on_gpu)
    feed = BagFeed.from_uri(bag_uri, embedder, global_batch_size=cfg.train.global_batch_size,
                            group_size=cfg.train.group_size, seed=cfg.train.seed, rank=rank, world_size=world,
                            name=bag, schedule=cfg.train.schedule, teacher_scores=cfg.train.kd_loss is not None)
    user = load_user_config(cfg.train.deepspeed_config) if cfg.train.deepspeed_config else None
    ds_config = deepspeed_config(cfg.train, world_size=world, on_gpu=on_gpu, user=user,
                                 micro_batch_per_rank=max(1, cfg.train.global_batch_size // world))
    if universal:
        ds_config["checkpoint"] = {**ds_config.get("checkpoint", {}), "load_universal": True}
    accumulation = accumulation_steps(ds_config)
    per_epoch = feed.batches_per_epoch // accumulation
    total_steps = cfg.train.max_steps or cfg.train.epochs * per_epoch
    if total_steps < 1:
        raise BagTooSmallError(f"{bag}: {feed.batches_per_epoch} global batches per epoch cannot fill one "
                               f"optimizer step of {accumulation} accumulated batches")
    device = ray.train.torch.get_device()
    embedder.to(device)
    kwargs: dict[str, Any] = {}
    if "optimizer" in ds_config:  # a user JSON that names its own optimizer keeps it
        kwargs["model_parameters"] = [p for p in embedder.parameters() if p.requires_grad]
    else:
        optimizer, schedule = make_optimizer_and_schedule(embedder, cfg, total_steps)
        kwargs["optimizer"] = optimizer
        if "scheduler" not in ds_config:
            kwargs["lr_scheduler"] = schedule
    engine, _, _, _ = deepspeed.initialize(model=embedder, config=ds_config, **kwargs)
    if world == 1 and engine.zero_optimization_stage() == 0:
        # One rank: the gradient all-reduce is the identity, but DeepSpeed would still flatten,
        # reduce and copy back every gradient each step.
        engine.enable_backward_allreduce = False
    log_rank0(f"[{bag}] {sum(p.numel() for p in embedder.parameters()):,} parameters, world {world}, "
              f"{torch.get_num_threads()} threads, "
              f"ZeRO {ds_config.get('zero_optimization', {}).get('stage', 0)}, "
              f"{feed.batches_per_epoch} batches/epoch, {total_steps} steps", total_steps=total_steps)
    return Setup(embedder, engine, ds_config, accumulation, total_steps, feed)


def metrics_sink(cfg: BoomConfig, setup: Setup, state: TrainState, attempt_start: float) -> MetricsSink:
    """The one sink of this rank's step records: the console and the bag's log file (rank 0),
    and Ray Train, which gets a record with a checkpoint every `train.checkpoint_every` steps but
    the last (the export follows it). `state` is read when a checkpoint is saved."""
    total, every = setup.total_steps, cfg.train.checkpoint_every

    def save(folder: str) -> None:
        elapsed = state.elapsed_s + time.monotonic() - attempt_start
        save_checkpoint(setup.engine, TrainState(**{**asdict(state), "elapsed_s": elapsed}), folder)

    report = RayReport(due=lambda step: step % every == 0 and step < total, save=save)
    return progress.worker_sink(_ctx().get_world_rank(), report)


def train_steps(cfg: BoomConfig, setup: Setup, state: TrainState, sink: MetricsSink) -> float | None:
    """Optimizer steps from `state.step` to the end; returns the final (windowed) loss. A step
    that is logged (every `train.log_every`, a checkpoint's, the last) sends one record to `sink`."""
    engine, feed, ga, total, train = setup.engine, setup.feed, setup.accumulation, setup.total_steps, cfg.train
    gather = train.cross_device_negatives and _ctx().get_world_size() > 1
    own_norm = measures_own_grad_norm(engine)
    window_loss, window_n, window_tokens = 0.0, 0, 0
    final_loss = state.loss_history[-1][1] if state.loss_history else None
    batches = feed.iterate(state.step * ga, total * ga)
    loop_start, loop_base = time.monotonic(), state.loop_s
    cpu_start, cpu_base = time.process_time(), state.loop_cpu_s
    for micro in batches:
        if train.mini_batch_size:  # GradCache: the same loss and gradient, one mini-batch's memory
            loss = cached_backward(engine, micro.query_features, micro.passage_features,
                                   partial(training_loss, micro=micro, train=train, gather=gather),
                                   train.mini_batch_size, deepspeed_backward(engine))
        else:
            q = engine(micro.query_features)
            p = engine(micro.passage_features)
            loss = training_loss(q, p, micro, train, gather=gather)
            engine.backward(loss)
        step, boundary = (micro.step + 1) // ga, (micro.step + 1) % ga == 0
        logged = boundary and (step % train.log_every == 0 or step == total or step % train.checkpoint_every == 0)
        norm = gradient_norm(engine) if logged and own_norm else None  # engine.step() clears them
        engine.step()
        window_loss += float(loss.detach())
        window_n += 1
        window_tokens += micro.tokens
        if not boundary:
            continue
        state.step = step
        if not logged:
            continue
        state.loop_s = loop_base + time.monotonic() - loop_start
        state.loop_cpu_s = cpu_base + time.process_time() - cpu_start
        loss_sum, n, tokens = all_reduce_sum([window_loss, window_n, window_tokens])
        final_loss = loss_sum / max(n, 1)
        state.tokens += int(tokens)
        state.loss_history.append([state.step, round(final_loss, 6)])
        window_loss, window_n, window_tokens = 0.0, 0, 0
        sink.log({
            "step": state.step,
            "total_steps": total,
            "loss": final_loss,
            "lr": float(engine.get_lr()[0]) if engine.get_lr() else None,
            "tokens": state.tokens,
            "tokens_per_s": state.tokens / max(state.loop_s, 1e-9),
            "grad_norm": norm if norm is not None else _float(engine.get_global_grad_norm()),
            "skipped_steps": skipped_steps(engine),
            "peak_memory_gib": peak_memory_gib(),
        })
    return final_loss


def measures_own_grad_norm(engine) -> bool:
    """Whether the loop must measure the gradient norm itself: DeepSpeed's ZeRO, bf16 and fp16
    optimizers keep one (`engine.get_global_grad_norm()`), a plain torch optimizer at ZeRO-0 does
    not; there the gradients are whole, reduced and unscaled on every rank before the step (unless
    a user JSON turns on torch autocast's grad scaler: then no norm rather than a scaled one)."""
    return (engine.zero_optimization_stage() == 0 and not hasattr(engine.optimizer, "_global_grad_norm")
            and getattr(engine, "torch_autocast_z0_gradscaler", None) is None)


def gradient_norm(engine) -> float:
    """2-norm of the module's gradients as they stand (before clipping, as DeepSpeed reports it)."""
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def peak_memory_gib() -> float | None:
    """Peak memory of this rank: what torch allocated on its GPU, else the process's peak resident
    set (VmHWM), where a CPU run keeps its weights and activations."""
    if (gpu := _peak_gpu_memory()) is not None:
        return gpu / 2**30
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 / 2**30 for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def skipped_steps(engine) -> int:
    """Optimizer steps DeepSpeed skipped for inf/NaN gradients, over every attempt (its checkpoints
    carry the count); 0 for an engine that keeps none."""
    return int(getattr(engine, "skipped_steps", 0) or 0)


def _float(value) -> float | None:
    return None if value is None else float(value)


def export_model(cfg: BoomConfig, bag: str, setup: Setup, state: TrainState, final_loss: float | None,
                 attempt_start: float, job: dict[str, Any]) -> None:
    """Write `<workdir>/models/<bag>/` from rank 0; under ZeRO-3 every rank takes part in the
    gathering (collective), one parameter at a time unless LoRA adapters must be merged."""
    ctx = _ctx()
    rank0 = ctx.get_world_rank() == 0
    stage = setup.ds_config.get("zero_optimization", {}).get("stage", 0)
    streamed = stage == 3 and not hasattr(setup.embedder.model, "merge_and_unload")  # no LoRA to merge
    model, weights = (None, None) if streamed else full_model_for_export(setup.embedder, stage, rank0)
    wall = state.elapsed_s + time.monotonic() - attempt_start
    skipped = skipped_steps(setup.engine)
    manifest = None
    if rank0:
        manifest = export_manifest(
            bag=bag, request=job["request"], digest=job["request_hash"], steps=state.step, tokens=state.tokens,
            final_loss=final_loss, wall_time_s=wall, world_size=ctx.get_world_size(), zero_stage=stage,
            skipped_steps=skipped,
            precision=precision_of(setup.ds_config), gradient_accumulation_steps=setup.accumulation,
            loop_time_s=round(state.loop_s, 3), loop_cpu_s=round(state.loop_cpu_s, 3), restarts=state.restarts,
            resumed_from=state.resumed_from,
            loss_history=state.loss_history,
            requested=job["started"], train_started=state.started_at, finished=time.time(),
            worker_started=job.get("worker_started"), node_id=_node_id(),
            peak_gpu_memory_bytes=_peak_gpu_memory())
    if streamed:
        write_export_zero3(setup.embedder, cfg.workdir, bag, manifest, rank0)
    elif rank0:
        write_export(setup.embedder, model, weights, cfg.workdir, bag, manifest)
    log_rank0(f"[{bag}] exported after {state.step} steps" + (f" ({skipped} skipped)" if skipped else "")
              + f", loss {final_loss}, {wall:.1f}s")
    ray.train.report({"step": state.step, "loss": final_loss, "tokens": state.tokens, "done": True,
                      "wall_time_s": wall})


def _peak_gpu_memory() -> int | None:
    """Peak bytes allocated by torch on this rank's GPU (None on CPU)."""
    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def _node_id() -> str:
    """The Ray node rank 0 trained on (where a bag ran, on a cluster that adds and removes nodes)."""
    return ray.get_runtime_context().get_node_id()


# --------------------------------------------------------------------------- entry point
def train_loop(job: dict[str, Any]) -> None:
    """Ray Train worker entry point. `job`: the run config (as a dict), the bag, its URI, the
    request (and its hash) the export will carry, and the driver's start time."""
    job = {**job, "worker_started": time.time()}  # this attempt's start, before setup (for the manifest)
    cfg = BoomConfig.model_validate(job["config"])
    bag = job["bag"]
    progress.connect(job.get("progress"), bag)
    attempt_start = time.monotonic()
    on_gpu = cfg.train.use_gpu
    seed_everything(cfg.train.seed)  # the same initial weights (LoRA adapters too) on every rank
    checkpoint = ray.train.get_checkpoint()
    other = None if checkpoint else job.get("resume_from")
    setup = setup_model_and_engine(cfg, bag, job["bag_uri"], on_gpu, universal=bool(other and other["universal"]))
    state = TrainState()
    if checkpoint:
        state = load_checkpoint(setup.engine, checkpoint)
        log_rank0(f"[{bag}] resumed from step {state.step} (restart {state.restarts})", notice=True,
                  step=state.step)
    elif other:
        state = load_other_layout(setup.engine, other, cfg.train.seed)
        log_rank0(f"[{bag}] resumed step {state.step} of {other['run']} on a new layout", notice=True,
                  step=state.step)
    else:
        seed_everything(rank_seed(cfg.train.seed, _ctx().get_world_rank()))
    state.started_at = state.started_at or time.time()
    sink = metrics_sink(cfg, setup, state, attempt_start)
    try:
        final_loss = train_steps(cfg, setup, state, sink)
    finally:
        sink.close()
    check_steps_applied(bag, state.step, skipped_steps(setup.engine))  # every rank: none reaches the export
    export_model(cfg, bag, setup, state, final_loss, attempt_start, job)
