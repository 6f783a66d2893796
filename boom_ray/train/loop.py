"""The per-worker training loop of one bag (runs inside a Ray Train worker).

Life cycle, one named helper each: set up the embedder and the DeepSpeed engine; load the last
checkpoint if Ray Train hands one back (a restarted worker group, or a re-run of the same
request); step through this rank's micro batches; report metrics with a checkpoint every
``train.checkpoint_every`` optimizer steps; export the full model at the end.

A checkpoint holds everything needed to continue as if nothing had happened: the DeepSpeed
engine state (weights, optimizer, lr schedule; one shard per rank under ZeRO), the step (which
fixes the position in the batch plan, see :mod:`boom_ray.train.feed`), the running totals and
every RNG state in use on every rank (:mod:`boom_ray.train.rng`).

Heavy imports (torch, deepspeed, transformers) happen here, inside the worker, never in the
driver.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from boom_ray.config import RunConfig
from boom_ray.train.runs import STATE_FILE

log = logging.getLogger(__name__)

DS_TAG = "ds"


@dataclass
class TrainState:
    """Progress that survives a restart (saved in every checkpoint, written by rank 0)."""

    step: int = 0
    """Optimizer steps done."""
    tokens: int = 0
    """Real tokens seen, summed over ranks."""
    elapsed_s: float = 0.0
    """Training time before the current attempt."""
    restarts: int = 0
    started_at: float = 0.0
    """Wall-clock time the first attempt began training (after setup)."""
    loop_s: float = 0.0
    """Seconds spent in the step loop (data, forward, backward, optimizer), all attempts."""
    loop_cpu_s: float = 0.0
    """CPU seconds of this process (all threads) in the step loop: unlike wall time, barely
    moved by other processes competing for the cores."""
    resumed_from: list[int] = field(default_factory=list)
    loss_history: list[list[float]] = field(default_factory=list)
    """[step, mean loss over ranks and the last log window]."""


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
    import ray.train

    return ray.train.get_context()


def log_rank0(message: str, notice: bool = False, **progress: Any) -> None:
    """Rank 0's progress: to the driver's live view where the job names a board (`progress`,
    with the fields it shows), else printed (`--verbose`). `notice`: the view prints it as a line."""
    from boom_ray.train import progress as board

    if _ctx().get_world_rank() == 0 and not board.emit(message, notice, **progress):
        print(message, flush=True)


def load_options(cfg: RunConfig, on_gpu: bool) -> dict[str, Any]:
    """dtype and attention kernel for from_pretrained. The loaded weights are the master
    weights: fp32 unless `model.dtype` says otherwise (transformers 5 would load Qwen3 in its
    stored bf16, where AdamW's small updates vanish); DeepSpeed makes the bf16/fp16 compute copy."""
    import importlib.util

    import torch

    from boom_ray.errors import BoomError
    from boom_ray.train.ds_config import resolve_precision

    dtype, attn = cfg.model.dtype, cfg.model.attn_implementation
    if resolve_precision(cfg.train.precision, on_gpu) == "fp32" and dtype != "float32":
        raise BoomError(f"train.precision fp32 trains float32 weights; model.dtype {dtype} would not")
    if attn == "flash_attention_2" and not (on_gpu and importlib.util.find_spec("flash_attn")):
        raise BoomError("model.attn_implementation flash_attention_2 needs train.use_gpu and the flash-attn "
                        "package; use sdpa")
    return {"dtype": dtype if dtype == "auto" else getattr(torch, dtype), "attn_implementation": attn}


def build_embedder(cfg: RunConfig, on_gpu: bool):
    """The embedder to train: base weights, gradient checkpointing, optional LoRA adapters."""
    from boom_ray.model.embedder import Embedder

    embedder = Embedder.from_pretrained(cfg.model.name_or_path, cfg.model, **load_options(cfg, on_gpu))
    embedder.matryoshka_dims = cfg.train.matryoshka_dims or embedder.matryoshka_dims
    if cfg.train.gradient_checkpointing:
        embedder.gradient_checkpointing_enable()
    if cfg.model.lora is not None:
        from peft import LoraConfig, get_peft_model

        lora = cfg.model.lora
        embedder.model = get_peft_model(embedder.model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules))
    embedder.train()
    return embedder


