"""Suite samples for early stopping: seeded, the asked fraction, nothing a metric needs lost."""

from __future__ import annotations

from boom_ray.eval.dev_sample import sample_suite
from boom_ray.eval.suites import ClassificationSuite, ClusteringSuite, RetrievalSuite, STSSuite

BASE = dict(name="s", path="/x", domain="out", instruction=None)


def test_retrieval_sample_keeps_relevant_documents_and_some_distractors():
    ids = [f"d{i}" for i in range(100)]
    suite = RetrievalSuite(type="retrieval", corpus_ids=ids, corpus_texts=[f"text {i}" for i in range(100)],
                           query_ids=[f"q{i}" for i in range(20)], query_texts=[f"query {i}" for i in range(20)],
                           qrels={f"q{i}": {f"d{i}": 1} for i in range(20)}, **BASE)
    sample = sample_suite(suite, 0.25, seed=3)
    assert len(sample.query_ids) == 5 and set(sample.qrels) == set(sample.query_ids)
    relevant = {d for q in sample.query_ids for d in suite.qrels[q]}
    assert relevant <= set(sample.corpus_ids)
    assert 5 + 20 <= len(sample.corpus_ids) <= 5 + 25  # a quarter of the 95 others as distractors
    assert [suite.corpus_texts[suite.corpus_ids.index(d)] for d in sample.corpus_ids] == sample.corpus_texts
    assert sample_suite(suite, 0.25, seed=3) == sample and sample_suite(suite, 0.25, seed=4) != sample
    assert sample_suite(suite, 1.0) is suite


def test_labelled_samples_keep_every_label():
    labels = ["a"] * 40 + ["b"] * 4
    texts = [f"t{i}" for i in range(44)]
    cls = ClassificationSuite(type="classification", train_texts=texts, train_labels=labels,
                              test_texts=texts, test_labels=labels, **BASE)
    sample = sample_suite(cls, 0.1)
    assert set(sample.train_labels) == {"a", "b"} and len(sample.train_texts) == 5
    clu = sample_suite(ClusteringSuite(type="clustering", texts=texts, labels=labels, **BASE), 0.5)
    assert sorted(set(clu.labels)) == ["a", "b"] and len(clu.texts) == 22
    sts = sample_suite(STSSuite(type="sts", sentences1=texts, sentences2=texts, scores=list(range(44)), **BASE), 0.5)
    assert len(sts.scores) == 22 and [int(t[1:]) for t in sts.sentences1] == sts.scores
