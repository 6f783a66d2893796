"""A seeded fraction of a suite, for scoring a sweep trial cheaply before scoring it in full
(early stopping: a trial that is already behind on the sample is not embedded on everything).

What is kept: retrieval, that fraction of the queries plus every document relevant to a kept
query and that fraction of the other documents (so the task stays a search among distractors);
STS, that fraction of the pairs; classification and clustering, that fraction of each label's
texts (at least one per label, so no class vanishes).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from boom_ray.eval.suites import ClassificationSuite, ClusteringSuite, RetrievalSuite, STSSuite, Suite


def _pick(n: int, fraction: float, rng: np.random.Generator) -> list[int]:
    k = min(n, max(2, round(n * fraction)))
    return sorted(rng.choice(n, size=k, replace=False).tolist())


def _pick_per_label(labels: Sequence, fraction: float, rng: np.random.Generator) -> list[int]:
    """That fraction of each label's items (at least one each), so no class or cluster vanishes."""
    by_label: dict = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    keep = []
    for items in by_label.values():
        k = min(len(items), max(1, round(len(items) * fraction)))
        keep.extend(rng.choice(items, size=k, replace=False).tolist())
    return sorted(keep)


def _take(items: Sequence, keep: list[int]) -> list:
    return [items[i] for i in keep]


def sample_suite(suite: Suite, fraction: float, seed: int = 0) -> Suite:
    """The sampled copy of `suite` (the suite itself when `fraction` >= 1)."""
    if fraction >= 1:
        return suite
    rng = np.random.default_rng([seed, len(suite.name)])
    if isinstance(suite, RetrievalSuite):
        queries = _pick(len(suite.query_ids), fraction, rng)
        query_ids = _take(suite.query_ids, queries)
        relevant = {d for q in query_ids for d in suite.qrels.get(q, {})}
        others = [i for i, d in enumerate(suite.corpus_ids) if d not in relevant]
        kept_others = set(_take(others, _pick(len(others), fraction, rng))) if others else set()
        docs = [i for i, d in enumerate(suite.corpus_ids) if d in relevant or i in kept_others]
        return dataclasses.replace(suite, query_ids=query_ids, query_texts=_take(suite.query_texts, queries),
                                   qrels={q: suite.qrels[q] for q in query_ids if q in suite.qrels},
                                   corpus_ids=_take(suite.corpus_ids, docs),
                                   corpus_texts=_take(suite.corpus_texts, docs))
    if isinstance(suite, STSSuite):
        keep = _pick(len(suite.scores), fraction, rng)
        return dataclasses.replace(suite, sentences1=_take(suite.sentences1, keep),
                                   sentences2=_take(suite.sentences2, keep), scores=_take(suite.scores, keep))
    if isinstance(suite, ClassificationSuite):
        train = _pick_per_label(suite.train_labels, fraction, rng)
        test = _pick_per_label(suite.test_labels, fraction, rng)
        return dataclasses.replace(suite, train_texts=_take(suite.train_texts, train),
                                   train_labels=_take(suite.train_labels, train),
                                   test_texts=_take(suite.test_texts, test), test_labels=_take(suite.test_labels, test))
    if isinstance(suite, ClusteringSuite):
        keep = _pick_per_label(suite.labels, fraction, rng)
        return dataclasses.replace(suite, texts=_take(suite.texts, keep), labels=_take(suite.labels, keep))
    raise TypeError(f"unknown suite type {type(suite).__name__}")
