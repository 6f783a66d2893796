"""InfoNCE: hand-computed values, the no-in-batch rule, and 2-rank gather == single-process reference."""

from __future__ import annotations

import importlib.util
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from boom_ray.losses.info_nce import all_gather_with_grad, info_nce_loss

HERE = Path(__file__).resolve().parent


def _unit(*xs: float) -> list[float]:
    n = math.sqrt(sum(x * x for x in xs))
    return [x / n for x in xs]


def _hand_loss(q: list[list[float]], p: list[list[float]], t: float, group: int, in_batch: list[bool]) -> float:
    """Plain-Python InfoNCE: -log softmax of the own positive among the row's candidates, averaged."""
    total = 0.0
    for i, qi in enumerate(q):
        cols = range(len(p)) if in_batch[i] else range(i * group, (i + 1) * group)
        logits = {j: sum(a * b for a, b in zip(qi, p[j])) / t for j in cols}
        total += -(logits[i * group] - math.log(sum(math.exp(v) for v in logits.values())))
    return total / len(q)


Q = [_unit(1, 0.2, 0), _unit(0.1, 1, 0.3)]
P = [_unit(0.9, 0.1, 0.1), _unit(0.5, 0.5, 0), _unit(0.3, 0.2, 1),   # row 0: pos, neg, neg
     _unit(0, 1, 0.2), _unit(1, 0.1, 0.4), _unit(0.2, 0.9, 0.6)]     # row 1: pos, neg, neg


@pytest.mark.parametrize("in_batch", [[True, True], [False, False], [True, False]])
@pytest.mark.parametrize("temperature", [0.02, 0.5])
def test_matches_hand_computation(in_batch, temperature):
    got = info_nce_loss(torch.tensor(Q, dtype=torch.float64), torch.tensor(P, dtype=torch.float64),
                        temperature, torch.tensor(in_batch))
    assert got.item() == pytest.approx(_hand_loss(Q, P, temperature, 3, in_batch), rel=1e-6)


def test_two_rows_two_passages_closed_form():
    # q0 = p0 = e1, q1 = p2 = e2, negatives orthogonal to both queries: every logit is 1/t or 0.
    q = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    p = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0], [0, 0, 1.0]])
    t = 0.5
    # in-batch: candidates e^{2}, e^0, e^0, e^0 -> loss = log(e^2 + 3) - 2 for both rows
    assert info_nce_loss(q, p, t).item() == pytest.approx(math.log(math.exp(2) + 3) - 2, rel=1e-6)
    # own group only: e^2, e^0 -> log(e^2 + 1) - 2
    own = info_nce_loss(q, p, t, torch.tensor([False, False])).item()
    assert own == pytest.approx(math.log(math.exp(2) + 1) - 2, rel=1e-6)


def test_class_rows_ignore_other_rows_passages():
    """A row without in-batch negatives has a loss (and gradient) independent of other rows' passages."""
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 5, generator=gen), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(9, 5, generator=gen), dim=-1).requires_grad_(True)
    mask = torch.tensor([False, False, False])
    loss = info_nce_loss(q, p, 0.05, mask)
    loss.backward()
    per_row = [info_nce_loss(q[i:i + 1], p[i * 3:(i + 1) * 3].detach(), 0.05).item() for i in range(3)]
    assert loss.item() == pytest.approx(sum(per_row) / 3, rel=1e-6)
    with_in_batch = info_nce_loss(q, p.detach(), 0.05, torch.tensor([True, True, True])).item()
    assert with_in_batch > loss.item()  # more candidates, larger loss
    # row 0's group gets gradient from q0 alone: the same as row 0's own loss / 3
    p0 = p[:3].detach().clone().requires_grad_(True)
    (info_nce_loss(q[:1], p0, 0.05) / 3).backward()
    torch.testing.assert_close(p.grad[:3], p0.grad)


def test_default_in_batch_is_all_rows_and_groups_of_one():
    gen = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(4, 6, generator=gen), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(4, 6, generator=gen), dim=-1)
    # group size 1 = plain in-batch softmax (MultipleNegativesRankingLoss on pairs)
    expected = torch.nn.functional.cross_entropy(q @ p.T / 0.05, torch.arange(4))
    assert info_nce_loss(q, p, 0.05).item() == pytest.approx(expected.item(), rel=1e-6)
    assert info_nce_loss(q, p, 0.05, torch.ones(4, dtype=torch.bool)).item() == pytest.approx(expected.item())


def test_docstring_example_runs():
    import doctest

    import boom_ray.losses.info_nce as module

    result = doctest.testmod(module)
    assert result.attempted >= 3 and result.failed == 0


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="groups"):
        info_nce_loss(torch.zeros(3, 4), torch.zeros(7, 4), 0.02)


def test_gather_without_process_group_is_identity():
    t = torch.randn(3, 2)
    assert all_gather_with_grad(t) is t
    q = torch.nn.functional.normalize(torch.randn(2, 3), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    assert info_nce_loss(q, p, 0.1, gather=True).item() == pytest.approx(info_nce_loss(q, p, 0.1).item())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_equal_single_process_reference(tmp_path):
    """world_size 2 on gloo. Each rank's loss is the mean over its own rows, so

    * mean over ranks of the rank losses == the mean loss of the concatenated global batch;
    * each rank's gradient on its local embeddings == world_size x the reference gradient of
      that global mean loss (the gather sends every rank's gradient back to the passage owner);
    * hence the rank-averaged parameter gradient (what DDP / DeepSpeed apply) == the reference
      parameter gradient.
    """
    script = HERE / "dist_loss_worker.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(_free_port())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = importlib.util.spec_from_file_location("dist_loss_worker", script)
    w = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(w)

    data = w.global_batch()
    weight = data["weight"].clone().requires_grad_(True)
    q, p = w.embed(weight, data["xq"]), w.embed(weight, data["xp"])
    q.retain_grad()
    p.retain_grad()
    ref = info_nce_loss(q, p, w.TEMPERATURE, data["in_batch"])  # single process, whole batch
    ref.backward()

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(w.WORLD)]
    assert torch.stack([r["loss"] for r in ranks]).mean().item() == pytest.approx(ref.item(), rel=1e-12)
    assert ranks[0]["loss"].item() != pytest.approx(ranks[1]["loss"].item())  # the ranks really differ
    mean_grad = torch.stack([r["weight_grad"] for r in ranks]).mean(0)
    torch.testing.assert_close(mean_grad, weight.grad, rtol=1e-9, atol=1e-12)
    b, g = w.B, w.B * w.G
    for r, out in enumerate(ranks):
        torch.testing.assert_close(out["q_grad"], w.WORLD * q.grad[r * b:(r + 1) * b], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out["p_grad"], w.WORLD * p.grad[r * g:(r + 1) * g], rtol=1e-9, atol=1e-12)
