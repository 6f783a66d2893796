"""Pure scoring functions: embeddings and labels in, numbers out. No model, no files.

Retrieval follows BEIR / pytrec_eval conventions: linear gain nDCG (gain = graded relevance,
discount log2(rank + 1)), a document counts as relevant when its grade is > 0, and queries
without any relevant document are left out of the means (their metrics are undefined).
Exact search keeps a running top-k per query while corpus chunks stream by, so memory is
bounded by queries x (k + chunk) scores however large the corpus.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from threadpoolctl import threadpool_limits


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class TopK:
    """Running exact top-k (by cosine) of every query over corpus chunks fed in any order.

    Equal scores rank by corpus index; which of several documents tied exactly at the k-th score
    stays in the top-k is not specified (it never changes nDCG@10 / MRR@10 with k = 100)."""

    def __init__(self, queries: np.ndarray, k: int, query_chunk: int = 1024):
        self.queries = l2_normalize(queries)
        self.k = k
        self.query_chunk = query_chunk
        n = len(self.queries)
        self.scores = np.full((n, 0), -np.inf, dtype=np.float32)
        self.indices = np.zeros((n, 0), dtype=np.int64)

    def update(self, docs: np.ndarray, doc_indices: np.ndarray) -> None:
        docs = l2_normalize(docs)
        doc_indices = np.asarray(doc_indices, dtype=np.int64)
        new_scores, new_indices = [], []
        for start in range(0, len(self.queries), self.query_chunk):
            sl = slice(start, start + self.query_chunk)
            sims = self.queries[sl] @ docs.T
            scores = np.concatenate([self.scores[sl], sims], axis=1)
            indices = np.concatenate([self.indices[sl], np.broadcast_to(doc_indices, sims.shape)], axis=1)
            if scores.shape[1] > 2 * self.k:  # select first (linear time), then sort only k per query
                part = np.argpartition(-scores, self.k - 1, axis=1)[:, :self.k]
                scores = np.take_along_axis(scores, part, axis=1)
                indices = np.take_along_axis(indices, part, axis=1)
            # Best score first; equal scores by corpus index, so ties do not depend on chunking.
            order = np.lexsort((indices, -scores), axis=1)[:, :self.k]
            new_scores.append(np.take_along_axis(scores, order, axis=1))
            new_indices.append(np.take_along_axis(indices, order, axis=1))
        if new_scores:
            self.scores = np.concatenate(new_scores)
            self.indices = np.concatenate(new_indices)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, corpus indices), each queries x min(k, corpus size), best first."""
        return self.scores, self.indices


