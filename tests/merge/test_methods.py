"""Each merge method against a direct, independent transcription of mergekit 0.1.5's formula.

(benchmarks/merge.py also checks the same methods against the real mergekit 0.1.5.)"""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from boom_ray.config import MergeSpec, SweepConfig
from boom_ray.merge.methods import METHODS, MergeMethodError, merge_tensors as merge_arrays


def merge_tensors(*args, **kwargs) -> torch.Tensor:
    """The numpy reference merge, as a torch tensor for comparisons."""
    return torch.from_numpy(merge_arrays(*args, **kwargs))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def ref_multislerp(xs, w, base=None, eps=1e-8):
    """mergekit's steps: unit tensors, weighted mean, tangent space, exponential map, mean norm."""
    x = torch.stack(xs).double()
    if base is not None:
        x = x - base.double()
    flat = x.reshape(len(xs), -1)
    w = torch.tensor(w, dtype=torch.float64)
    w = w / w.sum()
    norms = flat.norm(dim=-1, keepdim=True)
    unit = flat / (norms + eps)
    mean = (unit * w[:, None]).sum(0)
    mean = mean / mean.norm()
    tangent = unit - (unit * mean).sum(-1, keepdim=True) * mean
    t = (tangent * w[:, None]).sum(0)
    tn = t.norm() + eps
    res = (mean * torch.cos(tn) + t * torch.sin(tn) / tn) * (norms.squeeze(-1) * w).sum()
    res = res.reshape(xs[0].shape)
    return res + base.double() if base is not None else res


def ref_slerp(t, v0, v1, eps=1e-8):
    a, b = v0.double().reshape(-1), v1.double().reshape(-1)
    na = a.norm() if a.norm() > eps else 1.0
    nb = b.norm() if b.norm() > eps else 1.0
    dot = float(((a / na) * (b / nb)).sum().clamp(-1, 1))
    if abs(dot) > 0.9995:
        return ((1 - t) * a + t * b).reshape(v0.shape)
    th = math.acos(dot)
    return (math.sin((1 - t) * th) / math.sin(th) * a + math.sin(t * th) / math.sin(th) * b).reshape(v0.shape)


def ref_ties(base, xs, w, dens, lam=1.0, normalize=True):
    """Magnitude top-k per task vector (argsort, as mergekit), sign election by sum, disjoint mean."""
    deltas = []
    for x, d in zip(xs, dens):
        delta = (x - base).float()
        if d <= 0:
            delta = torch.zeros_like(delta)
        elif d < 1:
            k = max(1, int(d * delta.numel()))
            mask = torch.zeros(delta.numel())
            mask[torch.argsort(delta.abs().reshape(-1), descending=True)[:k]] = 1
            delta = delta * mask.reshape(delta.shape)
        deltas.append(delta)
    wd = torch.stack(deltas) * torch.tensor(w).view(-1, *[1] * base.dim())
    majority = (wd.sum(0) >= 0).float() * 2 - 1
    mask = wd.sign() == majority
    mixed = (wd * mask).sum(0)
    div = (torch.tensor(w).view(-1, *[1] * base.dim()) * mask).sum(0)
    div[div == 0] = 1
    if normalize:
        mixed = mixed / div
    return base + lam * mixed


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(37, 53, generator=g) for _ in range(4)], torch.randn(37, 53, generator=g)


def test_registry_is_one_explicit_dict():
    assert sorted(METHODS) == ["breadcrumbs", "breadcrumbs_ties", "dare_linear", "dare_ties", "della",
                               "della_linear", "karcher", "linear", "model_stock", "multislerp", "nuslerp",
                               "sce", "slerp", "task_arithmetic", "ties"]


@pytest.mark.parametrize("with_base", [False, True])
def test_multislerp_matches_mergekit_formula(tensors, with_base):
    xs, base = tensors
    w = [0.2, 0.4, 0.6, 1.0]
    got = merge_tensors("multislerp", xs, w, base if with_base else None)
    assert rel(got, ref_multislerp(xs, w, base if with_base else None)) < 1e-5
    # not just an average: the result keeps the weighted mean norm, unlike a linear merge
    assert rel(got, merge_tensors("linear", xs, w)) > 1e-2


