"""Two-rank run of training_loss(gather=True) on gloo with cross-device false negatives and teacher
scores; writes each rank's loss and gradient per objective.

Run by tests/losses/test_objective_dist.py as a script (``python dist_objective_worker.py OUT PORT``).
Rank r takes rows [r*B, (r+1)*B) of a fixed global batch. Passage ids plant copies of positives in
other ranks' groups: row 0's positive (rank 0) is also a negative of row 3 (rank 1), and rows 1
(rank 0) and 4 (rank 1) share their positive.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD, B, G, D_IN, D = 2, 3, 2, 6, 4
TEMPERATURE = 0.1
OBJECTIVES = {"info_nce": {}, "kl_div": {"kd_loss": "kl_div", "kd_temperature": 0.5},
              "m3_kd": {"kd_loss": "m3_kd"}, "matryoshka": {"matryoshka_dims": [2, 4]}}


def global_batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(99)
    ids = torch.arange(100, 100 + WORLD * B * G)
    ids[3 * G + 1] = ids[0 * G]      # row 3's negative is row 0's positive
    ids[4 * G] = ids[1 * G]          # rows 1 and 4 share a positive
    return {"xq": torch.randn(WORLD * B, D_IN, generator=gen, dtype=torch.float64),
            "xp": torch.randn(WORLD * B * G, D_IN, generator=gen, dtype=torch.float64),
            "weight": torch.randn(D, D_IN, generator=gen, dtype=torch.float64),
            "teacher": torch.randn(WORLD * B, G, generator=gen, dtype=torch.float64),
            "in_batch": torch.tensor([True, True, False, True, True, True]),
            "ids": ids}


def embed(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x @ weight.T, dim=-1)


def micro(data: dict, rows: slice, passages: slice) -> SimpleNamespace:
    return SimpleNamespace(in_batch=data["in_batch"][rows], passage_ids=data["ids"][passages],
                           teacher_scores=data["teacher"][rows])


def worker(rank: int, out_dir: str, port: int) -> None:
    from boom_ray.config import TrainConfig
    from boom_ray.losses.objective import training_loss

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        data = global_batch()
        out = {}
        for name, settings in OBJECTIVES.items():
            weight = data["weight"].clone().requires_grad_(True)
            rows, passages = slice(rank * B, (rank + 1) * B), slice(rank * B * G, (rank + 1) * B * G)
            q, p = embed(weight, data["xq"][rows]), embed(weight, data["xp"][passages])
            cfg = TrainConfig(temperature=TEMPERATURE, **settings)
            loss = training_loss(q, p, micro(data, rows, passages), cfg, gather=True)
            loss.backward()
            out[name] = {"loss": loss.detach(), "weight_grad": weight.grad}
        torch.save(out, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=WORLD, join=True)
