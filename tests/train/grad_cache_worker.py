"""Two gloo ranks: GradCache (boom_ray/train/grad_cache.py) against the plain full-batch step.

Run by tests/train/test_grad_cache.py as a script (``python grad_cache_worker.py MODE OUT_DIR
PORT``) so that torch.multiprocessing.spawn can pickle the worker from ``__main__``.

MODE ``torch``: float64, plain autograd. Each rank saves the loss and every parameter's gradient
of the plain step and of GradCache at several mini-batch sizes, with cross-device negatives and
a mix of in-batch and own-group-only rows.

MODE ``deepspeed``: fp32 through a DeepSpeed engine at ZeRO 0-3 with gradient accumulation 2 and
checkpointed layers. Each rank saves the parameters after one optimizer step (SGD, so the update
is the gradient itself) on either path, and how many backward passes DeepSpeed treated as an
accumulation boundary (the ones that all-reduce under ZeRO 0/1) per optimizer step.

MODE ``bf16``: boom-ray's generated DeepSpeed config of a bf16 GradCache run at ZeRO 1-3, with
mini-batches of one row (B_BF16 backward passes per step): each rank saves the fp32 master
weights' update of one step on the plain path, on GradCache, and on GradCache with the config's
fp32 accumulation (`data_types.grad_accum_dtype`) removed; what DeepSpeed says to fp32
accumulation at ZeRO 0; and `engine.skipped_steps` after steps whose gradients are all NaN.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD, B, G, L, D_IN, D = 2, 4, 3, 5, 6, 8
B_BF16 = 128
TEMPERATURE = 0.1
MINI_SIZES = (1, 2, 3)  # 3 leaves an uneven last mini-batch (symmetric tasks' half batches)


class TinyEncoder(torch.nn.Module):
    """Per-token MLP + masked mean pooling + L2 norm: a real (small) encoder with dropout and
    optional checkpointing, taking feature dicts like the embedder."""

    def __init__(self, dropout: float = 0.0, checkpoint: bool = False, dtype=torch.float64, seed: int = 7):
        super().__init__()
        torch.manual_seed(seed)
        self.l1 = torch.nn.Linear(D_IN, 16, dtype=dtype)
        self.l2 = torch.nn.Linear(16, D, dtype=dtype)
        self.drop = torch.nn.Dropout(dropout)
        self.checkpoint = checkpoint

    def _layer(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.drop(torch.tanh(self.l1(x))))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x, mask = features["x"].to(self.l1.weight.dtype), features["attention_mask"]  # DeepSpeed's bf16 cast
        if self.checkpoint and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            h = checkpoint(self._layer, x, use_reentrant=False)
        else:
            h = self._layer(x)
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1)
        if pooled.dtype in (torch.bfloat16, torch.float16):  # fp32 embeddings, as the embedder gives
            pooled = pooled.float()
        return torch.nn.functional.normalize(pooled, dim=-1)


def make_features(n: int, gen: torch.Generator, dtype=torch.float64) -> dict[str, torch.Tensor]:
    lengths = torch.randint(1, L + 1, (n,), generator=gen)
    mask = (torch.arange(L).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return {"x": torch.randn(n, L, D_IN, generator=gen, dtype=dtype), "attention_mask": mask}


def global_batch(step: int = 0, dtype=torch.float64, rows: int = B) -> dict:
    gen = torch.Generator().manual_seed(1000 + step)
    # rows 1, 4 and 6 are classification-like (own group only); with other sizes every fourth row
    in_batch = (torch.tensor([True, False, True, True, False, True, False, True]) if rows == B
                else torch.arange(WORLD * rows) % 4 != 1)
    return {"q": make_features(WORLD * rows, gen, dtype), "p": make_features(WORLD * rows * G, gen, dtype),
            "in_batch": in_batch}


def rank_slice(batch: dict, rank: int, rows: int = B) -> tuple[dict, dict, torch.Tensor]:
    q = {k: v[rank * rows:(rank + 1) * rows] for k, v in batch["q"].items()}
    p = {k: v[rank * rows * G:(rank + 1) * rows * G] for k, v in batch["p"].items()}
    return q, p, batch["in_batch"][rank * rows:(rank + 1) * rows]


def _loss_fn(in_batch):
    from boom_ray.losses.info_nce import info_nce_loss

    return lambda q, p: info_nce_loss(q, p, TEMPERATURE, in_batch=in_batch, gather=True)


def torch_mode(rank: int, out_dir: str) -> None:
    from boom_ray.train.grad_cache import cached_backward, plain_backward

    qf, pf, in_batch = rank_slice(global_batch(), rank)
    results = {}
    for name in ["plain", *[f"mini{m}" for m in MINI_SIZES]]:
        model = TinyEncoder()
        if name == "plain":
            loss = _loss_fn(in_batch)(model(qf), model(pf))
            loss.backward()
        else:
            loss = cached_backward(model, qf, pf, _loss_fn(in_batch), int(name[4:]), plain_backward)
        results[name] = {"loss": loss.detach(), "grads": {n: p.grad.clone() for n, p in model.named_parameters()}}
    torch.save(results, f"{out_dir}/torch_rank{rank}.pt")


def _ds_engine(stage: int):
    import deepspeed

    model = TinyEncoder(checkpoint=True, dtype=torch.float32)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    config = {"train_micro_batch_size_per_gpu": B, "gradient_accumulation_steps": 2,
              "train_batch_size": B * WORLD * 2, "zero_optimization": {"stage": stage},
              "zero_allow_untested_optimizer": True, "steps_per_print": 10**9}
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    boundaries = []
    original = engine.allreduce_gradients

    def spy(*args, **kwargs):  # records the boundary flag the real all-reduce decision reads
        boundaries.append(bool(engine.is_gradient_accumulation_boundary()))
        return original(*args, **kwargs)

    engine.allreduce_gradients = spy
    return engine, boundaries


def _full_params(engine, stage: int) -> dict[str, torch.Tensor]:
    import deepspeed

    params = dict(engine.module.named_parameters())
    with deepspeed.zero.GatheredParameters(list(params.values()), enabled=stage == 3):
        return {n: p.detach().clone() for n, p in params.items()}


def deepspeed_mode(rank: int, out_dir: str) -> None:
    from boom_ray.train.grad_cache import cached_backward, deepspeed_backward

    results = {}
    for stage in (0, 1, 2, 3):
        for path in ("plain", "mini3"):
            engine, boundaries = _ds_engine(stage)
            before = _full_params(engine, stage)
            for micro in range(2):  # one optimizer step of two accumulated micro batches
                qf, pf, in_batch = rank_slice(global_batch(micro, torch.float32), rank)
                if path == "plain":
                    engine.backward(_loss_fn(in_batch)(engine(qf), engine(pf)))
                else:
                    cached_backward(engine, qf, pf, _loss_fn(in_batch), int(path[4:]), deepspeed_backward(engine))
                engine.step()
            after = _full_params(engine, stage)
            results[(stage, path)] = {"update": {n: after[n] - before[n] for n in after},
                                      "boundary_backwards": sum(boundaries), "backwards": len(boundaries),
                                      "global_steps": engine.global_steps}
            engine.destroy()
    torch.save(results, f"{out_dir}/deepspeed_rank{rank}.pt")


def bf16_config(stage: int) -> dict:
    """boom-ray's generated config of a bf16 GradCache run on WORLD ranks, made exact to compare: no
    clipping (with SGD(lr=1) the update is the gradient), ZeRO-3 partitions every parameter."""
    from boom_ray.config import TrainConfig
    from boom_ray.train.ds_config import deepspeed_config

    train = TrainConfig(precision="bf16", zero_stage=stage, num_workers=WORLD, global_batch_size=WORLD * B_BF16,
                        mini_batch_size=1)
    config = deepspeed_config(train, world_size=WORLD, micro_batch_per_rank=B_BF16, on_gpu=False)
    config["gradient_clipping"] = 0.0
    if stage == 3:
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    return config


def _master_update(engine, step) -> dict[str, torch.Tensor]:
    """The fp32 master weights' change over `step()` (a bf16 module copy would round it away)."""
    from deepspeed.utils import safe_get_full_fp32_param

    def master():
        return {n: safe_get_full_fp32_param(p).detach().clone() for n, p in engine.module.named_parameters()}

    before = master()
    step()
    after = master()
    return {n: after[n] - before[n] for n in after}


