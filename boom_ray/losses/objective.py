"""The training objective of one micro-batch, as `train` configures it: what the loop calls.

    loss = training_loss(q, p, micro, cfg.train, gather=...)

InfoNCE (`loss.py`), or a distillation loss when `train.kd_loss` is set (`kd_loss.py`), over the
candidates of `loss.candidate_logits` (false negatives masked unless
`train.mask_false_negatives: false`), summed over the Matryoshka sizes when
`train.matryoshka_dims` is set (`matryoshka.py`). One function for every caller (the plain loop,
GradCache's loss on cached embeddings), so they cannot disagree on what is optimised.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from boom_ray.config import TrainConfig
from boom_ray.errors import BoomError
from boom_ray.losses.distillation import distillation_loss
from boom_ray.losses.info_nce import info_nce_loss
from boom_ray.losses.matryoshka import matryoshka_loss


def training_loss(q: Tensor, p: Tensor, micro: Any, train: TrainConfig, gather: bool = False) -> Tensor:
    """Mean loss of this rank's rows. `micro` carries `in_batch`, `passage_ids` and
    `teacher_scores` (a `train.feed.MicroBatch`, or anything with those attributes)."""
    ids = getattr(micro, "passage_ids", None) if train.mask_false_negatives else None
    scores = getattr(micro, "teacher_scores", None)
    if train.kd_loss is not None and scores is None:
        raise BoomError("train.kd_loss is set but the batch carries no teacher scores")

    def loss(qd: Tensor, pd: Tensor) -> Tensor:
        if train.kd_loss is not None:
            return distillation_loss(train.kd_loss, qd, pd, scores, train.temperature, train.kd_temperature,
                                     micro.in_batch, gather, ids)
        return info_nce_loss(qd, pd, train.temperature, micro.in_batch, gather, ids)

    return matryoshka_loss(loss, q, p, train.matryoshka_dims, train.matryoshka_weights)
