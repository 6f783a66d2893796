"""GradCache gives the plain step's loss and gradients, replays dropout, and works under DeepSpeed;
in bf16 it needs (and the generated config gives) fp32 gradient accumulation.

The 2-rank runs are subprocesses (tests/train/grad_cache_worker.py) on gloo; the single-process
tests check what only one process can see (RNG replay, the RNG stream afterwards).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from boom_ray.config import validate_config
from boom_ray.losses.info_nce import info_nce_loss
from boom_ray.train.ds_config import DeepSpeedConfigError, check_mini_batch_size
from boom_ray.train.grad_cache import cached_backward, chunk_sizes, plain_backward, split_rows

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORKER = HERE / "grad_cache_worker.py"


def _worker_module():
    spec = importlib.util.spec_from_file_location("grad_cache_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


w = _worker_module()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_worker(mode: str, out: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(WORKER), mode, str(out), str(_free_port())],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(out / f"{mode}_rank{r}.pt", weights_only=False) for r in range(w.WORLD)]


TOL_BF16 = 5.5e-3
"""Relative RMS distance of GradCache's bf16 update from the plain step's that separates fp32 from bf16
accumulation of B_BF16 = 128 one-row mini-batches (measured on CPU, ZeRO 1/2/3: fp32 2.6-3.2e-3, about
the rounding of one bf16 gradient; bf16 9.0e-3, 1.0e-2, 1.1e-2, growing with the number of additions)."""


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def test_two_ranks_float64_loss_and_every_gradient_equal_the_plain_step(tmp_path):
    ranks = _run_worker("torch", tmp_path)
    for r, res in enumerate(ranks):
        plain = res["plain"]
        assert set(plain["grads"]) == {"l1.weight", "l1.bias", "l2.weight", "l2.bias"}
        for m in w.MINI_SIZES:
            got = res[f"mini{m}"]
            assert _rel(got["loss"], plain["loss"]) < 1e-8, (r, m)
            for name, grad in plain["grads"].items():
                assert grad.abs().max() > 0
                assert _rel(got["grads"][name], grad) < 1e-8, (r, m, name)
    # the ranks hold different rows, and their gradients differ before DDP's averaging
    assert ranks[0]["plain"]["loss"] != pytest.approx(ranks[1]["plain"]["loss"])


def test_deepspeed_zero0_to_3_with_accumulation_and_checkpointing(tmp_path):
    """One optimizer step of two accumulated micro batches, SGD(lr=1): the update is the averaged
    gradient. GradCache's update equals the plain one at every ZeRO stage, on every rank, and
    DeepSpeed sees exactly one accumulation-boundary backward per optimizer step (the one whose
    all-reduce ZeRO 0/1 run), as on the plain path."""
    ranks = _run_worker("deepspeed", tmp_path)
    for stage in (0, 1, 2, 3):
        for r, res in enumerate(ranks):
            plain = res[(stage, "plain")]
            assert plain["global_steps"] == 1 and plain["boundary_backwards"] == 1
            for path in ("mini3",):
                got = res[(stage, path)]
                assert got["global_steps"] == 1, (stage, path)
                assert got["boundary_backwards"] == 1, (stage, path, got)
                assert got["backwards"] == 2 * len(chunk_sizes(w.B, int(path[4:])))
                for name, update in plain["update"].items():
                    assert update.abs().max() > 0
                    assert _rel(got["update"][name], update) < 1e-5, (stage, r, path, name)
    torch.testing.assert_close(ranks[0][(3, "mini3")]["update"]["l1.weight"],
                               ranks[1][(3, "mini3")]["update"]["l1.weight"])  # all-reduced: ranks agree


def _flat(update: dict) -> torch.Tensor:
    return torch.cat([v.flatten() for _, v in sorted(update.items())])


def _rms_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_bf16_gradcache_sums_its_mini_batches_in_fp32_and_skipped_steps_are_counted(tmp_path):
    """bf16, the generated config, ZeRO 1-3 on 2 ranks, one step of mini-batches of one row: with
    the config's fp32 accumulation GradCache's update is the plain step's up to bf16 rounding of
    each mini-batch's gradient; without it (DeepSpeed's default: the model dtype) each of the
    B_BF16 additions rounds the running sum, and the update drifts beyond TOL_BF16. DeepSpeed
    refuses fp32 accumulation at ZeRO 0 (why the config takes ZeRO 1 there). Steps with NaN
    gradients are skipped and counted, and a bag of only such steps is refused."""
    ranks = _run_worker("bf16", tmp_path)
    for r, res in enumerate(ranks):
        for stage in (1, 2, 3):
            plain = _flat(res[(stage, "plain")]["update"])
            assert plain.abs().max() > 0 and res[(stage, "plain")]["skipped"] == 0
            fp32 = _rms_rel(_flat(res[(stage, "mini1")]["update"]), plain)
            bf16 = _rms_rel(_flat(res[(stage, "mini1_bf16_accumulation")]["update"]), plain)
            print(f"rank {r} ZeRO {stage}: fp32 accumulation {fp32:.2e}, bf16 accumulation {bf16:.2e} "
                  f"({res[(stage, 'mini1')]['optimizer']})")
            assert fp32 < TOL_BF16 < bf16, (r, stage, fp32, bf16)
        assert "unsupported mix" in res["stage0"], res["stage0"]
        nan = res["nan"]
        assert nan["moved"] == [False, False, False] and nan["skipped_steps"] == nan["global_steps"] == 3, nan
        assert nan["error"] == ("NothingTrainedError: bag20: all 3 optimizer steps were skipped (inf/NaN gradients): "
                                "nothing trained, no export written")


def _batch():
    q, p, in_batch = w.rank_slice(w.global_batch(), 0)
    return q, p, in_batch


def _loss(in_batch):
    return lambda q, p: info_nce_loss(q, p, w.TEMPERATURE, in_batch=in_batch)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_dropout_is_replayed(checkpoint):
    """With dropout on, GradCache's gradient is that of the loss it returns: the graph pass sees
    the masks of the first pass. Reference: the same mini-batches embedded with a graph in the
    same order from the same seed (same masks), then one backward."""
    qf, pf, in_batch = _batch()
    sizes = chunk_sizes(w.B, 2)
    ref_model = w.TinyEncoder(dropout=0.3, checkpoint=checkpoint)
    torch.manual_seed(11)
    qs, ps = [], []
    for qc, pc in zip(split_rows(qf, sizes), split_rows(pf, [n * w.G for n in sizes])):
        qs.append(ref_model(qc))
        ps.append(ref_model(pc))
    ref_loss = _loss(in_batch)(torch.cat(qs), torch.cat(ps))
    ref_loss.backward()
    after_ref = torch.rand(3)

    model = w.TinyEncoder(dropout=0.3, checkpoint=checkpoint)
    torch.manual_seed(11)
    loss = cached_backward(model, qf, pf, _loss(in_batch), 2, plain_backward)
    after = torch.rand(3)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    for (name, p), (_, ref_p) in zip(model.named_parameters(), ref_model.named_parameters()):
        assert _rel(p.grad, ref_p.grad) < 1e-10, name
    # the RNG stream goes on as after the first pass alone: the replay does not consume it
    torch.testing.assert_close(after, after_ref)

    other = w.TinyEncoder(dropout=0.3, checkpoint=checkpoint)
    torch.manual_seed(12)
    assert cached_backward(other, qf, pf, _loss(in_batch), 2, plain_backward).item() != pytest.approx(loss.item())


def test_chunking():
    assert chunk_sizes(8, 2) == [2, 2, 2, 2]
    assert chunk_sizes(8, 3) == [3, 3, 2]
    assert chunk_sizes(2, 8) == [2]
    with pytest.raises(ValueError):
        chunk_sizes(4, 0)
    feats = {"a": torch.arange(10).reshape(5, 2)}
    parts = split_rows(feats, [2, 3])
    assert [p["a"].shape[0] for p in parts] == [2, 3]
    assert torch.equal(torch.cat([p["a"] for p in parts]), feats["a"])


def _cfg(**train):
    return validate_config({"workdir": "/tmp/w", "corpus": {"path": "/tmp/c"}, "train": train}, "run.yaml")


def test_mini_batch_size_must_divide_the_per_rank_batch():
    check_mini_batch_size(_cfg(global_batch_size=16, num_workers=2, mini_batch_size=4).train)
    check_mini_batch_size(_cfg().train)  # unset: off
    with pytest.raises(DeepSpeedConfigError) as err:
        check_mini_batch_size(_cfg(global_batch_size=16, num_workers=2, mini_batch_size=3).train)
    assert len(str(err.value).splitlines()) == 1
    message = str(err.value)
    assert message.startswith("train.mini_batch_size: 3 must divide the per-rank batch") and "8 rows" in message
