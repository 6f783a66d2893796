"""Distillation from teacher scores (`train.kd_loss`), as FlagEmbedding defines its kd_loss_type.

Each row carries teacher scores for its sampled group (1 positive + hard negatives, in group
order; `pos_scores` / `neg_scores` of the corpus row). The teacher's distribution over the group
is ``softmax(teacher_scores / kd_temperature)``; kd_temperature 1 is FlagEmbedding's plain softmax.
The student's scores are the logits of :func:`boom_ray.losses.info_nce.candidate_logits` (cosine /
temperature, over the same candidates as InfoNCE: the whole global batch for rows with in-batch
negatives, the own group otherwise, false negatives masked).

* ``kl_div``: the cross-entropy of the student's softmax over the row's *own group* against the
  teacher targets, ``-mean_i sum_j t_ij log softmax(s_i,group)_j`` (KL divergence up to the
  teacher's constant entropy), ADDED to the ordinary InfoNCE loss over all candidates.
* ``m3_kd`` (BGE-M3's loss): no separate InfoNCE. For each position k of the group, the
  cross-entropy of passage k among all candidates with the group's passages 0..k-1 removed,
  weighted by the teacher's probability of k: ``sum_k mean_i t_ik CE_i,k``. With one-hot
  targets on the positive this is exactly InfoNCE.

Reference: FlagEmbedding ``abc/finetune/embedder/AbsModeling.py`` (``distill_loss``, and the
loss functions that add InfoNCE to kl_div); Chen et al. 2024 (BGE M3-Embedding), section 3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from boom_ray.losses.info_nce import candidate_logits

KD_LOSSES = ("kl_div", "m3_kd")


def teacher_targets(teacher_scores: Tensor, kd_temperature: float = 1.0) -> Tensor:
    """[B, G] teacher probabilities over each row's group (at least fp32)."""
    scores = teacher_scores.detach()
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    return torch.softmax(scores / kd_temperature, dim=-1)


def own_group_scores(logits: Tensor, labels: Tensor, group_size: int) -> Tensor:
    """[B, G] the student's logits for each row's own group (its positive first)."""
    cols = labels.unsqueeze(1) + torch.arange(group_size, device=logits.device)
    return logits.gather(1, cols)


def kl_div_term(logits: Tensor, labels: Tensor, group_size: int, targets: Tensor) -> Tensor:
    local = own_group_scores(logits, labels, group_size)
    return -(targets * torch.log_softmax(local, dim=-1)).sum(dim=-1).mean()


def m3_kd_term(logits: Tensor, labels: Tensor, group_size: int, targets: Tensor) -> Tensor:
    loss = logits.new_zeros(())
    masked = logits
    for k in range(group_size):
        target = labels + k
        loss = loss + (targets[:, k] * F.cross_entropy(masked, target, reduction="none")).mean()
        masked = masked.masked_fill(F.one_hot(target, logits.shape[1]).bool(), float("-inf"))
    return loss


def distillation_loss(kind: str, q: Tensor, p: Tensor, teacher_scores: Tensor, temperature: float,
                      kd_temperature: float = 1.0, in_batch: Tensor | None = None, gather: bool = False,
                      passage_ids: Tensor | None = None) -> Tensor:
    """Mean loss of this rank's rows for `kind` (kl_div or m3_kd); teacher_scores: [B, G]."""
    if kind not in KD_LOSSES:
        raise ValueError(f"unknown kd_loss {kind!r}; choose one of {', '.join(KD_LOSSES)}")
    logits, labels, g = candidate_logits(q, p, temperature, in_batch, gather, passage_ids)
    if teacher_scores.shape != (q.shape[0], g):
        raise ValueError(f"teacher scores of shape {tuple(teacher_scores.shape)} for {q.shape[0]} rows of "
                         f"{g} passages")
    targets = teacher_targets(teacher_scores.to(logits.device), kd_temperature).to(logits.dtype)
    if kind == "kl_div":
        return F.cross_entropy(logits, labels) + kl_div_term(logits, labels, g, targets)
    return m3_kd_term(logits, labels, g, targets)
