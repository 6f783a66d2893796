"""Training throughput: one bag on Ray Train + DeepSpeed vs a plain single-process PyTorch loop.

    .venv/bin/python benchmarks/train_throughput.py                      # MiniLM, WordNet sample
    .venv/bin/python benchmarks/train_throughput.py --steps 10 --repeats 1   # smoke

Both sides train the same model (`train.model`, built by the same function) on the same micro
batches (the same `BagFeed`: plan, rank slice, sampled negatives, tokenisation in a prefetch
thread) with the same loss, AdamW, schedule and gradient clipping, fp32, the same number of
threads. The only difference is the machinery under test: a Ray Train worker actor and a DeepSpeed
engine, against `loss.backward(); clip; optimizer.step()` in this process. One worker runs ZeRO
stage 0 (stages 1/2 have nothing to partition over one rank); `--forced-zero2` adds a run whose
user DeepSpeed JSON forces ZeRO-2 anyway, to show what that costs. `--mini-batch M` adds a run
with GradCache (train.mini_batch_size M) on the same batches, compared with the plain Ray path
(`ray`), and `plain_gc`, the plain loop with GradCache, compared with `plain`: the extra
graph-free forward pass is its cost (`--variants ray,ray_gc` or `plain,plain_gc` runs just those).

Throughput = real (non-padding) tokens per second of the step loop, by wall clock and by CPU time
of the training process (all its threads). On a shared machine the wall clock swings with other
processes' load; CPU time barely does, so it is the fairer comparison there. Start-up (Ray worker
launch, model load, DeepSpeed init) is reported separately as the end-to-end figure. Runs
alternate (plain, Ray, plain, Ray, ...) so that load from other processes hits both alike; the
median of `--repeats` runs is reported. Target: Ray Train + DeepSpeed within 10 % of the plain
loop on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# This box is shared with jobs that peak near its memory limit; let the kernel pick an OOM victim
# instead of Ray's memory monitor killing this benchmark's (small) workers first.
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")


def run_config(args, workdir: Path):
    from boom_ray.config import BoomConfig

    return BoomConfig.model_validate({
        "workdir": str(workdir), "corpus": {"path": str(args.corpus)},
        "bagging": {"ratios": [1.0], "num_cpus": 1},
        "model": {"name_or_path": args.model, "max_query_length": args.max_len, "max_doc_length": args.max_len},
        "train": {"global_batch_size": args.batch, "group_size": args.group, "max_steps": args.steps,
                  "learning_rate": 5e-5, "temperature": 0.05, "zero_stage": args.zero_stage,
                  "gradient_checkpointing": False, "precision": "fp32", "checkpoint_every": 10**6,
                  "log_every": max(1, args.steps // 2), "num_workers": 1, "cpus_per_worker": args.threads,
                  "bags": ["bag100"]},
        "ray": {"num_cpus": 2},
    })


def plain_loop(cfg, bag_uri: str, threads: int, mini_batch: int | None = None) -> dict:
    """The anchor: the same model, batches, loss and optimizer, no Ray, no DeepSpeed (with
    `mini_batch`, GradCache's cached_backward instead of one backward: variant plain_gc)."""
    import torch

    from boom_ray.losses.info_nce import info_nce_loss
    from boom_ray.train.grad_cache import cached_backward, plain_backward
    from boom_ray.train.feed import BagFeed
    from boom_ray.train.loop import build_embedder, make_optimizer_and_schedule

    torch.set_num_threads(threads)
    start = time.monotonic()
    torch.manual_seed(cfg.train.seed)
    embedder = build_embedder(cfg, on_gpu=False)
    feed = BagFeed.from_uri(bag_uri, embedder, global_batch_size=cfg.train.global_batch_size,
                            group_size=cfg.train.group_size, seed=cfg.train.seed, name="bag100")
    steps = cfg.train.max_steps
    optimizer, schedule = make_optimizer_and_schedule(embedder, cfg, steps)
    params = [p for p in embedder.parameters() if p.requires_grad]
    tokens, losses = 0, []
    loop_start, loop_cpu = time.monotonic(), time.process_time()
    for micro in feed.iterate(0, steps):
        def loss_fn(q, p):
            return info_nce_loss(q, p, cfg.train.temperature, in_batch=micro.in_batch)

        if mini_batch:
            loss = cached_backward(embedder, micro.query_features, micro.passage_features, loss_fn, mini_batch,
                                   plain_backward)
        else:
            loss = loss_fn(embedder(micro.query_features), embedder(micro.passage_features))
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += micro.tokens
        losses.append(float(loss.detach()))
    loop_s, cpu_s = time.monotonic() - loop_start, time.process_time() - loop_cpu
    return {"tokens": tokens, "loop_s": loop_s, "tok_per_s": tokens / loop_s, "tok_per_cpu_s": tokens / cpu_s,
            "end_to_end_s": time.monotonic() - start,
            "final_loss": sum(losses[-5:]) / len(losses[-5:]), "threads": torch.get_num_threads()}


ZERO2_JSON = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
              "gradient_clipping": 1.0, "zero_optimization": {"stage": 2, "contiguous_gradients": True},
              "zero_allow_untested_optimizer": True, "steps_per_print": 10**9}
"""A user DeepSpeed JSON that forces ZeRO-2 on one worker (boom-ray itself runs stage 0 there)."""


