"""`boom sweep`: a real Ray Tune sweep over merges of tiny Qwen3 bag models, scored on a tiny
retrieval dev suite, on the session's 2-CPU local Ray."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml

from boom_ray.cli import main as cli_main
from boom_ray.config import validate_config
from boom_ray.runtime.cluster import ClusterError
from boom_ray.sweep import BEST, SWEEP_JSON, SweepError, run_sweep, search_space, searcher

from .conftest import write_suite

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
    assert len([p for p in experiment.iterdir() if p.is_dir() and p.name != "statistics"]) == 4
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
    """Every trial fails (with keep_trial_models, writing its model with a merge memory budget too
    small); the same sweep with enough memory resumes that experiment, re-running the errored trial
    (random search, 1 sample); the trial's model stays where it is and best/ gets a copy."""
    workdir = tmp_path / "run"
    shutil.copytree(bag_models / "models", workdir / "models")
    suite = write_suite(tmp_path / "dev_suite")
    cfg = sweep_config(workdir, suite, search="random", weight_grid=None, num_samples=1)
    keep = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"keep_trial_models": True})})
    starved = keep.model_copy(update={"merge": cfg.merge.model_copy(update={"memory_budget": 100})})
    with pytest.raises(SweepError, match="no trial of .* finished"):
        run_sweep(starved)
    experiment = next((workdir / "sweep").glob("sweep-*"))
    first_trials = sorted(p.name for p in experiment.iterdir() if p.is_dir() and p.name != "statistics")
    summary = run_sweep(keep)
    assert summary["experiment"] == str(experiment) and summary["finished"] == 1
    assert (experiment / first_trials[0] / "model" / "boom_merge.json").is_file()  # kept: copied to best
    assert sorted(p.name for p in experiment.iterdir() if p.is_dir() and p.name != "statistics") == first_trials
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
    from ray import tune  # lazy: ray

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
    cfg = sweep_config(bag_models, write_suite(tmp_path / "dev_suite"), search=search, max_concurrent=2)
    if importlib.util.find_spec(search) is None:
        with pytest.raises(SweepError, match=f"pip install {search}"):
            searcher(cfg)
    else:
        from ray.tune.search import ConcurrencyLimiter  # lazy: ray

        alg = searcher(cfg)
        assert isinstance(alg, ConcurrencyLimiter) and alg.max_concurrent == 2
    assert searcher(sweep_config(bag_models, tmp_path / "dev_suite")) is None  # grid


def test_asha_scores_a_sample_first_and_keeps_a_fully_scored_best(ray_session, bag_models, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(bag_models / "models", workdir / "models")
    cfg = sweep_config(workdir, write_suite(tmp_path / "dev_suite"), search="grid", weight_grid=[0.1, 0.5, 1.0],
                       methods=["multislerp"], scheduler="asha", sample_fraction=0.5, max_concurrent=1)
    summary = run_sweep(cfg)
    trials = summary["trials"]
    assert len(trials) == 9 and {t["status"] for t in trials} <= {"done", "stopped early"}
    assert trials[0]["status"] == "done" and summary["score"] == trials[0]["score"]
    experiment = Path(summary["experiment"])
    assert (experiment / "statistics" / "multislerp.npz").is_file()  # computed once, beside the experiment
    results = [json.loads(line) for p in experiment.glob("*/result.json") for line in p.read_text().splitlines()]
    assert {r["stage"] for r in results} == {"sample", "full"}
    # the written best is the trial's model: its merge manifest has the trial's weights
    merged = json.loads((workdir / "sweep" / BEST / "boom_merge.json").read_text())
    assert [m["parameters"]["weight"] for m in merged["models"]] == [summary["weights"]["bag50"],
                                                                      summary["weights"]["bag100"]]


def test_a_trial_bundle_no_node_holds_fails_before_any_trial(ray_session, bag_models, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(bag_models / "models", workdir / "models")
    cfg = sweep_config(workdir, write_suite(tmp_path / "dev_suite"), trial_cpus=3)  # the session Ray has 2
    with pytest.raises(ClusterError, match=r"sweep.trial_cpus / eval.encoder_gpus asks for CPU=3 per trial, "
                                           r"which no node of this Ray cluster holds"):
        run_sweep(cfg)
    assert not list((workdir / "sweep").glob("sweep-*/*"))  # no trial started
