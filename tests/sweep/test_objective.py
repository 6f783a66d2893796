"""`boom sweep` checks `sweep.objective` against the dev suites before the first trial: an
objective no trial could be scored on is one line, not a sweep whose every trial fails."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from boom_ray.config import validate_config
from boom_ray.eval.evaluators import evaluate_suite
from boom_ray.eval.suites import ClassificationSuite, ClusteringSuite, STSSuite, Suite, load_suite
from boom_ray.sweep import SweepError, run_sweep
from boom_ray.sweep.space import SUITE_METRICS, check_objective

from .conftest import write_suite

SUITES = [Suite("nq", "/dev/nq", "retrieval", "in", None), Suite("sick", "/dev/sick", "sts", "in", None)]


@pytest.mark.parametrize("objective", ["id_mean/ndcg@10", "id_mean", "mean/spearman", "nq/mrr@10", "sick/main",
                                       "id_mean/pearson"])
def test_objectives_the_dev_suites_can_score(objective):
    check_objective(objective, SUITES)


@pytest.mark.parametrize("objective,message", [
    ("ood_mean/ndcg@10", r"no dev suite is out-of-domain \(eval.dev_suites: nq \(retrieval, in\), sick \(sts, in\)\)"),
    ("ood_mean", "no dev suite is out-of-domain"),
    ("scifact/ndcg@10", "no dev suite named 'scifact'"),
    ("nq/spearman", "dev suite 'nq' does not report 'spearman'"),
    ("id_mean/ndcg@5", "no in-domain dev suite reports 'ndcg@5'"),
])
def test_objectives_they_cannot_score_are_one_line(objective, message):
    with pytest.raises(SweepError, match=message) as info:
        check_objective(objective, SUITES)
    assert "\n" not in str(info.value)


def test_sweep_stops_before_the_first_trial(tmp_path):
    suite = write_suite(tmp_path / "dev")
    (suite / "suite.json").write_text(json.dumps({"type": "retrieval", "domain": "in"}))
    cfg = validate_config({"workdir": str(tmp_path / "work"), "corpus": {"path": str(tmp_path / "unused")},
                           "eval": {"dev_suites": [{"path": str(suite)}]},
                           "sweep": {"objective": "ood_mean/ndcg@10"}})
    with pytest.raises(SweepError, match="no dev suite is out-of-domain"):
        run_sweep(cfg)  # no bags, no Ray: it stops before either is looked at
    assert not (tmp_path / "work" / "sweep").exists()


def _encode(texts, prompt=None):
    return np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(8) for t in texts])


def test_suite_metrics_are_what_the_evaluators_report(tmp_path):
    texts = [f"text number {i}" for i in range(8)]
    labels = [i % 2 for i in range(8)]
    suites = [load_suite(write_suite(tmp_path / "retrieval")),
              STSSuite("s", "/s", "sts", "in", None, texts[:4], texts[4:], [0.1, 0.5, 0.7, 0.9]),
              ClassificationSuite("c", "/c", "classification", "in", None, texts, labels, texts, labels),
              ClusteringSuite("k", "/k", "clustering", "in", None, texts, labels)]
    assert {s.type for s in suites} == set(SUITE_METRICS)
    for suite in suites:
        assert set(evaluate_suite(suite, _encode)["metrics"]) == set(SUITE_METRICS[suite.type]), suite.type