def make_optimizer_and_schedule(embedder, cfg: RunConfig, total_steps: int):
    """AdamW over the trainable parameters, and warmup + linear/cosine decay as a LambdaLR."""
    import torch

    from boom_ray.train.ds_config import lr_factor, warmup_steps

    params = [p for p in embedder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    warm = warmup_steps(cfg.train, total_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warm, cfg.train.lr_schedule))
    return optimizer, schedule


def setup_model_and_engine(cfg: RunConfig, bag: str, bag_uri: str, on_gpu: bool, universal: bool = False) -> Setup:
    """Embedder, feed and DeepSpeed engine; `universal`: the engine will load a universal checkpoint."""
    import deepspeed
    import ray.train.torch
    import torch

    from boom_ray.train.ds_config import accumulation_steps, deepspeed_config, load_user_config
    from boom_ray.train.feed import BagFeed

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
        from boom_ray.train.feed import BagTooSmallError

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
              f"{feed.batches_per_epoch} batches/epoch, {total_steps} steps", total=total_steps)
    return Setup(embedder, engine, ds_config, accumulation, total_steps, feed)


def read_state_and_rng(path: str, rank: int) -> tuple[TrainState, bool]:
    """(the TrainState of a checkpoint folder, whether this rank's RNG states were in it and are
    now restored)."""
    import torch

    from boom_ray.train.rng import restore_rng_states

    with open(os.path.join(path, STATE_FILE)) as f:
        state = TrainState(**json.load(f))
    rng_file = os.path.join(path, f"rng_rank{rank}.pt")
    if not os.path.exists(rng_file):
        return state, False
    restore_rng_states(torch.load(rng_file, weights_only=False))
    return state, True


