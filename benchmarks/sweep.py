"""Sweep benchmark: a trial of the in-memory path (merge the held bag tensors into a resident
embedder, score it) against the path sweeps took before (stream the merge to disk, load it,
score it), with the same weight vectors and dev suites, in the same run.

    .venv/bin/python benchmarks/sweep.py                   # both model sets, 5 trials per path
    .venv/bin/python benchmarks/sweep.py --sets minilm --trials 3
    .venv/bin/python benchmarks/sweep.py --sets qwen3-0.6b --merge-only --trials 7   # the in-memory merge alone

Model sets:
- minilm: five copies of the bundled all-MiniLM-L6-v2 with seeded perturbations (the demo's bag
  shapes; 22M parameters, float32), scored on the demo's three out-of-domain dev suites: scoring
  dominates.
- qwen3-0.6b: five random checkpoints with Qwen3-0.6B's shapes (28 layers, hidden 1024, vocab
  151936; bfloat16, 1.2 GB each; transformers' Qwen3Config, random init; a tiny tokenizer),
  scored on a 10 % sample of one STS dev suite: moving weights dominates. Scores only need to
  be identical between the paths there.

Each path runs in its own subprocess (so its peak RSS is its own), old and new alternating, and
reports per trial the time outside scoring (merge + load) and the scoring time. Both paths use the
same statistics pass, computed once (as a sweep does), so their models and scores are identical;
the new path's one-off setup (reading the bags into memory) is reported separately. Prints the markdown recorded in benchmarks/RESULTS.md; results also go to
benchmarks/_out/sweep_results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from boom_ray.config import EvalConfig, MergeConfig, ModelConfig
from boom_ray.eval.dev_sample import sample_suite
from boom_ray.eval.embedding import ModelEncoder
from boom_ray.eval.evaluate import evaluate_model, load_suites
from boom_ray.eval.evaluators import evaluate_suite
from boom_ray.eval.results import score, summarize
from boom_ray.merge.in_memory import load_model_tensors, merge_in_memory, sweep_statistics
from boom_ray.merge.methods import get_method
from boom_ray.merge.request import MergeRequest, ModelInput
from boom_ray.merge.task import merge
from boom_ray.sweep.inputs import from_npz, to_npz
from boom_ray.sweep.trial import load_weights, parameter_targets, resident_embedder

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "_out"
SUITES = ROOT / "data" / "wordnet-sample" / "suites" / "dev"
SETS = {
    "minilm": {"suites": ["usage_retrieval", "verb_adverb_definition_retrieval", "verb_definition_sts"],
               "fraction": 1.0},
    "qwen3-0.6b": {"suites": ["verb_definition_sts"], "fraction": 0.1},
}
QWEN3_06B = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True)


def make_bags(name: str, root: Path) -> list[Path]:
    """Five bag exports of the set in the sentence-transformers format (built once, kept in _out)."""
    import torch  # lazy: torch, only to build the bags once

    from boom_ray.model.embedder import Embedder  # lazy: torch, transformers

    bags = [root / f"bag{i}" for i in range(5)]
    if all((b / "modules.json").is_file() for b in bags):
        return bags
    if name == "minilm":
        embedder = Embedder.from_pretrained("builtin:all-MiniLM-L6-v2")
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import make_tiny_tokenizer  # lazy: transformers (tests/, on the path just now)
        from transformers import Qwen3Config, Qwen3Model  # lazy: transformers

        tokenizer = make_tiny_tokenizer()
        config = Qwen3Config(**QWEN3_06B, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(0)
        model = Qwen3Model(config).to(torch.bfloat16)
        embedder = Embedder(model, tokenizer, ModelConfig(name_or_path="qwen3-0.6b-random", pooling="last"))
    state = {k: v.detach().clone() for k, v in embedder.model.state_dict().items()}
    for i, bag in enumerate(bags):
        gen = torch.Generator().manual_seed(i)
        noisy = {k: (v.float() + 0.05 * v.float().std() * torch.randn(v.shape, generator=gen)).to(v.dtype)
                 if v.is_floating_point() and v.numel() > 1 else v for k, v in state.items()}
        embedder.save(bag, state_dict=noisy)
    return bags


def weight_vectors(trials: int) -> list[list[float]]:
    rng = np.random.default_rng(7)
    return [[round(float(w), 4) for w in rng.uniform(0.1, 1.0, 5)] for _ in range(trials)]


def suites_of(name: str):
    spec = SETS[name]
    return [sample_suite(s, spec["fraction"]) for s in load_suites([SUITES / n for n in spec["suites"]])]


def worker(path: str, name: str, bags: list[str], vectors: list[list[float]]) -> dict:
    """One path's trials in this process; returns per-trial timings and scores."""
    import torch  # lazy: torch, in the worker processes only

    torch.set_num_threads(2)
    suites = suites_of(name)
    eval_cfg = EvalConfig(batch_size=32, ray_min_texts=1 << 62)
    method = get_method("multislerp")
    out: dict = {"path": path, "trials": []}
    stats = from_npz(statistics_file(name).read_bytes())
    setup = time.perf_counter()
    if path == "new":
        tensors = [load_model_tensors(b) for b in bags]
        embedder = resident_embedder(bags[0])
    out["setup_s"] = time.perf_counter() - setup
    # one untimed trial first, on both paths: a sweep's trial process runs many trials, and the
    # first pays one-off costs (first touch of the resident model's pages, loading the compiled
    # merge kernels, the tokenizer's caches); its outside-scoring time is reported on its own
    for i, weights in enumerate([vectors[0], *vectors]):
        t0 = time.perf_counter()
        if path == "new":
            settings = method.validate(len(bags), False, {}, [{"weight": w} for w in weights])
            merge_in_memory(method, settings, tensors, None, stats, sink=load_weights(embedder),
                            targets=parameter_targets(embedder), threads=2)  # as a trial of trial_cpus 2
            t1 = time.perf_counter()
            results = evaluate_model(bags[0], suites, eval_cfg, embedder=embedder)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="boom-sweep-bench-", dir=OUT))
            request = MergeRequest("multislerp", [ModelInput(b, {"weight": w}) for b, w in zip(bags, weights)])
            merge(request, str(tmp / "model"), MergeConfig(memory_budget="1GB"), progress=False, statistics=stats)
            encoder = ModelEncoder(str(tmp / "model"), eval_cfg)
            encoder.local_model()  # the load counts as moving weights, not as scoring
            t1 = time.perf_counter()
            results = summarize(str(tmp / "model"), [evaluate_suite(s, encoder) for s in suites])
            shutil.rmtree(tmp)
        t2 = time.perf_counter()
        timing = {"outside_s": t1 - t0, "scoring_s": t2 - t1, "score": score(results, "mean/main")}
        if i == 0:
            out["first_trial"] = timing
        else:
            out["trials"].append(timing)
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def merge_only(name: str, bags: list[str], vectors: list[list[float]], threads: int | None) -> dict:
    """Only the new path's merge into the resident embedder, timed per weight vector (setup
    excluded): what a trial spends outside scoring, without the scoring noise."""
    method = get_method("multislerp")
    stats = from_npz(statistics_file(name).read_bytes())
    tensors = [load_model_tensors(b) for b in bags]
    embedder = resident_embedder(bags[0])
    times = []
    for weights in vectors:
        settings = method.validate(len(bags), False, {}, [{"weight": w} for w in weights])
        t0 = time.perf_counter()
        merge_in_memory(method, settings, tensors, None, stats, sink=load_weights(embedder),
                        targets=parameter_targets(embedder), threads=threads)
        times.append(time.perf_counter() - t0)
    return {"set": name, "threads": threads, "merge_s": times, "median_s": statistics.median(times)}


