"""Turn a micro-batch of corpus rows into model inputs for the contrastive loss.

A row is ``{"query", "pos", "neg", "prompt"?, "type"?}`` (FlagEmbedding format). Each row
becomes one query text (the instruction template, the row's own ``prompt`` overriding the
default instruction) and a group of ``group_size`` passages: 1 positive then
``group_size - 1`` negatives, laid out row after row as :func:`boom_ray.losses.info_nce.info_nce_loss`
expects.

Sampling (all from the caller's ``rng``, so a seeded run is reproducible):

* positive: one of ``pos`` drawn uniformly (most rows have exactly one);
* negatives: drawn without replacement when the row has enough; when it has fewer, every
  negative is used and the rest is drawn again from them (repetition), as FlagEmbedding does;
* no negatives at all: the group is filled with passages of the *other* rows of this batch
  (their positives and negatives, never a text equal to one of this row's positives). Tensors
  stay rectangular, and a row without in-batch negatives (classification / clustering) still
  has something to contrast with. A batch of one row without negatives is an error.

With distillation on (``train.kd_loss``), each sampled passage also carries its teacher score
from the row's ``pos_scores`` / ``neg_scores`` (the same indices as the texts), as a [B, group]
tensor in group order; a row without scores for what was sampled is an error naming the row.
Every passage also gets a 64-bit id (a hash of its text) so the loss can recognise copies of a
row's positive among other rows' candidates (``train.mask_false_negatives``), across ranks too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from boom_ray.corpus.task_types import uses_in_batch_negatives
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


def _sample_indices(n_pos: int, pool_size: int, group_size: int, rng: np.random.Generator
                    ) -> tuple[int, list[int]]:
    """(index of the positive, indices into the negative pool) for one row."""
    pos_index = int(rng.integers(n_pos))
    k = group_size - 1
    if k == 0:
        return pos_index, []
    if not pool_size:
        raise ValueError("no negatives and no other passages in the batch to fill the group")
    if pool_size >= k:
        picks = rng.choice(pool_size, size=k, replace=False)
    else:
        extra = rng.choice(pool_size, size=k - pool_size, replace=True)
        picks = np.concatenate([rng.permutation(pool_size), extra])
    return pos_index, [int(i) for i in picks]


def sample_group(pos: Sequence[str], neg: Sequence[str], group_size: int, rng: np.random.Generator,
                 fallback: Sequence[str] = ()) -> list[str]:
    """[positive, negative_1 .. negative_{group_size-1}] for one row (see module docstring)."""
    pool = list(neg) or [t for t in fallback if t not in set(pos)]
    pos_index, picks = _sample_indices(len(pos), len(pool), group_size, rng)
    return [pos[pos_index]] + [pool[i] for i in picks]


def passage_id(text: str) -> int:
    """A passage's identity across rows and ranks: a signed 64-bit hash of its text."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


@dataclass
class Collated:
    query_features: dict[str, torch.Tensor]
    passage_features: dict[str, torch.Tensor]
    in_batch: torch.Tensor
    """[B] bool: whether the row also competes against other rows' passages."""
    passage_ids: torch.Tensor
    """[B*group] int64: `passage_id` of every passage."""
    teacher_scores: torch.Tensor | None = None
    """[B, group] float: teacher scores of the sampled passages (only with `teacher_scores=True`)."""


def _row_scores(row: Mapping[str, Any], i: int, pos_index: int, picks: list[int], used_fallback: bool) -> list[float]:
    pos_scores, neg_scores = row.get("pos_scores"), row.get("neg_scores")
    if pos_scores is None or (picks and (neg_scores is None or used_fallback)):
        raise BatchRowError(f"training row {i} of the batch (query {str(row.get('query'))[:60]!r}): train.kd_loss "
                            f"needs teacher scores for every sampled passage (pos_scores and neg_scores, and "
                            f"negatives of its own)")
    return [float(pos_scores[pos_index])] + [float(neg_scores[j]) for j in picks]


def collate(rows: Any, embedder, group_size: int, rng: np.random.Generator, max_query_length: int | None = None,
            max_doc_length: int | None = None, teacher_scores: bool = False) -> Collated:
    """Features, in-batch flags, passage ids and (with `teacher_scores`) the teacher scores of a
    micro-batch. Lengths default to the embedder's ModelConfig ``max_query_length`` / ``max_doc_length``."""
    rows = rows_from_batch(rows)
    if not rows:
        raise BatchRowError("build_features: empty batch")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    queries, passages, in_batch, scores = [], [], [], []
    all_passages = [[*_texts(r.get("pos")), *_texts(r.get("neg"))] for r in rows]
    for i, row in enumerate(rows):
        query, pos, neg = row.get("query"), _texts(row.get("pos")), _texts(row.get("neg"))
        if not isinstance(query, str) or not pos:
            raise BatchRowError(f"training row {i} of the batch (query {str(query)[:60]!r}): needs a "
                                f"string query and at least one positive")
        queries.append(embedder.format_query(query, _optional_str(row.get("prompt"))))
        own = set(pos)
        pool = neg or [t for j, texts in enumerate(all_passages) if j != i for t in texts if t not in own]
        try:
            pos_index, picks = _sample_indices(len(pos), len(pool), group_size, rng)
        except ValueError as exc:
            raise BatchRowError(f"training row {i} of the batch (query {query[:60]!r}): {exc}") from None
        passages.extend([pos[pos_index]] + [pool[j] for j in picks])
        if teacher_scores:
            scores.append(_row_scores(row, i, pos_index, picks, used_fallback=not neg))
        in_batch.append(uses_in_batch_negatives(_optional_str(row.get("type"))))
    cfg = embedder.config
    return Collated(embedder.tokenize(queries, max_query_length or cfg.max_query_length),
                    embedder.tokenize(passages, max_doc_length or cfg.max_doc_length),
                    torch.tensor(in_batch, dtype=torch.bool),
                    torch.tensor([passage_id(t) for t in passages], dtype=torch.int64),
                    torch.tensor(scores, dtype=torch.float32) if teacher_scores else None)


def build_features(rows: Any, embedder, group_size: int, rng: np.random.Generator,
                   max_query_length: int | None = None, max_doc_length: int | None = None,
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """(query features [B, ...], passage features [B*group_size, ...], in_batch [B] bool): the
    parts of `collate` that a plain contrastive step needs."""
    c = collate(rows, embedder, group_size, rng, max_query_length, max_doc_length)
    return c.query_features, c.passage_features, c.in_batch
