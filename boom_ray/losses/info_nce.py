"""Contrastive loss over query / passage embeddings: InfoNCE with hard and in-batch negatives.

What it optimises: for each query, the softmax over cosine similarities (divided by a
temperature) to a set of candidate passages should put its mass on the query's own positive.
The loss is the cross-entropy of that softmax, averaged over the rows. Other names: InfoNCE,
NT-Xent, MultipleNegativesRankingLoss (sentence-transformers, whose ``scale`` = 1/temperature),
"in-batch softmax".

Temperature: similarities of normalised vectors lie in [-1, 1]; dividing by a temperature of
0.02 (the BOOM recipe) stretches them to [-50, 50], so the softmax is sharp and hard negatives
that sit close to the positive dominate the gradient. Larger temperatures spread it out.

Candidates of row i: with ``in_batch[i]`` every passage of the (global) batch - its own group
of 1 positive + hard negatives, and every other row's positive and negatives; without it only
its own group (classification / clustering rows, whose other rows may share their label).

False negatives (``passage_ids``, train.mask_false_negatives): a passage whose text equals row
i's positive but sits in another row's group (another query with the same positive, a duplicate
row, another row's hard negative) would be scored as a negative of row i although it is its
positive; such candidates are masked out of row i's softmax. Rows' own groups are never masked.

Across ranks (``gather=True``) every rank contributes its passages to every rank's candidates.
The gather keeps autograd: the gradient that any rank's loss sends to a passage flows back to
the rank that computed it (summed). Each rank returns the mean over its own rows, L_r. Then

* mean_r L_r equals the mean loss over the concatenated global batch (all ranks hold equally
  many rows), and
* each rank's backward of L_r produces, on its local embeddings, ``world_size`` times the
  gradient of that global mean loss; averaging parameter gradients over ranks (what DDP and
  DeepSpeed do) therefore gives exactly the single-process gradient of the global mean loss.

References: van den Oord et al. 2018 (CPC, InfoNCE); Henderson et al. 2017 (in-batch
negatives); Karpukhin et al. 2020 (DPR); Wang et al. 2023 (E5, instructions + temperature
0.02); sentence-transformers ``losses/MultipleNegativesRankingLoss.py``.

Example::

    >>> import torch
    >>> from boom_ray.losses.info_nce import info_nce_loss
    >>> q = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    >>> p = torch.nn.functional.normalize(torch.randn(2 * 3, 8), dim=-1)  # groups of 3
    >>> loss = info_nce_loss(q, p, temperature=0.02, in_batch=torch.tensor([True, True]))
    >>> loss.shape
    torch.Size([])
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over ranks and returns this rank's
    slice (a reduce-scatter, done as all_reduce + slice because gloo has no reduce_scatter)."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(t: Tensor) -> Tensor:
    """Concatenate `t` from every rank along dim 0 (rank order), differentiably.

    Identity when torch.distributed is not initialised or has one rank. All ranks must pass
    tensors of the same shape."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    return _AllGatherWithGrad.apply(t)


def _rank_offset() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def _gather_ids(ids: Tensor) -> Tensor:
    """all_gather of integer ids (no gradient), in rank order."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ids
    parts = [torch.empty_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, ids.contiguous())
    return torch.cat(parts, dim=0)


def candidate_logits(q: Tensor, p: Tensor, temperature: float, in_batch: Tensor | None = None,
                     gather: bool = False, passage_ids: Tensor | None = None) -> tuple[Tensor, Tensor, int]:
    """(logits [B, N] in fp32 with masked candidates at -inf, labels [B]: the column of each row's
    positive, group size G). The one definition of a row's candidates, shared by InfoNCE and the
    distillation losses; arguments as for :func:`info_nce_loss`."""
    b = q.shape[0]
    if b == 0 or p.shape[0] % b:
        raise ValueError(f"info_nce_loss: {p.shape[0]} passages cannot be split into groups for {b} queries")
    g = p.shape[0] // b
    offset = 0
    if gather:
        p = all_gather_with_grad(p)
        offset = _rank_offset() * b
        if passage_ids is not None:
            passage_ids = _gather_ids(passage_ids.to(q.device))
    logits = q @ p.T
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # softmax over logits up to 1/temperature = 50 needs fp32
    logits = logits / temperature
    rows = torch.arange(b, device=q.device) + offset
    labels = rows * g
    col_group = torch.arange(p.shape[0], device=q.device) // g
    own = col_group.unsqueeze(0) == rows.unsqueeze(1)
    blocked = torch.zeros_like(own)
    if in_batch is not None:
        in_batch = in_batch.to(device=q.device, dtype=torch.bool)
        blocked |= ~(own | in_batch.unsqueeze(1))
    if passage_ids is not None:
        passage_ids = passage_ids.to(q.device)
        blocked |= (passage_ids.unsqueeze(0) == passage_ids[labels].unsqueeze(1)) & ~own
    if bool(blocked.any()):
        logits = logits.masked_fill(blocked, float("-inf"))
    return logits, labels, g


def info_nce_loss(q: Tensor, p: Tensor, temperature: float, in_batch: Tensor | None = None,
                  gather: bool = False, passage_ids: Tensor | None = None) -> Tensor:
    """Mean InfoNCE loss of this rank's B rows.

    q: [B, d] normalised query embeddings. p: [B*G, d] normalised passages, row i's group at
    ``p[i*G:(i+1)*G]`` with its positive first. temperature: logits are cosine / temperature.
    in_batch: [B] bool, whether row i also competes against other rows' passages (default all
    True). gather: take other rows' passages from every rank (see module docstring); every rank
    must then pass the same B and G, and call it at the same step (it is a collective).
    passage_ids: [B*G] ids of the passages' texts; where given, other rows' copies of a row's
    positive are masked out of its candidates (false negatives)."""
    logits, labels, _ = candidate_logits(q, p, temperature, in_batch, gather, passage_ids)
    return torch.nn.functional.cross_entropy(logits, labels)