def bf16_mode(rank: int, out_dir: str) -> None:
    import deepspeed

    from boom_ray.train.export import check_steps_applied
    from boom_ray.train.grad_cache import cached_backward, deepspeed_backward

    qf, pf, in_batch = rank_slice(global_batch(0, torch.float32, B_BF16), rank, B_BF16)
    loss_fn = _loss_fn(in_batch)
    results = {}
    for stage in (1, 2, 3):
        for path in ("plain", "mini1", "mini1_bf16_accumulation"):
            config = bf16_config(stage)
            if path == "mini1_bf16_accumulation":
                config.pop("data_types", None)
            model = TinyEncoder(dtype=torch.float32)
            engine, *_ = deepspeed.initialize(model=model, config=config,
                                              optimizer=torch.optim.SGD(model.parameters(), lr=1.0))

            def step():
                if path == "plain":
                    engine.backward(loss_fn(engine(qf), engine(pf)))
                else:
                    cached_backward(engine, qf, pf, loss_fn, 1, deepspeed_backward(engine))
                engine.step()

            results[(stage, path)] = {"update": _master_update(engine, step), "skipped": engine.skipped_steps,
                                      "optimizer": type(engine.optimizer).__name__}
            engine.destroy()
    results["stage0"] = "accepted"
    try:
        model = TinyEncoder(dtype=torch.float32)
        deepspeed.initialize(model=model, config={**bf16_config(1), "zero_optimization": {"stage": 0}},
                             optimizer=torch.optim.SGD(model.parameters(), lr=1.0))
    except NotImplementedError as exc:
        results["stage0"] = str(exc)
    # NaN inputs: NaN loss, NaN gradients on every rank; DeepSpeed skips the step
    model = TinyEncoder(dtype=torch.float32)
    engine, *_ = deepspeed.initialize(model=model, config=bf16_config(2),
                                      optimizer=torch.optim.SGD(model.parameters(), lr=1.0))
    nan_q = {**qf, "x": torch.full_like(qf["x"], float("nan"))}

    def nan_step():
        engine.backward(loss_fn(engine(nan_q), engine(pf)))
        engine.step()

    skipped = [_master_update(engine, nan_step) for _ in range(3)]
    results["nan"] = {"moved": [any(bool(u.abs().max() > 0) for u in upd.values()) for upd in skipped],
                      "skipped_steps": engine.skipped_steps, "global_steps": engine.global_steps}
    try:
        check_steps_applied("bag20", engine.global_steps, engine.skipped_steps)
    except Exception as exc:  # noqa: BLE001 - the message is the result
        results["nan"]["error"] = f"{type(exc).__name__}: {exc}"
    engine.destroy()
    torch.save(results, f"{out_dir}/bf16_rank{rank}.pt")


MODES = {"torch": torch_mode, "deepspeed": deepspeed_mode, "bf16": bf16_mode}


def worker(rank: int, mode: str, out_dir: str, port: int) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        MODES[mode](rank, out_dir)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2], int(sys.argv[3])), nprocs=WORLD, join=True)
