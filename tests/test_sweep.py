"""`boom sweep`: a real Ray Tune sweep over merges of tiny Qwen3 bag models, scored on a tiny
retrieval dev suite, on the session's 2-CPU local Ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from boom_ray.cli import main as cli_main
from boom_ray.config import validate_config
from boom_ray.sweep import BEST, SWEEP_JSON, SweepError, run_sweep, search_space, searcher

DOCS = {
    "d1": "the cat sat on the warm mat", "d2": "stock markets fell sharply today",
    "d3": "a recipe for fresh tomato soup", "d4": "the football team won the final match",
    "d5": "rain is expected over the mountains", "d6": "new phones have better cameras",
}
QUERIES = {"q1": ("where did the cat sit", "d1"), "q2": ("how did the markets do", "d2"),
           "q3": ("how to cook soup", "d3"), "q4": ("who won the match", "d4")}


def write_suite(root: Path) -> Path:
    """A retrieval suite in the DESIGN.md (BEIR) layout, tagged out-of-domain."""
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n"
                                               for i, t in DOCS.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                for q, (t, _) in QUERIES.items()))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"{q}\t{d}\t1\n" for q, (_, d) in QUERIES.items()))
    (root / "suite.json").write_text(json.dumps({"type": "retrieval", "domain": "out"}))
    return root


@pytest.fixture(scope="module")
def bag_models(tiny_qwen3_path, tmp_path_factory) -> Path:
    """A work dir whose models/bag50 and models/bag100 are the tiny Qwen3 with perturbed weights,
    saved in the sentence-transformers export format the train stage writes."""
    import torch

    from boom_ray.model.embedder import Embedder

    workdir = tmp_path_factory.mktemp("sweep_run")
    embedder = Embedder.from_pretrained(str(tiny_qwen3_path))
    state = {k: v.detach().clone() for k, v in embedder.model.state_dict().items()}
    for seed, bag in enumerate(["bag50", "bag100"]):
        gen = torch.Generator().manual_seed(seed)
        perturbed = {k: v + 0.5 * v.std().nan_to_num(0.0) * torch.randn(v.shape, generator=gen)
                     if v.is_floating_point() and v.numel() > 1 else v for k, v in state.items()}
        embedder.save(workdir / "models" / bag, state_dict=perturbed)
    return workdir


def sweep_config(workdir: Path, suite: Path, **sweep) -> object:
    return validate_config({
        "workdir": str(workdir), "corpus": {"path": str(workdir / "unused")},
        "bagging": {"ratios": [0.5, 1.0]},
        "merge": {"memory_budget": "16MB", "memory": "256MB"},
        "eval": {"dev_suites": [{"path": str(suite)}], "batch_size": 8},
        "sweep": {"search": "grid", "weight_grid": [0.2, 1.0], "methods": ["linear"],
                  "objective": "ood_mean/ndcg@10", "trial_cpus": 1, **sweep},
    })


def test_sweep_runs_keeps_best_and_resumes(ray_session, bag_models, tmp_path, capsys):
    suite = write_suite(tmp_path / "dev_suite")
    cfg = sweep_config(bag_models, suite)
    summary = run_sweep(cfg)

    trials = summary["trials"]
    assert len(trials) == 4 and all(t["status"] == "done" for t in trials)
    assert sorted((t["weights"]["bag50"], t["weights"]["bag100"]) for t in trials) == \
        [(0.2, 0.2), (0.2, 1.0), (1.0, 0.2), (1.0, 1.0)]
    scores = [t["score"] for t in trials]
    assert all(0.0 <= s <= 1.0 for s in scores)

    best = bag_models / "sweep" / BEST
    info = json.loads((best / SWEEP_JSON).read_text())
    assert info["score"] == max(scores) == summary["score"]
    assert info["objective"] == "ood_mean/ndcg@10" and info["mode"] == "max" and info["method"] == "linear"
    assert info["weights"] == trials[0]["weights"]
    assert (best / "boom_merge.json").is_file() and list(best.glob("*.safetensors"))
    merged = json.loads((best / "boom_merge.json").read_text())
    assert [m["parameters"]["weight"] for m in merged["models"]] == \
        [info["weights"]["bag50"], info["weights"]["bag100"]]
    # the other trial models are gone, their Tune records stay
    experiment = Path(summary["experiment"])
    assert not list(experiment.glob("*/model"))
    assert len([p for p in experiment.iterdir() if p.is_dir()]) == 4
    out = capsys.readouterr().out
    assert "bag50" in out and "ood_mean/ndcg@10" in out

    # the same sweep again, from YAML through the CLI: restored, no trial re-run, same best
    results_before = {p: p.read_text() for p in experiment.glob("*/result.json")}
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True)))
    assert cli_main(["sweep", "--config", str(run_yaml)]) == 0
    out = capsys.readouterr().out
    assert f"resuming sweep {experiment}" in out
    assert f"best ood_mean/ndcg@10 = {info['score']:.4f} (max): linear" in out
    assert {p: p.read_text() for p in experiment.glob("*/result.json")} == results_before
    assert json.loads((best / SWEEP_JSON).read_text())["trial"] == info["trial"]


def test_errored_sweep_resumes_after_fix(ray_session, bag_models, tmp_path):
    """Every trial fails (a merge memory budget too small); the same sweep with enough memory
    resumes that experiment, re-running the errored trial (random search, 1 sample); with
    keep_trial_models the trial's model stays where it is and best/ gets a copy."""
    workdir = tmp_path / "run"
    shutil.copytree(bag_models / "models", workdir / "models")
    suite = write_suite(tmp_path / "dev_suite")
    cfg = sweep_config(workdir, suite, search="random", weight_grid=None, num_samples=1)
    starved = cfg.model_copy(update={"merge": cfg.merge.model_copy(update={"memory_budget": 100})})
    with pytest.raises(SweepError, match="no trial of .* finished"):
        run_sweep(starved)
    experiment = next((workdir / "sweep").glob("sweep-*"))
    first_trials = sorted(p.name for p in experiment.iterdir() if p.is_dir())
    keep = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"keep_trial_models": True})})
    summary = run_sweep(keep)
    assert summary["experiment"] == str(experiment) and summary["finished"] == 1
    assert (experiment / first_trials[0] / "model" / "boom_merge.json").is_file()  # kept: copied to best
    assert sorted(p.name for p in experiment.iterdir() if p.is_dir()) == first_trials
    assert all(0.1 <= w <= 1.0 for t in summary["trials"] for w in t["weights"].values())
    assert (workdir / "sweep" / BEST / SWEEP_JSON).is_file()