def test_multislerp_single_model_and_zero_tensors(tensors):
    xs, _ = tensors
    assert rel(merge_tensors("multislerp", xs[:1], [0.5]), xs[0]) < 1e-6
    zeros = [torch.zeros(5), torch.zeros(5), torch.zeros(5)]
    assert torch.equal(merge_tensors("multislerp", zeros, [1, 2, 3]), torch.zeros(5))


@pytest.mark.parametrize("normalize", [True, False])
def test_linear(tensors, normalize):
    xs, _ = tensors
    w = [0.1, 0.2, 0.3, 0.9]
    ref = sum(wi * x.double() for wi, x in zip(w, xs))
    ref = ref / sum(w) if normalize else ref
    assert rel(merge_tensors("linear", xs, w, parameters={"normalize": normalize}), ref) < 1e-6


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_slerp(tensors, t):
    xs, base = tensors
    got = merge_tensors("slerp", [xs[0]], base=base, parameters={"t": t})
    assert rel(got, ref_slerp(t, base, xs[0])) < 1e-5


def test_slerp_nearly_parallel_falls_back_to_lerp(tensors):
    _, base = tensors
    other = base * 1.5 + 1e-4
    got = merge_tensors("slerp", [other], base=base, parameters={"t": 0.25})
    assert rel(got, 0.75 * base + 0.25 * other) < 1e-6


@pytest.mark.parametrize("normalize,lam", [(False, 1.0), (True, 0.5)])
def test_task_arithmetic(tensors, normalize, lam):
    xs, base = tensors
    w = [0.3, 0.5, 0.7, 0.2]
    mixed = sum(wi * (x.double() - base.double()) for wi, x in zip(w, xs))
    ref = base.double() + lam * (mixed / sum(w) if normalize else mixed)
    got = merge_tensors("task_arithmetic", xs, w, base, {"normalize": normalize, "lambda": lam})
    assert rel(got, ref) < 1e-6


@pytest.mark.parametrize("dens", [[1.0, 1.0, 1.0, 1.0], [0.5, 0.3, 0.8, 0.01], [0.0, 0.2, 1.0, 0.6]])
def test_ties(tensors, dens):
    xs, base = tensors
    w = [0.3, 0.5, 0.7, 0.4]
    got = merge_tensors("ties", xs, w, base, {"lambda": 0.9},
                        model_parameters=[{"density": d} for d in dens])
    assert rel(got, ref_ties(base, xs, w, dens, lam=0.9)) < 1e-6


def test_parameter_errors(tensors):
    xs, base = tensors
    with pytest.raises(MergeMethodError, match="needs a base_model"):
        merge_tensors("ties", xs, [1, 1, 1, 1])
    with pytest.raises(MergeMethodError, match="'t' is required"):
        merge_tensors("slerp", xs[:1], base=base)
    with pytest.raises(MergeMethodError, match="besides the base"):
        merge_tensors("slerp", xs[:2], base=base, parameters={"t": 0.5})
    with pytest.raises(MergeMethodError, match="needs parameter 'weight'"):
        merge_tensors("multislerp", xs)
    with pytest.raises(MergeMethodError, match="unknown merge method"):
        merge_tensors("nearswap", xs, [1, 1, 1, 1], base)


def test_config_takes_every_registered_method_and_only_those():
    assert [MergeSpec(name="m", method=m).method for m in METHODS] == list(METHODS)
    assert SweepConfig(methods=["della", "sce"]).methods == ["della", "sce"]
    with pytest.raises(ValidationError, match="unknown merge method 'nearswap'"):
        MergeSpec(name="m", method="nearswap")
    with pytest.raises(ValidationError, match="unknown merge method"):
        SweepConfig(methods=["multislerp", "nearswap"])
