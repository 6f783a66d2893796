"""Each evaluator against numbers worked out by hand on toy suites with fixed embeddings."""

from __future__ import annotations

from math import log, log2

import numpy as np
import pytest

from boom_ray.eval import metrics
from boom_ray.eval.evaluators import evaluate_suite
from boom_ray.eval.results import score, summarize
from boom_ray.eval.suites import load_suite


def _retrieval_table():
    return {
        # documents (title + " " + text, BEIR's convention)
        "alpha": [1, 0], "T beta": [0.8, 0.6], "gamma": [0, 1], "delta": [-1, 0],
        # queries carry the instruction
        "Instruct: find\nQuery: east": [1, 0], "Instruct: find\nQuery: north": [0, 1],
        "Instruct: find\nQuery: void": [1, 1],
    }


def test_retrieval_by_hand(tmp_path, kit):
    suite = load_suite(kit.make_retrieval_suite(tmp_path / "ret", {"instruction": "find", "domain": "in"}))
    enc = kit.TableEncoder(_retrieval_table())
    out = evaluate_suite(suite, enc)
    # q1 ranks d1 (1.0), d2 (0.8), d3 (0), d4 (-1); relevant d2 (grade 1), d3 (grade 2).
    ndcg_q1 = (1 / log2(3) + 2 / log2(4)) / (2 / log2(2) + 1 / log2(3))
    # q2 ranks d3 (1.0), d2 (0.6), then d1 and d4 tie at 0 (lower corpus index first); relevant d4 at rank 4.
    ndcg_q2 = (1 / log2(5)) / 1.0
    # q3 has only a grade-0 judgement: left out. q4 has no qrels: never embedded.
    assert out["metrics"]["num_queries"] == 2
    assert out["metrics"]["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-6)
    assert out["metrics"]["mrr@10"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert out["metrics"]["recall@100"] == pytest.approx(1.0)
    assert out["main_metric"] == "ndcg@10" and out["main"] == out["metrics"]["ndcg@10"]
    assert out["domain"] == "in"
    # documents carry no prompt, queries carry the instruction
    assert "alpha" in enc.seen and "Instruct: find\nQuery: east" in enc.seen
    assert not any("unjudged" in t for t in enc.seen)


def test_retrieval_metrics_cutoffs():
    ranked = [["a", "b", "c"], ["c", "b", "a"]]
    qrels = [{"b": 1, "c": 1}, {"a": 3}]
    out = metrics.retrieval_metrics(ranked, qrels, ndcg_k=2, mrr_k=1, recall_k=1)
    assert out["recall@1"] == pytest.approx((0 / 2 + 0 / 1) / 2)
    assert out["mrr@1"] == 0.0
    ndcg_1 = (1 / log2(3)) / (1 + 1 / log2(3))
    assert out["ndcg@2"] == pytest.approx((ndcg_1 + 0.0) / 2)


def test_exact_search_in_chunks_matches_full_sort():
    rng = np.random.default_rng(0)
    q, d = rng.normal(size=(37, 8)), rng.normal(size=(501, 8))
    scores, idx = metrics.exact_search(q, d, k=20, corpus_chunk=64, query_chunk=5)
    sims = metrics.l2_normalize(q) @ metrics.l2_normalize(d).T
    want = np.argsort(-sims, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, want, axis=1), rtol=1e-5)
    # fewer documents than k: everything, ranked
    _, small = metrics.exact_search(q[:2], d[:3], k=10, corpus_chunk=2)
    assert small.shape == (2, 3)


def test_sts_spearman_by_hand(tmp_path, kit):
    suite = load_suite(kit.make_sts_suite(tmp_path / "sts"))
    enc = kit.TableEncoder({"a1": [1, 0], "a2": [2, 0], "b1": [1, 0], "b2": [0.8, 0.6],
                            "c1": [1, 0], "c2": [0, 3]})
    out = evaluate_suite(suite, enc)
    # cosines 1, 0.8, 0 rank 3, 2, 1; gold 5, 3, 4 rank 3, 1, 2: d = (0, 1, -1)
    assert out["metrics"]["spearman"] == pytest.approx(1 - 6 * 2 / (3 * (9 - 1)))
    assert out["main"] == pytest.approx(0.5)
    assert enc.seen == ["a1", "b1", "c1", "a2", "b2", "c2"]  # no instruction: texts as they are


def test_symmetric_tasks_use_instruction_as_query_prompt(tmp_path, kit):
    suite = load_suite(kit.make_sts_suite(tmp_path / "sts", {"instruction": "same?"}))
    table = {f"Instruct: same?\nQuery: {k}": v for k, v in
             {"a1": [1, 0], "a2": [1, 0], "b1": [1, 0], "b2": [0, 1], "c1": [1, 0], "c2": [1, 1]}.items()}
    enc = kit.TableEncoder(table)
    evaluate_suite(suite, enc)
    assert all(t.startswith("Instruct: same?\nQuery: ") for t in enc.seen)


def test_classification_by_hand(tmp_path, kit):
    train = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")]
    test = [("ta", "a"), ("tb", "b"), ("wrong", "b"), ("tb2", "b")]
    suite = load_suite(kit.make_text_suite(tmp_path / "cls", "classification", train, test))
    enc = kit.TableEncoder({"a1": [1, 0], "a2": [0.9, 0.1], "b1": [-1, 0], "b2": [-0.9, -0.1],
                            "ta": [0.8, 0.2], "tb": [-0.8, 0], "wrong": [0.7, 0.1], "tb2": [-1, 0.1]})
    out = evaluate_suite(suite, enc)
    # predictions a, b, a, b against gold a, b, b, b
    f1_a = 2 * (1 / 2 * 1) / (1 / 2 + 1)
    f1_b = 2 * (1 * 2 / 3) / (1 + 2 / 3)
    assert out["metrics"]["accuracy"] == pytest.approx(3 / 4)
    assert out["metrics"]["f1_macro"] == pytest.approx((f1_a + f1_b) / 2)


def _entropy(*p):
    return -sum(x * log(x) for x in p if x > 0)


def test_clustering_v_measure_by_hand(tmp_path, kit):
    test = [("p1", "x"), ("p2", "x"), ("p3", "y"), ("p4", "y"), ("p5", "y"), ("p6", "y")]
    suite = load_suite(kit.make_text_suite(tmp_path / "clu", "clustering", None, test))
    enc = kit.TableEncoder({"p1": [1, 0], "p2": [1, 0.01], "p3": [1, -0.01],
                            "p4": [0, 1], "p5": [0.01, 1], "p6": [-0.01, 1]})
    out = evaluate_suite(suite, enc)
    # clusters {p1,p2,p3} and {p4,p5,p6}; classes x = {p1,p2}, y = {p3..p6}
    h = 1 - (3 / 6 * _entropy(2 / 3, 1 / 3)) / _entropy(2 / 6, 4 / 6)
    c = 1 - (4 / 6 * _entropy(1 / 4, 3 / 4)) / _entropy(1 / 2, 1 / 2)
    assert out["metrics"]["num_clusters"] == 2
    assert out["main"] == pytest.approx(2 * h * c / (h + c))


def test_summary_and_objectives():
    suites = [
        {"name": "r1", "domain": "in", "main": 0.5, "metrics": {"ndcg@10": 0.5, "mrr@10": 0.4}},
        {"name": "r2", "domain": "out", "main": 0.3, "metrics": {"ndcg@10": 0.3, "mrr@10": 0.2}},
        {"name": "s1", "domain": "out", "main": 0.9, "metrics": {"spearman": 0.9}},
    ]
    res = summarize("m", suites)
    assert res["id_mean"] == pytest.approx(0.5) and res["ood_mean"] == pytest.approx(0.6)
    assert score(res, "ood_mean/ndcg@10") == pytest.approx(0.3)
    assert score(res, "ood_mean") == pytest.approx(0.6)
    assert score(res, "mean/mrr@10") == pytest.approx(0.3)
    assert score(res, "s1/spearman") == pytest.approx(0.9)
    with pytest.raises(Exception, match="no suite named"):
        score(res, "nope/ndcg@10")
    with pytest.raises(Exception, match="reports 'accuracy'"):
        score(res, "ood_mean/accuracy")
