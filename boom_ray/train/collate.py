"""Turn a micro-batch of corpus rows into model inputs for the contrastive loss.

A row is ``{"query", "pos", "neg", "prompt"?, "type"?}`` (FlagEmbedding format). Each row
becomes one query text (the instruction template, the row's own ``prompt`` overriding the
default instruction) and a group of ``group_size`` passages: 1 positive then
``group_size - 1`` negatives, laid out row after row as :func:`boom_ray.model.loss.info_nce_loss`
expects.

Sampling (all from the caller's ``rng``, so a seeded run is reproducible):

* positive: one of ``pos`` drawn uniformly (most rows have exactly one);
* negatives: drawn without replacement when the row has enough; when it has fewer, every
  negative is used and the rest is drawn again from them (repetition), as FlagEmbedding does;
* no negatives at all: the group is filled with passages of the *other* rows of this batch
  (their positives and negatives, never a text equal to one of this row's positives). Tensors
  stay rectangular, and a row without in-batch negatives (classification / clustering) still
  has something to contrast with. A batch of one row without negatives is an error.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from boom_ray.tasks import uses_in_batch_negatives
from boom_ray.errors import BoomError


class BatchRowError(BoomError):
    """A training row that cannot be turned into a query / passage group; names the row."""


def rows_from_batch(batch: Any) -> list[Mapping[str, Any]]:
    """Rows as dicts from a list of dicts, a pyarrow Table/RecordBatch, or a column dict
    (Ray Data's ``numpy``/``pandas``-free batch format)."""
    if hasattr(batch, "to_pylist"):
        return batch.to_pylist()
    if isinstance(batch, Mapping):
        columns = {k: list(v) for k, v in batch.items()}
        n = len(next(iter(columns.values()))) if columns else 0
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    return list(batch)


def _optional_str(value: Any) -> str | None:
    """A non-empty string, else None (missing keys, None, and pandas' NaN for missing values)."""
    return value if isinstance(value, str) and value else None


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in list(value)]


def sample_group(pos: Sequence[str], neg: Sequence[str], group_size: int, rng: np.random.Generator,
                 fallback: Sequence[str] = ()) -> list[str]:
    """[positive, negative_1 .. negative_{group_size-1}] for one row (see module docstring)."""
    passages = [pos[int(rng.integers(len(pos)))]]
    k = group_size - 1
    if k == 0:
        return passages
    pool = list(neg)
    if not pool:
        own = set(pos)
        pool = [t for t in fallback if t not in own]
        if not pool:
            raise ValueError("no negatives and no other passages in the batch to fill the group")
    if len(pool) >= k:
        picks = rng.choice(len(pool), size=k, replace=False)
    else:
        extra = rng.choice(len(pool), size=k - len(pool), replace=True)
        picks = np.concatenate([rng.permutation(len(pool)), extra])
    return passages + [pool[int(i)] for i in picks]


def build_features(rows: Any, embedder, group_size: int, rng: np.random.Generator,
                   max_query_length: int | None = None, max_doc_length: int | None = None,
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """(query features [B, ...], passage features [B*group_size, ...], in_batch [B] bool).

    Lengths default to the embedder's ModelConfig ``max_query_length`` / ``max_doc_length``."""
    rows = rows_from_batch(rows)
    if not rows:
        raise BatchRowError("build_features: empty batch")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    queries, passages, in_batch = [], [], []
    all_passages = [[*_texts(r.get("pos")), *_texts(r.get("neg"))] for r in rows]
    for i, row in enumerate(rows):
        query, pos = row.get("query"), _texts(row.get("pos"))
        if not isinstance(query, str) or not pos:
            raise BatchRowError(f"training row {i} of the batch (query {str(query)[:60]!r}): needs a "
                                f"string query and at least one positive")
        queries.append(embedder.format_query(query, _optional_str(row.get("prompt"))))
        others = [t for j, texts in enumerate(all_passages) if j != i for t in texts]
        try:
            passages.extend(sample_group(pos, _texts(row.get("neg")), group_size, rng, fallback=others))
        except ValueError as exc:
            raise BatchRowError(f"training row {i} of the batch (query {query[:60]!r}): {exc}") from None
        in_batch.append(uses_in_batch_negatives(_optional_str(row.get("type"))))
    cfg = embedder.config
    q_features = embedder.tokenize(queries, max_query_length or cfg.max_query_length)
    p_features = embedder.tokenize(passages, max_doc_length or cfg.max_doc_length)
    return q_features, p_features, torch.tensor(in_batch, dtype=torch.bool)
