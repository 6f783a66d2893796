"""Fine-tune the bundled MiniLM on the WordNet sample's full bag and compare dev nDCG@10.

    .venv/bin/python benchmarks/minilm_finetune.py                # 300 steps
    .venv/bin/python benchmarks/minilm_finetune.py --steps 20     # smoke

The whole path a user takes: `boom bag` (Ray Data) makes bag100 of data/wordnet-sample/corpus,
`boom train` (Ray Train + DeepSpeed ZeRO-2, one worker) fine-tunes all-MiniLM-L6-v2 on it, and
the eval stage scores the base model and the export on the dev suites with the same query
formatting (the suite's instruction in the query template). The anchor is the base model in
the same run; the claim is that in-domain retrieval (definition_retrieval) nDCG@10 rises.
Out-of-domain retrieval suites are reported alongside, for information.
"""

from __future__ import annotations

import argparse
import json
import os
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

DATA = REPO / "data" / "wordnet-sample"
RETRIEVAL_SUITES = ["definition_retrieval", "verb_adverb_definition_retrieval", "usage_retrieval"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--cpus", type=float, default=2.0, help="CPUs of the one training worker")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "_out" / "minilm_finetune")
    args = p.parse_args()

    import ray

    from boom_ray.config import BoomConfig
    from boom_ray.corpus.bag_stage import run_bagging
    from boom_ray.eval.evaluate import evaluate_model
    from boom_ray.eval.results import score
    from boom_ray.train.export import model_dir, read_export_manifest
    from boom_ray.train.launch import summary_table, train_bags

    cfg = BoomConfig.model_validate({
        "workdir": str(args.out / "work"), "corpus": {"path": str(DATA / "corpus")},
        "bagging": {"ratios": [1.0], "num_cpus": 1},
        "model": {"name_or_path": "builtin:all-MiniLM-L6-v2", "max_query_length": 64, "max_doc_length": 64},
        "train": {"global_batch_size": args.batch, "group_size": args.group, "max_steps": args.steps,
                  "learning_rate": args.lr, "temperature": args.temperature, "warmup_ratio": 0.1,
                  "gradient_checkpointing": False, "zero_stage": 2, "checkpoint_every": 100,
                  "log_every": 25, "num_workers": 1, "cpus_per_worker": args.cpus, "bags": ["bag100"]},
    })
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    run_bagging(cfg, show_progress=False)
    t0 = time.monotonic()
    results = train_bags(cfg)
    train_s = time.monotonic() - t0
    print(summary_table(results))
    if results[0].status == "failed":
        return 1
    suites = [str(DATA / "suites" / "dev" / s) for s in RETRIEVAL_SUITES]
    base = evaluate_model(cfg.model.name_or_path, suites, model_cfg=cfg.model)
    tuned = evaluate_model(model_dir(cfg.workdir, "bag100"), suites)
    rows = {s: {"base": score(base, f"{s}/ndcg@10"), "tuned": score(tuned, f"{s}/ndcg@10")} for s in RETRIEVAL_SUITES}
    manifest = read_export_manifest(cfg.workdir, "bag100")
    if manifest is None:
        raise SystemExit(f"{model_dir(cfg.workdir, 'bag100')}: no export manifest")
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "ndcg@10": rows, "train": {
        k: manifest.get(k) for k in ("steps", "tokens_seen", "final_loss", "wall_time_s", "loop_time_s",
                                     "loss_history")}, "train_driver_s": train_s, "status": results[0].status}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(out, indent=2))
    print(f"\n{'dev suite':<36} {'domain':<6} {'base':>8} {'tuned':>8}")
    for s, r in rows.items():
        domain = "in" if s == "definition_retrieval" else "out"
        print(f"{s:<36} {domain:<6} {r['base']:>8.4f} {r['tuned']:>8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