def peak_rss_mib() -> float:
    """This process's peak RSS since its exec (VmHWM; getrusage's ru_maxrss would include the
    parent's peak at fork, which Linux carries across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def statistics_file(name: str) -> Path:
    return OUT / f"sweep-statistics-{name}.npz"


def write_statistics(name: str, bags: list[Path]) -> None:
    """The sweep's statistics pass, once, for both paths: each trial then differs only in how its
    merge reaches the scorer (the written model and the resident one are then bit for bit equal,
    and so are their scores; the old path also skips its own statistics pass, which favours it)."""
    if statistics_file(name).is_file():
        return
    tensors = [load_model_tensors(str(b)) for b in bags]
    method = get_method("multislerp")
    stats = sweep_statistics(method, method.validate(len(bags), False, {}, [{"weight": 1.0}] * len(bags)), tensors, None)
    statistics_file(name).write_bytes(to_npz(stats))


def run_path(path: str, name: str, bags: list[Path], vectors: list[list[float]]) -> dict:
    cmd = [sys.executable, __file__, "--worker", path, "--sets", name, "--bags", *map(str, bags),
           "--vectors", json.dumps(vectors)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(name: str, runs: list[dict]) -> dict:
    by = {p: [t for r in runs if r["path"] == p for t in r["trials"]] for p in ("old", "new")}
    med = {p: {k: statistics.median(t[k] for t in ts) for k in ("outside_s", "scoring_s")} for p, ts in by.items()}
    per_trial = {p: m["outside_s"] + m["scoring_s"] for p, m in med.items()}
    scores = {p: [t["score"] for t in ts] for p, ts in by.items()}
    return {"set": name, "median": med, "trials_per_hour": {p: 3600 / s for p, s in per_trial.items()},
            "speedup": per_trial["old"] / per_trial["new"],
            "outside_over_scoring_new": med["new"]["outside_s"] / med["new"]["scoring_s"],
            "scores_identical": scores["old"] == scores["new"],
            "max_score_difference": max(abs(a - b) for a, b in zip(scores["old"], scores["new"])),
            "new_setup_s": statistics.median(r["setup_s"] for r in runs if r["path"] == "new"),
            "first_trial_outside_s": {p: statistics.median(r["first_trial"]["outside_s"] for r in runs if r["path"] == p)
                                      for p in ("old", "new")},
            "trials": {p: [{k: t[k] for k in ("outside_s", "scoring_s")} for t in ts] for p, ts in by.items()},
            "peak_rss_mib": {p: max(r["peak_rss_mib"] for r in runs if r["path"] == p) for p in ("old", "new")}}


def markdown(rows: list[dict], trials: int, rounds: int) -> str:
    lines = [f"{trials} timed trials per path and round after one untimed one, {rounds} rounds alternating "
             "old/new; medians per trial.", "",
             "| set | path | outside scoring | scoring | trials/hour | peak RSS |", "|---|---|---|---|---|---|"]
    for r in rows:
        for p in ("old", "new"):
            m = r["median"][p]
            lines.append(f"| {r['set']} | {p} | {m['outside_s']:.2f} s | {m['scoring_s']:.2f} s | "
                         f"{r['trials_per_hour'][p]:.0f} | {r['peak_rss_mib'][p]:.0f} MiB |")
    lines.append("")
    for r in rows:
        lines.append(f"- {r['set']}: new/old trials per hour {r['speedup']:.2f}x; new path outside scoring = "
                     f"{100 * r['outside_over_scoring_new']:.1f} % of scoring; one-off setup {r['new_setup_s']:.1f} s, "
                     f"first (untimed) trial outside scoring {r['first_trial_outside_s']['new']:.2f} s "
                     f"(old path {r['first_trial_outside_s']['old']:.2f} s); "
                     f"scores identical: {r['scores_identical']} (max difference {r['max_score_difference']:.2g})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--merge-only", action="store_true", help="time only the in-memory merge (new path), "
                    "one per weight vector, in this process")
    ap.add_argument("--threads", type=int, help="merge threads for --merge-only (default: as a merge picks)")
    ap.add_argument("--worker", choices=["old", "new"], help=argparse.SUPPRESS)
    ap.add_argument("--bags", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--vectors", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.sets[0], args.bags, json.loads(args.vectors))))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    if args.merge_only:
        for name in args.sets:
            bags = make_bags(name, OUT / "sweep-bags" / name)
            write_statistics(name, bags)
            print(json.dumps(merge_only(name, list(map(str, bags)), weight_vectors(args.trials), args.threads)))
        return
    rows = []
    for name in args.sets:
        bags = make_bags(name, OUT / "sweep-bags" / name)
        write_statistics(name, bags)
        vectors = weight_vectors(args.trials)
        runs = []
        for _ in range(args.rounds):
            for path in ("old", "new"):
                runs.append(run_path(path, name, bags, vectors))
        rows.append(summary(name, runs))
    (OUT / "sweep_results.json").write_text(json.dumps(rows, indent=2))
    print(markdown(rows, args.trials, args.rounds))


if __name__ == "__main__":
    main()
