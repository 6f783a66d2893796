"""Results in mteb's TaskResult layout, checked by loading them with mteb's own TaskResult class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from boom_ray.cli import main as boom
from boom_ray.eval.mteb_results import metric_names, task_result

mteb = pytest.importorskip("mteb")
from mteb.results import TaskResult  # noqa: E402


def test_metric_names_follow_mteb():
    assert metric_names("ndcg@10") == ["ndcg_at_10"] and metric_names("recall@100") == ["recall_at_100"]
    assert metric_names("spearman") == ["cosine_spearman", "spearman"] and metric_names("f1_macro") == ["f1"]


def test_task_result_dict_validates():
    entry = {"name": "topics", "main": 0.75, "seconds": 1.5,
             "metrics": {"accuracy": 0.75, "f1_macro": 0.7, "num_test": 4}, "units": {"values": [1, 0, 1, 1]}}
    res = TaskResult.from_dict(task_result(entry, version="2.0.0"))
    assert res.task_name == "topics" and res.get_score() == 0.75 and res.evaluation_time == 1.5
    scores = res.scores["test"][0]
    assert scores["f1"] == 0.7 and scores["hf_subset"] == "default" and scores["languages"] == ["eng-Latn"]
    assert "units" not in scores and "values" not in json.dumps(res.scores)


def test_boom_eval_writes_task_results_mteb_loads(tmp_path, kit, minilm_path):
    ret = kit.make_retrieval_suite(tmp_path / "ret")
    sts = kit.make_sts_suite(tmp_path / "sts", {"domain": "in"})
    out, mteb_dir = tmp_path / "results.json", tmp_path / "mteb"
    assert boom(["eval", "--model", str(minilm_path), "--suite", str(ret), "--suite", str(sts), "--out", str(out),
                 "--mteb-dir", str(mteb_dir), "--batch-size", "4"]) == 0
    ours = {s["name"]: s for s in json.loads(out.read_text())["suites"]}
    assert sorted(p.name for p in mteb_dir.iterdir()) == ["ret.json", "sts.json"]
    for name, entry in ours.items():
        res = TaskResult.from_disk(Path(mteb_dir / f"{name}.json"))
        assert res.task_name == name and res.mteb_version == mteb.__version__
        assert res.get_score() == pytest.approx(entry["main"])
    ret_scores = TaskResult.from_disk(mteb_dir / "ret.json").scores["test"][0]
    assert ret_scores["ndcg_at_10"] == pytest.approx(ours["ret"]["metrics"]["ndcg@10"])
    assert ret_scores["recall_at_100"] == pytest.approx(ours["ret"]["metrics"]["recall@100"])
    sts_scores = TaskResult.from_disk(mteb_dir / "sts.json").scores["test"][0]
    assert sts_scores["cosine_spearman"] == pytest.approx(ours["sts"]["main"])
