"""build_features: query texts, passage groups (positive first), negative sampling, in-batch mask."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from boom_ray.model.embedder import Embedder
from boom_ray.train.collate import BatchRowError, build_features, sample_group


@pytest.fixture(scope="module")
def embedder(tiny_qwen3_path) -> Embedder:
    return Embedder.from_pretrained(str(tiny_qwen3_path), max_query_length=64, max_doc_length=24)


def _decode(embedder, features) -> list[str]:
    return embedder.tokenizer.batch_decode(features["input_ids"], skip_special_tokens=True)


ROWS = [
    {"query": "big cat", "pos": ["a lion"], "neg": ["a car", "a boat", "a tree", "a cloud"], "prompt": None,
     "type": "retrieval"},
    {"query": "red", "pos": ["crimson"], "neg": ["blue"], "prompt": "Find a synonym", "type": "synonym_class"},
    {"query": "happy", "pos": ["glad", "joyful"], "neg": [], "type": None},
]


def test_sample_group_rules():
    rng = np.random.default_rng(0)
    many = sample_group(["p"], ["n1", "n2", "n3", "n4", "n5"], 4, rng)
    assert many[0] == "p" and len(set(many[1:])) == 3 and set(many[1:]) <= {"n1", "n2", "n3", "n4", "n5"}
    few = sample_group(["p"], ["n1", "n2"], 5, rng)
    assert few[0] == "p" and sorted(set(few[1:])) == ["n1", "n2"] and len(few) == 5  # all used, then repeated
    none = sample_group(["p", "q"], [], 3, rng, fallback=["p", "x", "y"])
    assert none[0] in {"p", "q"} and set(none[1:]) <= {"x", "y"}  # never one of the row's own positives
    assert sample_group(["p"], ["n"], 1, rng) == ["p"]
    with pytest.raises(ValueError, match="no negatives"):
        sample_group(["p"], [], 2, rng, fallback=["p"])


def test_positive_drawn_from_all_positives():
    rng = np.random.default_rng(3)
    seen = {sample_group(["a", "b", "c"], ["n"], 2, rng)[0] for _ in range(60)}
    assert seen == {"a", "b", "c"}


def test_build_features_layout_and_mask(embedder):
    qf, pf, in_batch = build_features(ROWS, embedder, group_size=3, rng=np.random.default_rng(0))
    assert in_batch.tolist() == [True, False, True]  # *_class rows: own group only
    queries = _decode(embedder, qf)
    assert queries[0] == embedder.format_query("big cat")
    assert queries[1] == "Instruct: Find a synonym\nQuery: red"  # the row's own prompt wins
    passages = _decode(embedder, pf)
    assert len(passages) == 9 and pf["input_ids"].shape[1] <= 24
    assert passages[0] == "a lion" and set(passages[1:3]) <= set(ROWS[0]["neg"]) and len(set(passages[1:3])) == 2
    assert passages[3:6] == ["crimson", "blue", "blue"]  # one negative, repeated to fill the group
    assert passages[6] in {"glad", "joyful"}
    others = set(ROWS[0]["pos"] + ROWS[0]["neg"] + ROWS[1]["pos"] + ROWS[1]["neg"])
    assert set(passages[7:9]) <= others  # no negatives: filled from the other rows' passages


def test_same_seed_same_batch_and_input_formats(embedder):
    a = build_features(ROWS, embedder, 3, np.random.default_rng(7))
    b = build_features(pa.Table.from_pylist(ROWS), embedder, 3, np.random.default_rng(7))
    columns = {k: [r.get(k) for r in ROWS] for k in ("query", "pos", "neg", "prompt", "type")}
    c = build_features(columns, embedder, 3, np.random.default_rng(7))
    pandas_like = dict(columns, prompt=[float("nan"), "Find a synonym", float("nan")],
                       type=["retrieval", "synonym_class", float("nan")])  # NaN = missing
    d = build_features(pandas_like, embedder, 3, np.random.default_rng(7))
    for other in (b, c, d):
        assert torch.equal(a[0]["input_ids"], other[0]["input_ids"])
        assert torch.equal(a[1]["input_ids"], other[1]["input_ids"])
        assert torch.equal(a[2], other[2])


def test_lengths_from_config_and_override(embedder):
    long_row = [{"query": "word " * 100, "pos": ["text " * 100], "neg": ["other " * 100]}]
    qf, pf, _ = build_features(long_row, embedder, 2, np.random.default_rng(0))
    assert qf["input_ids"].shape[1] == 64 and pf["input_ids"].shape[1] == 24
    qf, pf, _ = build_features(long_row, embedder, 2, np.random.default_rng(0), max_query_length=12, max_doc_length=10)
    assert qf["input_ids"].shape[1] == 12 and pf["input_ids"].shape[1] == 10
    assert (pf["input_ids"][:, -1] == embedder.tokenizer.eos_token_id).all()


def test_bad_rows_name_the_row(embedder):
    with pytest.raises(BatchRowError, match="row 1 .*'oops'.*positive"):
        build_features([ROWS[0], {"query": "oops", "pos": [], "neg": ["x"]}], embedder, 2, np.random.default_rng(0))
    with pytest.raises(BatchRowError, match="row 0 .*no negatives"):
        build_features([{"query": "alone", "pos": ["p"], "neg": []}], embedder, 2, np.random.default_rng(0))
    with pytest.raises(BatchRowError, match="empty batch"):
        build_features([], embedder, 2, np.random.default_rng(0))


def test_collate_carries_the_teacher_scores_of_the_sampled_passages(embedder):
    """Each group's teacher scores are those of the very passages sampled (by text), in group
    order, and every passage's id is the hash of its text, equal for equal texts."""
    from boom_ray.train.collate import collate, passage_id

    rows = [{"query": "q0", "pos": ["p0a", "p0b"], "neg": ["n0", "n1", "n2"], "pos_scores": [0.9, 0.8],
             "neg_scores": [0.1, 0.2, 0.3]},
            {"query": "q1", "pos": ["n0"], "neg": ["m0"], "pos_scores": [5.0], "neg_scores": [-1.0]}]
    score_of = {"p0a": 0.9, "p0b": 0.8, "n0": 0.1, "n1": 0.2, "n2": 0.3}
    for seed in range(5):
        c = collate(rows, embedder, 3, np.random.default_rng(seed), teacher_scores=True)
        texts = _decode(embedder, c.passage_features)
        assert c.teacher_scores.shape == (2, 3)
        assert c.teacher_scores[0].tolist() == pytest.approx([score_of[t] for t in texts[:3]])
        assert c.teacher_scores[1].tolist() == [5.0, -1.0, -1.0]  # one negative, repeated
        assert c.passage_ids.tolist() == [passage_id(t) for t in texts]
    assert passage_id("n0") == passage_id("n0") != passage_id("n1")
    assert collate(rows, embedder, 3, np.random.default_rng(0)).teacher_scores is None


def test_collate_without_teacher_scores_for_a_sampled_passage_names_the_row(embedder):
    from boom_ray.train.collate import collate

    rows = [{"query": "q0", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0], "neg_scores": [0.0]},
            {"query": "no scores", "pos": ["p2"], "neg": ["n2"]},
            {"query": "fallback", "pos": ["p3"], "neg": [], "pos_scores": [1.0], "neg_scores": []}]
    with pytest.raises(BatchRowError, match="row 1 .*no scores.*teacher scores"):
        collate(rows[:2], embedder, 2, np.random.default_rng(0), teacher_scores=True)
    with pytest.raises(BatchRowError, match="row 1 .*fallback.*negatives of its own"):
        collate([rows[0], rows[2]], embedder, 2, np.random.default_rng(0), teacher_scores=True)
    assert collate([rows[0], rows[2]], embedder, 1, np.random.default_rng(0), teacher_scores=True
                   ).teacher_scores.tolist() == [[1.0], [1.0]]
