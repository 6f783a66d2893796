"""Karcher, NuSLERP, Model Stock and SCE against independent transcriptions of mergekit 0.1.5's
`karcher.py`, `nuslerp.py`, `model_stock.py` and `sce.py` (whole tensors, torch, float64)."""

from __future__ import annotations

import math

import pytest
import torch

from boom_ray.merge.methods import merge_tensors as merge_arrays

from .test_methods import rel


def merge(*args, **kwargs) -> torch.Tensor:
    return torch.from_numpy(merge_arrays(*args, **kwargs))


def ref_karcher(xs, max_iter=10, tol=1e-5):
    xs = [x.double() for x in xs]
    if len(xs) == 1:
        return xs[0]
    alphas = [1 / len(xs)] * len(xs)
    norms = [x.norm() for x in xs]
    units = [x / n if n > 0 else torch.zeros_like(x) for x, n in zip(xs, norms)]
    valid = [i for i, n in enumerate(norms) if n > tol]
    a = [alphas[i] / sum(alphas[j] for j in valid) for i in valid]
    vu = [units[i] for i in valid]
    mean = sum(ai * u for ai, u in zip(a, vu))
    mean = vu[0].clone() if mean.norm() < tol else mean / mean.norm()
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for ai, u in zip(a, vu):
            dot = torch.clamp((mean * u).sum(), -1, 1)
            theta = torch.arccos(dot)
            if theta < tol:
                continue
            tangent += ai * (theta / torch.sin(theta)) * (u - dot * mean)
        tn = tangent.norm()
        if tn < tol:
            break
        mean = torch.cos(tn) * mean + torch.sin(tn) * (tangent / tn)
        if mean.norm() > tol:
            mean = mean / mean.norm()
    return sum(al * n for al, n in zip(alphas, norms)) * mean


def ref_nuslerp(t, v0, v1, dim=-1, flatten=True, eps=1e-8):
    shape = v0.shape
    v0, v1 = v0.double(), v1.double()
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    u0 = v0 / v0.norm(dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / v1.norm(dim=-1, keepdim=True).clamp(min=1e-7)
    cos = (u0 * u1).sum(-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos ** 2) <= eps ** 2
    theta = torch.acos(torch.where(colinear, 0, cos))
    res = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    res = torch.where(colinear, (1 - t) * v0 + t * v1, res)
    if dim != -1 and not flatten:
        res = res.transpose(dim, -1)
    return res.reshape(shape)


def ref_model_stock(base, xs, filter_wise=False):
    shape = base.shape
    w0, ws = base.double(), [x.double() for x in xs]
    if filter_wise:
        if w0.dim() == 1:
            w0, ws = w0.unsqueeze(0), [w.unsqueeze(0) for w in ws]
    else:
        w0, ws = w0.reshape(-1), [w.reshape(-1) for w in ws]
    off = [w - w0 for w in ws]
    coss = [((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-6)).clamp(-1, 1)
            for i, a in enumerate(off) for b in off[i + 1:]]
    cos = torch.stack(coss).mean(0).unsqueeze(-1)
    n = len(ws)
    denom = 1 + (n - 1) * cos
    t = torch.where(denom.abs() < 1e-6, torch.zeros_like(cos), n * cos / denom)
    return (t * (sum(ws) / n) + (1 - t) * w0).reshape(shape)


def ref_sce(base, xs, topk=1.0):
    tvs = torch.stack([x - base for x in xs]).float()
    if topk < 1:
        var = torch.var(tvs, dim=0, unbiased=False)
        k = int(torch.count_nonzero(var) * topk)
        mask = torch.zeros_like(var)
        if topk > 0 and k > 0:
            mask.view(-1)[torch.topk(var.abs().view(-1), k=k).indices] = 1
        tvs = tvs * mask.unsqueeze(0)
    majority = (tvs.sum(0) >= 0).float() * 2 - 1
    erase = tvs.sign() == majority
    w = tvs.double().square().reshape(len(xs), -1).mean(1)
    w = torch.ones_like(w) / len(w) if abs(float(w.sum())) < 1e-6 else w / w.sum()
    ew = w.view(-1, *[1] * base.dim()) * erase
    return base.double() + (tvs.double() * ew).sum(0) / ew.sum(0).clamp(min=1e-6)


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(29, 31, generator=g)
    return [base + 0.3 * torch.randn(29, 31, generator=g) for _ in range(4)], base


@pytest.mark.parametrize("n", [1, 2, 4])
def test_karcher(tensors, n):
    xs, _ = tensors
    got = merge("karcher", xs[:n], [0.2, 0.9, 0.4, 0.1][:n])  # weights ignored, as in mergekit
    assert rel(got, ref_karcher(xs[:n])) < 1e-5
    if n > 1:
        got = merge("karcher", xs[:n], [1] * n, parameters={"max_iter": 2, "tol": 1e-3})
        assert rel(got, ref_karcher(xs[:n], max_iter=2, tol=1e-3)) < 1e-5


def test_karcher_zero_and_spread_inputs():
    g = torch.Generator().manual_seed(4)
    xs = [torch.randn(50, generator=g) for _ in range(3)] + [torch.zeros(50)]
    got = merge("karcher", xs, [1] * 4)
    assert rel(got, ref_karcher(xs)) < 1e-5
    assert rel(got, ref_karcher(xs, max_iter=0)) > 1e-3  # spread inputs: the iteration moves the mean
    assert torch.equal(merge("karcher", [torch.zeros(5)] * 2, [1, 1]), torch.zeros(5))


@pytest.mark.parametrize("with_base", [False, True])
@pytest.mark.parametrize("flatten,row_wise", [(True, False), (False, False), (False, True)])
def test_nuslerp(tensors, with_base, flatten, row_wise):
    xs, base = tensors
    w = [0.3, 0.9]
    params = {"nuslerp_flatten": flatten, "nuslerp_row_wise": row_wise}
    got = merge("nuslerp", xs[:2], w, base if with_base else None, params)
    t = 0.9 / 1.2
    if with_base:
        ref = base + ref_nuslerp(t, xs[0] - base, xs[1] - base, 0 if row_wise else -1, flatten)
    else:
        ref = ref_nuslerp(t, xs[0], xs[1], 0 if row_wise else -1, flatten)
    assert rel(got, ref) < 1e-5
    same = merge("nuslerp", [xs[0], xs[0]], w)
    assert rel(same, xs[0]) < 1e-6  # colinear: linear interpolation


@pytest.mark.parametrize("filter_wise", [False, True])
@pytest.mark.parametrize("n", [2, 4])
def test_model_stock(tensors, filter_wise, n):
    xs, base = tensors
    got = merge("model_stock", xs[:n], [1] * n, base, {"filter_wise": filter_wise})
    assert rel(got, ref_model_stock(base, xs[:n], filter_wise)) < 1e-5
    one_d = merge("model_stock", [x[0] for x in xs[:n]], [1] * n, base[0], {"filter_wise": filter_wise})
    assert rel(one_d, ref_model_stock(base[0], [x[0] for x in xs[:n]], filter_wise)) < 1e-5


@pytest.mark.parametrize("topk", [1.0, 0.3, 0.0])
def test_sce(tensors, topk):
    xs, base = tensors
    got = merge("sce", xs, [1] * 4, base, {"select_topk": topk})
    assert rel(got, ref_sce(base, xs, topk)) < 1e-5
    if topk == 0.0:
        assert torch.equal(got, base)