def load_checkpoint(engine, checkpoint) -> TrainState:
    """Restore engine state, progress and this rank's RNG states from a Ray Train checkpoint."""
    rank = _ctx().get_world_rank()
    with checkpoint.as_directory() as path:
        load_path, _ = engine.load_checkpoint(path, tag=DS_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if load_path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {path}")
        state, _ = read_state_and_rng(path, rank)
    state.restarts += 1
    state.resumed_from.append(state.step)
    return state


def report_and_checkpoint(engine, state: TrainState, metrics: dict[str, Any], with_checkpoint: bool) -> None:
    """ray.train.report from every rank; with a checkpoint, each rank contributes its shard."""
    import ray.train
    import torch

    from boom_ray.train.rng import rng_states

    ctx = _ctx()
    if not with_checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="boom-ckpt-") as tmp:
        engine.save_checkpoint(tmp, tag=DS_TAG)
        torch.save(rng_states(), os.path.join(tmp, f"rng_rank{ctx.get_world_rank()}.pt"))
        if ctx.get_world_rank() == 0:
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump(asdict(state), f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def train_steps(cfg: RunConfig, bag: str, setup: Setup, state: TrainState, attempt_start: float) -> float | None:
    """Optimizer steps from `state.step` to the end; returns the final (windowed) loss."""
    from functools import partial

    from boom_ray.losses.objective import training_loss
    from boom_ray.train.collective import all_reduce_sum
    from boom_ray.train.grad_cache import cached_backward, deepspeed_backward

    engine, feed, ga = setup.engine, setup.feed, setup.accumulation
    world = _ctx().get_world_size()
    gather = cfg.train.cross_device_negatives and world > 1
    total = setup.total_steps
    window_loss, window_n, window_tokens = 0.0, 0, 0
    final_loss = state.loss_history[-1][1] if state.loss_history else None
    batches = feed.iterate(state.step * ga, total * ga)
    loop_start, loop_base = time.monotonic(), state.loop_s
    cpu_start, cpu_base = time.process_time(), state.loop_cpu_s
    for micro in batches:
        if cfg.train.mini_batch_size:  # GradCache: the same loss and gradient, one mini-batch's memory
            loss = cached_backward(engine, micro.query_features, micro.passage_features,
                                   partial(training_loss, micro=micro, train=cfg.train, gather=gather),
                                   cfg.train.mini_batch_size, deepspeed_backward(engine))
        else:
            q = engine(micro.query_features)
            p = engine(micro.passage_features)
            loss = training_loss(q, p, micro, cfg.train, gather=gather)
            engine.backward(loss)
        engine.step()
        window_loss += float(loss.detach())
        window_n += 1
        window_tokens += micro.tokens
        if (micro.step + 1) % ga:
            continue
        state.step = (micro.step + 1) // ga
        is_log = state.step % cfg.train.log_every == 0 or state.step == total
        is_ckpt = state.step % cfg.train.checkpoint_every == 0 and state.step < total
        if not (is_log or is_ckpt):
            continue
        state.loop_s = loop_base + time.monotonic() - loop_start
        state.loop_cpu_s = cpu_base + time.process_time() - cpu_start
        loss_sum, n, tokens = all_reduce_sum([window_loss, window_n, window_tokens])
        final_loss = loss_sum / max(n, 1)
        state.tokens += int(tokens)
        state.loss_history.append([state.step, round(final_loss, 6)])
        window_loss, window_n, window_tokens = 0.0, 0, 0
        lr = engine.get_lr()[0] if engine.get_lr() else None
        log_rank0(f"[{bag}] step {state.step}/{total} loss {final_loss:.4f} lr {lr:.3g} "
                  f"tokens {state.tokens:,} ({state.tokens / max(state.loop_s, 1e-9):,.0f} tok/s in the loop)",
                  step=state.step, total=total, loss=final_loss, tok_s=state.tokens / max(state.loop_s, 1e-9))
        if is_ckpt:
            elapsed = state.elapsed_s + time.monotonic() - attempt_start
            snapshot = TrainState(**{**asdict(state), "elapsed_s": elapsed})
            report_and_checkpoint(engine, snapshot, {"step": state.step, "loss": final_loss,
                                                     "tokens": state.tokens}, with_checkpoint=True)
    return final_loss


def export_model(cfg: RunConfig, bag: str, setup: Setup, state: TrainState, final_loss: float | None,
                 attempt_start: float, job: dict[str, Any]) -> None:
    """Write `<workdir>/models/<bag>/` from rank 0; under ZeRO-3 every rank takes part in the
    gathering (collective), one parameter at a time unless LoRA adapters must be merged."""
    from boom_ray.train.ds_config import precision_of
    from boom_ray.train.export import export_manifest, full_model_for_export, write_export, write_export_zero3

    ctx = _ctx()
    rank0 = ctx.get_world_rank() == 0
    stage = setup.ds_config.get("zero_optimization", {}).get("stage", 0)
    streamed = stage == 3 and not hasattr(setup.embedder.model, "merge_and_unload")  # no LoRA to merge
    model, weights = (None, None) if streamed else full_model_for_export(setup.embedder, stage, rank0)
    wall = state.elapsed_s + time.monotonic() - attempt_start
    manifest = None
    if rank0:
        manifest = export_manifest(
            bag=bag, request=job["request"], digest=job["request_hash"], steps=state.step, tokens=state.tokens,
            final_loss=final_loss, wall_time_s=wall, world_size=ctx.get_world_size(), zero_stage=stage,
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
    log_rank0(f"[{bag}] exported after {state.step} steps, loss {final_loss}, {wall:.1f}s")
    import ray.train

    ray.train.report({"step": state.step, "loss": final_loss, "tokens": state.tokens, "done": True,
                      "wall_time_s": wall})


def _peak_gpu_memory() -> int | None:
    """Peak bytes allocated by torch on this rank's GPU (None on CPU)."""
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def _node_id() -> str:
    """The Ray node rank 0 trained on (where a bag ran, on a cluster that adds and removes nodes)."""
    import ray

    return ray.get_runtime_context().get_node_id()


# --------------------------------------------------------------------------- entry point
def train_loop(job: dict[str, Any]) -> None:
    """Ray Train worker entry point. `job`: the run config (as a dict), the bag, its URI, the
    request (and its hash) the export will carry, and the driver's start time."""
    import ray.train

    from boom_ray.train.rng import rank_seed, seed_everything

    job = {**job, "worker_started": time.time()}  # this attempt's start, before setup (for the manifest)
    cfg = RunConfig.model_validate(job["config"])
    bag = job["bag"]
    from boom_ray.train.progress import connect

    connect(job.get("progress"), bag)
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
        from boom_ray.train.relayout import load_other_layout

        state = load_other_layout(setup.engine, other, cfg.train.seed)
        log_rank0(f"[{bag}] resumed step {state.step} of {other['run']} on a new layout", notice=True,
                  step=state.step)
    else:
        seed_everything(rank_seed(cfg.train.seed, _ctx().get_world_rank()))
    state.started_at = state.started_at or time.time()
    final_loss = train_steps(cfg, bag, setup, state, attempt_start)
    export_model(cfg, bag, setup, state, final_loss, attempt_start, job)
