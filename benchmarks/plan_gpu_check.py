"""`boom plan`'s per-GPU memory estimate against torch.cuda.max_memory_allocated, on one GPU.

    .venv/bin/python benchmarks/plan_gpu_check.py                       # random-init Qwen3, bf16
    .venv/bin/python benchmarks/plan_gpu_check.py --model /path/to/Qwen3-0.6B --rows 8 --length 512

Needs a CUDA GPU (no GPU was lent to the task that wrote it; the CPU counterpart, which runs in
the test suite, is tests/train/test_step_memory.py). One training step as the loop takes it:
the embedder (boom_ray.train.loop.build_embedder's settings), a DeepSpeed engine from the
generated config (ZeRO 0, one rank, bf16 or fp32), InfoNCE over ROWS queries and ROWS x GROUP
passages of LENGTH tokens, backward (plain, or GradCache at --mini-batch), optimizer step. Each
case runs in a fresh engine after torch.cuda.reset_peak_memory_stats; the peak counts everything
allocated, weights included, which is what the estimate's total predicts. Prints estimate,
measured peak and their ratio per case and writes benchmarks/_out/plan_gpu_check.json; exits 1
when a case is off by more than 30 %.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _texts():
    spec = importlib.util.spec_from_file_location("step_memory", REPO / "tests" / "train" / "step_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.texts


def _random_qwen3(path: Path, hidden: int, layers: int) -> Path:
    spec = importlib.util.spec_from_file_location("tiny_models", REPO / "tests" / "tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_tiny_qwen3(path, hidden_size=hidden, num_layers=layers)


def one_step(model_dir: str, args, mini: int | None, checkpointing: bool) -> dict:
    import deepspeed
    import torch

    from boom_ray.config import ModelConfig, TrainConfig
    from boom_ray.model.embedder import Embedder
    from boom_ray.losses.info_nce import info_nce_loss
    from boom_ray.train.ds_config import deepspeed_config
    from boom_ray.train.grad_cache import cached_backward, deepspeed_backward

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    embedder = Embedder.from_pretrained(model_dir, ModelConfig(pooling="last", max_query_length=args.length,
                                                               max_doc_length=args.length), dtype=torch.float32)
    if checkpointing:
        embedder.gradient_checkpointing_enable()
    embedder.train().cuda()
    train = TrainConfig(global_batch_size=args.rows, group_size=args.group, precision=args.precision, zero_stage=0,
                        use_gpu=True, mini_batch_size=mini)
    ds = deepspeed_config(train, world_size=1, micro_batch_per_rank=args.rows, on_gpu=True)
    optimizer = torch.optim.AdamW(embedder.parameters(), lr=1e-5)
    engine, *_ = deepspeed.initialize(model=embedder, optimizer=optimizer, config=ds)
    engine.enable_backward_allreduce = False  # as the loop does on one rank
    texts = _texts()
    q = embedder.tokenize(texts(args.rows, args.length, "q"), args.length)
    p = embedder.tokenize(texts(args.rows * args.group, args.length, "p"), args.length)

    def loss_fn(qe, pe):
        return info_nce_loss(qe, pe, 0.02)

    if mini:
        cached_backward(engine, q, p, loss_fn, mini, deepspeed_backward(engine))
    else:
        engine.backward(loss_fn(engine(q), engine(p)))
    engine.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - start
    engine.destroy()
    del engine, embedder, optimizer
    return {"peak": peak, "precision": "fp32" if args.precision == "fp32" else "bf16"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (default: a random-init Qwen3 of --hidden x --layers)")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--mini-batch", type=int, default=2)
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "_out" / "plan_gpu_check.json")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here; the CPU check is tests/train/test_step_memory.py", file=sys.stderr)
        return 2
    import deepspeed

    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": os.environ.get("MASTER_PORT", "29531")})
    deepspeed.init_distributed(dist_backend="nccl")
    from boom_ray.plan.estimate import TrainShape, memory_estimate
    from boom_ray.plan.inputs import load_model_shape

    args.out.parent.mkdir(parents=True, exist_ok=True)
    model = args.model or str(_random_qwen3(args.out.parent / "plan_gpu_model", args.hidden, args.layers))
    shape = load_model_shape(model)
    results, worst = [], 0.0
    for name, mini, ckpt in [("plain", None, False), ("plain+checkpointing", None, True),
                             (f"gradcache {args.mini_batch}", args.mini_batch, False),
                             (f"gradcache {args.mini_batch}+checkpointing", args.mini_batch, True)]:
        measured = one_step(model, args, mini, ckpt)
        est = memory_estimate(shape, TrainShape(args.rows, args.group, args.length, args.length,
                                                measured["precision"], 0, 1, ckpt, mini)).total
        ratio = est / measured["peak"]
        worst = max(worst, abs(ratio - 1))
        results.append({"case": name, "estimate": est, "measured": measured["peak"], "ratio": ratio})
        print(f"{name:<30} estimate {est / 2**30:8.2f} GiB  measured {measured['peak'] / 2**30:8.2f} GiB  "
              f"ratio {ratio:5.2f}", flush=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "model": shape.name,
                                    "params": shape.params, "gpu": torch.cuda.get_device_name(),
                                    "results": results}, indent=2))
    print(f"worst deviation {worst:.0%} (target <= 30 %)")
    return 0 if worst <= 0.3 else 1


if __name__ == "__main__":
    sys.exit(main())
