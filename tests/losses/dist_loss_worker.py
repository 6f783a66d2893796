"""Two-rank run of info_nce_loss(gather=True) on gloo; writes each rank's loss and gradients.

Run by tests/losses/test_loss.py as a script (``python dist_loss_worker.py OUT_DIR PORT``) so that
torch.multiprocessing.spawn can pickle the worker from ``__main__``. The global batch is drawn
from a fixed seed; rank r takes rows [r*B, (r+1)*B) and their passage groups.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD, B, G, D_IN, D = 2, 3, 3, 6, 4
TEMPERATURE = 0.1


def global_batch() -> dict[str, torch.Tensor]:
    """Inputs of the whole global batch and the shared encoder weights (a linear map)."""
    gen = torch.Generator().manual_seed(1234)
    return {
        "xq": torch.randn(WORLD * B, D_IN, generator=gen, dtype=torch.float64),
        "xp": torch.randn(WORLD * B * G, D_IN, generator=gen, dtype=torch.float64),
        "weight": torch.randn(D, D_IN, generator=gen, dtype=torch.float64),
        # a mix: rows 1 and 4 are classification-like (own group only)
        "in_batch": torch.tensor([True, False, True, True, False, True]),
    }


def embed(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x @ weight.T, dim=-1)


def worker(rank: int, out_dir: str, port: int) -> None:
    from boom_ray.losses.info_nce import info_nce_loss

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        data = global_batch()
        weight = data["weight"].clone().requires_grad_(True)
        xq = data["xq"][rank * B:(rank + 1) * B]
        xp = data["xp"][rank * B * G:(rank + 1) * B * G]
        q, p = embed(weight, xq), embed(weight, xp)
        q.retain_grad()
        p.retain_grad()
        loss = info_nce_loss(q, p, TEMPERATURE, data["in_batch"][rank * B:(rank + 1) * B], gather=True)
        loss.backward()
        torch.save({"loss": loss.detach(), "weight_grad": weight.grad, "q_grad": q.grad, "p_grad": p.grad},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=WORLD, join=True)
