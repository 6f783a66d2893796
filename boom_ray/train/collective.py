"""The one place training reduces metrics across ranks.

Why a helper: with ``use_gpu`` Ray Train's process group is NCCL, which reduces CUDA tensors
only; a collective on a CPU tensor raises at the first logging step, and gloo (CPU runs) accepts
either device, so CPU tests never see the mistake. Every metric reduction goes through
:func:`all_reduce_sum`, which builds its tensor on the training device
(``ray.train.torch.get_device()``), so there is exactly one line to get right.
"""

from __future__ import annotations

from typing import Sequence

import ray.train.torch
import torch
import torch.distributed as dist


def training_device():
    """The device of this Ray Train worker (cuda:<local rank> with use_gpu, else cpu)."""
    return ray.train.torch.get_device()


def all_reduce_sum(values: Sequence[float], device=None) -> list[float]:
    """Element-wise sum of `values` over every rank (float64 on `device`, default the training
    device); the identity without a process group or with one rank."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device if device is not None else training_device())
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()