def exact_search(queries: np.ndarray, corpus: np.ndarray, k: int, corpus_chunk: int = 50_000,
                 query_chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-k corpus indices per query by cosine, computed chunk by chunk."""
    top = TopK(queries, k, query_chunk)
    for start in range(0, len(corpus), corpus_chunk):
        chunk = corpus[start:start + corpus_chunk]
        top.update(chunk, np.arange(start, start + len(chunk)))
    return top.result()


def retrieval_metrics(ranked: Sequence[Sequence[str]], qrels: Sequence[dict[str, int]],
                      ndcg_k: int = 10, mrr_k: int = 10, recall_k: int = 100, per_unit: bool = False
                      ) -> dict[str, Any]:
    """Mean nDCG@k, MRR@k and Recall@k over queries with at least one relevant document.

    `ranked[i]` is query i's ranked corpus ids (best first); `qrels[i]` its graded judgements.
    With `per_unit`, ``units`` holds each evaluated query's nDCG@k (what a bootstrap resamples;
    `boom_ray.eval.stats`)."""
    ndcgs, mrrs, recalls = [], [], []
    for docs, rels in zip(ranked, qrels):
        relevant = {d for d, g in rels.items() if g > 0}
        if not relevant:
            continue
        gains = [max(rels.get(d, 0), 0) for d in docs[:ndcg_k]]
        dcg = sum(g / np.log2(r + 2) for r, g in enumerate(gains))
        ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:ndcg_k]
        idcg = sum(g / np.log2(r + 2) for r, g in enumerate(ideal))
        ndcgs.append(dcg / idcg)
        first = next((r for r, d in enumerate(docs[:mrr_k]) if d in relevant), None)
        mrrs.append(0.0 if first is None else 1.0 / (first + 1))
        recalls.append(len(relevant.intersection(docs[:recall_k])) / len(relevant))
    if not ndcgs:
        raise ValueError("no query has a relevant document")
    out: dict[str, Any] = {f"ndcg@{ndcg_k}": float(np.mean(ndcgs)), f"mrr@{mrr_k}": float(np.mean(mrrs)),
                           f"recall@{recall_k}": float(np.mean(recalls)), "num_queries": len(ndcgs)}
    if per_unit:
        out["units"] = {"statistic": "mean", "values": [float(v) for v in ndcgs]}
    return out


def _one_thread():
    """scikit-learn's OpenMP/BLAS pools on one thread. With torch loaded the process holds two libgomp
    copies plus OpenBLAS, and on a busy machine their spinning threads made k-means on 500 x 384
    twenty times slower (3.7 s vs 0.18 s measured); these fits are small next to the embedding."""
    return threadpool_limits(limits=1)


def sts_metrics(emb1: np.ndarray, emb2: np.ndarray, gold: Sequence[float], per_unit: bool = False
                ) -> dict[str, Any]:
    """Spearman (main) and Pearson correlation of pairwise cosine with the gold scores; with
    `per_unit`, ``units`` holds each pair's cosine and gold score."""
    from scipy.stats import pearsonr, spearmanr  # lazy: scipy (1.4 s); the CLI imports eval/ without scoring

    cos = np.sum(l2_normalize(emb1) * l2_normalize(emb2), axis=1)
    gold_arr = np.asarray(gold, dtype=np.float64)
    out: dict[str, Any] = {"spearman": float(spearmanr(cos, gold_arr).statistic),
                           "pearson": float(pearsonr(cos, gold_arr).statistic), "num_pairs": len(gold_arr)}
    if per_unit:
        out["units"] = {"statistic": "spearman", "x": [float(v) for v in cos], "y": gold_arr.tolist()}
    return out


def classification_metrics(train_emb: np.ndarray, train_labels: Sequence[Any], test_emb: np.ndarray,
                           test_labels: Sequence[Any], seed: int = 42, max_iter: int = 1000,
                           per_unit: bool = False) -> dict[str, Any]:
    """Logistic regression fitted on the train embeddings, scored on the test ones (MTEB's linear probe)."""
    from sklearn.linear_model import LogisticRegression  # lazy: sklearn (2 s); the CLI imports eval/ without scoring
    from sklearn.metrics import accuracy_score, f1_score  # lazy: sklearn; as above

    clf = LogisticRegression(max_iter=max_iter, random_state=seed)
    with _one_thread():
        clf.fit(np.asarray(train_emb, dtype=np.float64), [str(x) for x in train_labels])
        pred = clf.predict(np.asarray(test_emb, dtype=np.float64))
    gold = [str(x) for x in test_labels]
    out: dict[str, Any] = {"accuracy": float(accuracy_score(gold, pred)),
                           "f1_macro": float(f1_score(gold, pred, average="macro")), "num_test": len(gold)}
    if per_unit:  # each test item right (1) or wrong (0): accuracy is their mean
        out["units"] = {"statistic": "mean", "values": [float(p == g) for p, g in zip(pred, gold)]}
    return out


def clustering_metrics(emb: np.ndarray, labels: Sequence[Any], seed: int = 42, per_unit: bool = False
                       ) -> dict[str, Any]:
    """k-means with k = number of distinct labels (seeded, on unit vectors), scored by V-measure;
    with `per_unit`, ``units`` holds each text's cluster and gold label (the clustering is not
    refitted on a bootstrap resample, only re-scored)."""
    from sklearn.cluster import KMeans  # lazy: sklearn (2 s); the CLI imports eval/ without scoring
    from sklearn.metrics import v_measure_score  # lazy: sklearn; as above

    gold = [str(x) for x in labels]
    k = len(set(gold))
    with _one_thread():
        pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(l2_normalize(emb).astype(np.float64))
    out: dict[str, Any] = {"v_measure": float(v_measure_score(gold, pred)), "num_clusters": k,
                           "num_texts": len(gold)}
    if per_unit:
        out["units"] = {"statistic": "v_measure", "pred": [int(p) for p in pred], "gold": gold}
    return out
