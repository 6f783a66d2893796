"""What a task's type says about how it is trained and scored, decided in this one place for
batch planning, the collator and evaluation.

A training task's type is the free-form `type` of its rows (FlagEmbedding convention):
- "symmetric" anywhere in it (symmetric_sts, symmetric_class, ...): both sides are the same kind
  of text, so the task trains on half-size global batches (DESIGN.md);
- a `*_class` or `*_clustering` type, or "no_in_batch_neg" in it: other rows' passages may share
  the row's label, so a row contrasts only with its own group, never in-batch negatives.

An evaluation suite's type is one of retrieval / sts / classification / clustering: retrieval is
asymmetric (queries carry the instruction, documents none); the others embed every text the same
way, as queries when the suite gives an instruction.
"""

from __future__ import annotations

SYMMETRIC_SUITE_TYPES = ("sts", "classification", "clustering")


def is_symmetric(task_type: str | None) -> bool:
    """Symmetric training tasks (type contains "symmetric") train on half-size global batches."""
    return bool(task_type) and "symmetric" in task_type


def uses_in_batch_negatives(task_type: str | None) -> bool:
    """Classification and clustering rows compare only against their own group: other rows'
    passages may share their label, so they would be false negatives."""
    if not task_type:
        return True
    return not (task_type.rsplit("_", 1)[-1] in ("class", "clustering") or "no_in_batch_neg" in task_type)


def is_symmetric_suite(suite_type: str) -> bool:
    """Whether a suite embeds all its texts alike (sts, classification, clustering) rather than
    queries against documents (retrieval)."""
    return suite_type in SYMMETRIC_SUITE_TYPES
