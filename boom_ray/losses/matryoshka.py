"""Matryoshka representation learning (Kusupati et al. 2022; sentence-transformers MatryoshkaLoss).

The loss is the weighted sum of the same loss computed on embeddings truncated to each size of
`train.matryoshka_dims` (the first d coordinates) and L2-renormalised, so that the leading
coordinates of the trained model form a good embedding on their own. As in sentence-transformers,
only the listed sizes are trained: list the full dimension too to keep training it. At inference
the sentence-transformers equivalent is ``SentenceTransformer(path, truncate_dim=d)`` followed by
cosine similarity (which renormalises); `eval.dims` scores exactly that.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor


def truncate(x: Tensor, dim: int) -> Tensor:
    """The first `dim` coordinates of each embedding, renormalised to unit length."""
    if not 0 < dim <= x.shape[-1]:
        raise ValueError(f"cannot truncate {x.shape[-1]}-dimensional embeddings to {dim}")
    return F.normalize(x[..., :dim], dim=-1)


def matryoshka_loss(loss_fn: Callable[[Tensor, Tensor], Tensor], q: Tensor, p: Tensor,
                    dims: Sequence[int] | None, weights: Sequence[float] | None = None) -> Tensor:
    """sum_k weights[k] * loss_fn(truncate(q, dims[k]), truncate(p, dims[k])); `loss_fn(q, p)`
    itself when no dims are given. Weights default to 1 each."""
    if not dims:
        return loss_fn(q, p)
    weights = list(weights) if weights is not None else [1.0] * len(dims)
    if len(weights) != len(dims):
        raise ValueError(f"{len(weights)} matryoshka weights for {len(dims)} dims")
    total = None
    for dim, weight in zip(dims, weights):
        term = weight * loss_fn(truncate(q, dim), truncate(p, dim))
        total = term if total is None else total + term
    return total