def ray_train_run(cfg) -> dict:
    from boom_ray.train.export import read_export_manifest
    from boom_ray.train.launch import train_bags

    start = time.monotonic()
    [result] = train_bags(cfg, force=True)  # no skip: train every time
    if result.status != "trained":
        raise SystemExit(f"Ray Train run failed: {result.error}")
    m = read_export_manifest(cfg.workdir, "bag100")
    return {"tokens": m["tokens_seen"], "loop_s": m["loop_time_s"], "tok_per_s": m["tokens_seen"] / m["loop_time_s"],
            "tok_per_cpu_s": m["tokens_seen"] / m["loop_cpu_s"], "end_to_end_s": time.monotonic() - start,
            "final_loss": m["final_loss"], "zero_stage": m["zero_stage"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:all-MiniLM-L6-v2")
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "wordnet-sample" / "corpus")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=16, help="global batch (rows)")
    p.add_argument("--group", type=int, default=4, help="passages per row")
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--zero-stage", type=int, default=2, help="train.zero_stage (one worker runs stage 0)")
    p.add_argument("--forced-zero2", action="store_true", help="also run ZeRO-2 forced by a DeepSpeed JSON")
    p.add_argument("--threads", type=int, default=1, help="torch threads = Ray worker CPUs")
    p.add_argument("--mini-batch", type=int, help="also run GradCache with this train.mini_batch_size")
    p.add_argument("--variants", help="comma-separated subset to run (plain, ray, ray_zero2, ray_gc)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "_out" / "train_throughput")
    args = p.parse_args()

    import ray

    from boom_ray.config import derive
    from boom_ray.corpus.bags import bag_dir
    from boom_ray.corpus.bag_stage import run_bagging

    args.out.mkdir(parents=True, exist_ok=True)
    cfg = run_config(args, args.out / "work")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    run_bagging(cfg, show_progress=False)
    bag_uri = bag_dir(cfg.workdir, "bag100")
    zero2_json = args.out / "zero2.json"
    zero2_json.write_text(json.dumps(ZERO2_JSON))
    variants = {"plain": lambda: plain_loop(cfg, bag_uri, args.threads), "ray": lambda: ray_train_run(cfg)}
    if args.forced_zero2:
        forced = derive(cfg, {"train.deepspeed_config": str(zero2_json)})
        variants["ray_zero2"] = lambda: ray_train_run(forced)
    if args.mini_batch:
        cached = derive(cfg, {"train.mini_batch_size": args.mini_batch})
        variants["ray_gc"] = lambda: ray_train_run(cached)
        variants["plain_gc"] = lambda: plain_loop(cfg, bag_uri, args.threads, args.mini_batch)
    if args.variants:
        variants = {k: v for k, v in variants.items() if k in args.variants.split(",")}
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    loads = []
    for i in range(args.repeats):
        for name, fn in variants.items():
            runs[name].append(fn())
        loads.append(os.getloadavg()[0])
        print(f"repeat {i + 1}: " + ", ".join(f"{k} {v[-1]['tok_per_s']:,.0f} tok/s ({v[-1]['tok_per_cpu_s']:,.0f}/cpu-s)"
                                              for k, v in runs.items()), flush=True)
    med = {k: statistics.median(r["tok_per_s"] for r in v) for k, v in runs.items()}
    med_cpu = {k: statistics.median(r["tok_per_cpu_s"] for r in v) for k, v in runs.items()}
    e2e = {k: statistics.median(r["end_to_end_s"] for r in v) for k, v in runs.items()}
    # the plain loop where it ran; else the Ray path (GradCache against it); else the first variant
    anchor = next((k for k in ("plain", "ray") if k in runs), next(iter(runs)))
    overhead = {k: 1.0 - med[k] / med[anchor] for k in runs if k != anchor}
    overhead_cpu = {k: 1.0 - med_cpu[k] / med_cpu[anchor] for k in runs if k != anchor}
    if "ray_gc" in runs and "ray" in runs and anchor != "ray":
        overhead["ray_gc_vs_ray"] = 1.0 - med["ray_gc"] / med["ray"]
        overhead_cpu["ray_gc_vs_ray"] = 1.0 - med_cpu["ray_gc"] / med_cpu["ray"]
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, "median_tok_per_s": med,
               "median_tok_per_cpu_s": med_cpu, "median_end_to_end_s": e2e, "overhead_wall": overhead,
               "overhead_cpu": overhead_cpu, "cpu_count": os.cpu_count(), "load_avg_1min": loads}
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"\nmedian of {args.repeats} (1-min load average during runs: {min(loads):.1f}-{max(loads):.1f}):")
    print(f"{'variant':<10} {'tok/s':>8} {'tok/cpu-s':>10} {'overhead wall':>14} {'overhead cpu':>13} "
          f"{'end-to-end s':>13}   (overhead against {anchor})")
    for k in runs:
        print(f"{k:<10} {med[k]:>8,.0f} {med_cpu[k]:>10,.0f} {overhead.get(k, 0):>+14.1%} "
              f"{overhead_cpu.get(k, 0):>+13.1%} {e2e[k]:>13.1f}")
    if "ray_gc_vs_ray" in overhead:
        print(f"GradCache against the Ray path: {overhead['ray_gc_vs_ray']:+.1%} wall, "
              f"{overhead_cpu['ray_gc_vs_ray']:+.1%} CPU")
    print("target: overhead <= 10% on CPU (Ray Train + DeepSpeed); GradCache: about a third more compute")
    return 0


if __name__ == "__main__":
    sys.exit(main())