def test_sweep_errors_are_clear(bag_models, tmp_path):
    suite = write_suite(tmp_path / "dev_suite")
    cfg = sweep_config(bag_models, suite)
    with pytest.raises(SweepError, match="eval.dev_suites is empty"):
        run_sweep(cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"dev_suites": []})}))
    missing = cfg.model_copy(update={"bagging": cfg.bagging.model_copy(update={"ratios": [0.5, 0.7]})})
    with pytest.raises(SweepError, match="bag70"):
        run_sweep(missing)
    with pytest.raises(SweepError, match="slerp cannot merge"):
        run_sweep(sweep_config(bag_models, suite, methods=["slerp"]))
    # ties needs a base; the fallback (the raw HF model) is not saved like the bag exports
    with pytest.raises(SweepError, match=r"ties merges on top of model.name_or_path .* base_model saved like"):
        run_sweep(sweep_config(bag_models, suite, methods=["ties"]))


def test_search_space_shapes(bag_models, tmp_path):
    from ray import tune

    suite = write_suite(tmp_path / "dev_suite")
    grid = search_space(sweep_config(bag_models, suite, methods=["linear", "multislerp"]), ["bag50", "bag100"])
    assert grid["method"] == tune.grid_search(["linear", "multislerp"])
    assert grid["weights"]["bag50"] == tune.grid_search([0.2, 1.0])
    rnd = search_space(sweep_config(bag_models, suite, search="random", weight_grid=None,
                                    weight_range=[0.3, 0.9]), ["bag50"])
    dist = rnd["weights"]["bag50"]
    assert isinstance(dist, tune.search.sample.Float) and (dist.lower, dist.upper) == (0.3, 0.9)
    assert rnd["method"] == "linear"
    with pytest.raises(SweepError, match="weight_range"):
        search_space(sweep_config(bag_models, suite, weight_range=[0.9, 0.3]), ["bag50"])


@pytest.mark.parametrize("search", ["optuna", "hyperopt"])
def test_search_algorithms_or_a_clear_error(bag_models, tmp_path, search):
    import importlib.util

    cfg = sweep_config(bag_models, write_suite(tmp_path / "dev_suite"), search=search, max_concurrent=2)
    if importlib.util.find_spec(search) is None:
        with pytest.raises(SweepError, match=f"pip install {search}"):
            searcher(cfg)
    else:
        from ray.tune.search import ConcurrencyLimiter

        alg = searcher(cfg)
        assert isinstance(alg, ConcurrencyLimiter) and alg.max_concurrent == 2
    assert searcher(sweep_config(bag_models, tmp_path / "dev_suite")) is None  # grid
