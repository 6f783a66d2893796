"""Task-type logic: which texts of a suite get embedded, with which prompt, and which metric
function scores them. Works with any encoder: a callable ``encode(texts, prompt) -> ndarray``,
optionally with ``stream(texts, prompt)`` yielding ``(row indices, embeddings)`` chunks (used for
retrieval corpora so they are never held whole) and ``format_query(query, instruction)``.

Prompt convention (the one Qwen3-Embedding / E5-instruct use for MTEB):
- retrieval: queries are ``format_query(query, instruction)``; with no instruction the encoder
  applies what the model declares (`boom_ray.eval.prompts`), and a model that declares nothing gets
  its queries as they are; documents get ``encoder.document_prompt`` (None: no prompt).
- sts, classification, clustering (symmetric): every text is formatted as a query with the suite's
  instruction when the suite (or the CLI) gives one; without one, texts are embedded as they are.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

from boom_ray.eval import metrics
from boom_ray.eval.suites import ClassificationSuite, ClusteringSuite, RetrievalSuite, STSSuite, Suite
from boom_ray.corpus.task_types import is_symmetric_suite

MAIN_METRIC: dict[str, str] = {"retrieval": "ndcg@10", "sts": "spearman", "classification": "accuracy",
                               "clustering": "v_measure"}
RETRIEVAL_K = 100  # the deepest cut any retrieval metric needs (Recall@100)

EncodeFn = Callable[..., np.ndarray]


def default_format_query(query: str, instruction: str | None = None) -> str:
    return f"Instruct: {instruction}\nQuery: {query}" if instruction else query


def _format_query(encoder: Any) -> Callable[[str, str | None], str]:
    return getattr(encoder, "format_query", None) or default_format_query


def _stream(encoder: Any, texts: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    prompt = getattr(encoder, "document_prompt", None)
    stream = getattr(encoder, "stream", None)
    if stream is not None:
        yield from stream(texts, prompt)
    else:
        yield np.arange(len(texts)), np.asarray(encoder(list(texts), prompt))


def _symmetric_texts(encoder: Any, texts: Sequence[str], suite: Suite) -> list[str]:
    """A symmetric suite's texts, all formatted alike: as queries when the suite has an instruction."""
    if not suite.instruction or not is_symmetric_suite(suite.type):
        return list(texts)
    fmt = _format_query(encoder)
    return [fmt(t, suite.instruction) for t in texts]


def evaluate_retrieval(suite: RetrievalSuite, encoder: EncodeFn) -> dict[str, Any]:
    fmt = _format_query(encoder)
    queries = np.asarray(encoder([fmt(q, suite.instruction) for q in suite.query_texts], None))
    top = metrics.TopK(queries, RETRIEVAL_K)
    for rows, docs in _stream(encoder, suite.corpus_texts):
        top.update(docs, rows)
    _, indices = top.result()
    ranked = [[suite.corpus_ids[j] for j in row] for row in indices]
    out = metrics.retrieval_metrics(ranked, [suite.qrels[q] for q in suite.query_ids], per_unit=True)
    out["corpus_size"] = len(suite.corpus_ids)
    return out


def evaluate_sts(suite: STSSuite, encoder: EncodeFn) -> dict[str, Any]:
    texts = _symmetric_texts(encoder, suite.sentences1 + suite.sentences2, suite)
    emb = np.asarray(encoder(texts, None))
    n = len(suite.sentences1)
    return metrics.sts_metrics(emb[:n], emb[n:], suite.scores, per_unit=True)


def evaluate_classification(suite: ClassificationSuite, encoder: EncodeFn, seed: int = 42) -> dict[str, Any]:
    texts = _symmetric_texts(encoder, suite.train_texts + suite.test_texts, suite)
    emb = np.asarray(encoder(texts, None))
    n = len(suite.train_texts)
    return metrics.classification_metrics(emb[:n], suite.train_labels, emb[n:], suite.test_labels, seed=seed,
                                          per_unit=True)


def evaluate_clustering(suite: ClusteringSuite, encoder: EncodeFn, seed: int = 42) -> dict[str, Any]:
    emb = np.asarray(encoder(_symmetric_texts(encoder, suite.texts, suite), None))
    return metrics.clustering_metrics(emb, suite.labels, seed=seed, per_unit=True)


def evaluate_suite(suite: Suite, encoder: EncodeFn) -> dict[str, Any]:
    """One suite's entry of a results file: its tags, every metric, the main one, and ``units``: the
    per-query / per-pair / per-item scores a paired bootstrap resamples (`boom_ray.eval.stats`),
    kept out of the metric tables."""
    if isinstance(suite, RetrievalSuite):
        scores = evaluate_retrieval(suite, encoder)
    elif isinstance(suite, STSSuite):
        scores = evaluate_sts(suite, encoder)
    elif isinstance(suite, ClassificationSuite):
        scores = evaluate_classification(suite, encoder)
    elif isinstance(suite, ClusteringSuite):
        scores = evaluate_clustering(suite, encoder)
    else:  # pragma: no cover - load_suite only builds the four kinds
        raise TypeError(f"unknown suite type {type(suite).__name__}")
    main = MAIN_METRIC[suite.type]
    units = scores.pop("units")
    return {"name": suite.name, "path": suite.path, "type": suite.type, "domain": suite.domain,
            "instruction": suite.instruction, "main_metric": main, "main": scores[main], "metrics": scores,
            "units": units}
