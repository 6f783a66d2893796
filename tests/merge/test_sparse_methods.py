"""The sparsifying task-vector methods (TIES, DARE, Breadcrumbs, DELLA) against an independent
transcription of mergekit 0.1.5's `generalized_task_arithmetic.py` and `sparsify.py`.

Random masks cannot be shared with torch's generator, so the transcription is given the same
masks (`select.uniform` of the tensor name, model and position) and everything else is
mergekit's; the masks themselves are checked statistically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from boom_ray.merge.methods import MergeMethodError, merge_tensors as merge_arrays
from boom_ray.merge.methods.select import RadixSelect, stream_key, uniform

from .test_methods import rel

NAME = "model.layers.0.mlp.up_proj.weight"
SETUPS = {  # method: (sparsification, sign election, normalize default, rescale default)
    "ties": ("magnitude", True, True, False), "dare_ties": ("random", True, False, True),
    "dare_linear": ("random", False, False, True), "breadcrumbs": ("outliers", False, False, False),
    "breadcrumbs_ties": ("outliers", True, False, False), "della": ("della", True, True, True),
    "della_linear": ("della", False, False, True),
}


def shared_mask(i: int, kind: str, probs: torch.Tensor) -> torch.Tensor:
    u = uniform(stream_key(NAME, i, kind), 0, probs.numel()).reshape(probs.shape)
    return torch.from_numpy(u < probs.double().numpy()).float()


def ref_sparsify(delta, density, kind, i, gamma, epsilon, rescale):
    if density >= 1:
        return delta
    n = delta.numel()
    flat = delta.abs().reshape(-1)
    mask = torch.zeros(n)
    if kind == "magnitude":
        if density <= 0:
            return torch.zeros_like(delta)
        mask[torch.argsort(flat, descending=True)[:max(1, int(density * n))]] = 1
    elif kind == "outliers":
        target, n_top = int(density * n), int(gamma * n)
        n_bot = max(0, n - target - n_top)
        mask[torch.sort(flat).indices[n_bot:n_bot + target]] = 1
    elif kind == "random":
        mask = shared_mask(i, "random", torch.full((n,), density))
    else:
        if density <= 0:
            return torch.zeros_like(delta)
        t2 = delta if delta.dim() == 2 else delta.unsqueeze(0)
        ranks = torch.argsort(torch.argsort(t2.abs(), dim=1), dim=1).float() + 1
        lo, hi = ranks.min(1, keepdim=True).values, ranks.max(1, keepdim=True).values
        probs = (density - epsilon) + ((ranks - lo) / (hi - lo)).clamp(0, 1) * 2 * epsilon
        mask = shared_mask(i, "della", probs)
    mask = mask.reshape(delta.shape)
    masked = delta * mask
    if rescale:
        before, after = delta.abs().sum(), masked.abs().sum()
        if before >= 1e-7 and after >= 1e-7:
            masked = masked * (before / after)
    return masked


def ref_merge(method, base, xs, w, dens, lam=1.0, normalize=None, rescale=None, gamma=0.01, epsilon=0.15):
    kind, consensus, norm_default, rescale_default = SETUPS[method]
    normalize = norm_default if normalize is None else normalize
    rescale = rescale_default if rescale is None else rescale
    deltas = torch.stack([ref_sparsify((x - base).float(), d, kind, i, gamma, epsilon, rescale)
                          for i, (x, d) in enumerate(zip(xs, dens))])
    weights = torch.tensor(w).view(-1, *[1] * base.dim())
    deltas = deltas * weights
    if consensus:
        sign = deltas.sign()
        majority = (deltas.sum(0) >= 0).float() * 2 - 1
        mask = (sign == majority).float()
        mixed, divisor = (deltas * mask).sum(0), (weights * mask).sum(0)
        divisor[divisor == 0] = 1
    else:
        mixed, divisor = deltas.sum(0), weights.sum(0)
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed = mixed / divisor
    return base + lam * mixed


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(41, 67, generator=g) for _ in range(3)], torch.randn(41, 67, generator=g)


def run(method, xs, base, w, dens, params=None, **per_model):
    mps = [{"density": d, **{k: v[i] for k, v in per_model.items()}} for i, d in enumerate(dens)]
    return torch.from_numpy(merge_arrays(method, xs, w, base, params or {}, mps, tensor_name=NAME))


@pytest.mark.parametrize("method", sorted(SETUPS))
@pytest.mark.parametrize("dens", [[0.5, 0.3, 0.8], [1.0, 0.2, 0.6], [0.0, 0.4, 0.9]])
def test_matches_mergekit_transcription(tensors, method, dens):
    xs, base = tensors
    if method.startswith("della"):
        dens = [min(max(d, 0.2), 0.8) if 0 < d < 1 else d for d in dens]
    w = [0.3, 0.5, 0.7]
    got = run(method, xs, base, w, dens, {"lambda": 0.9})
    assert rel(got, ref_merge(method, base, xs, w, dens, lam=0.9)) < 1e-5
    flipped = {"normalize": not SETUPS[method][2], "rescale": not SETUPS[method][3]}
    got = run(method, xs, base, w, dens, flipped)
    assert rel(got, ref_merge(method, base, xs, w, dens, **flipped)) < 1e-5


def test_breadcrumbs_gamma_and_one_dim(tensors):
    xs, base = tensors
    got = run("breadcrumbs", xs, base, [1, 1, 1], [0.5, 0.9, 0.3], gamma=[0.1, 0.2, 0.0])
    assert rel(got, ref_merge("breadcrumbs", base, xs, [1, 1, 1], [0.5, 0.9, 0.3], gamma=0.0)) > 1e-3
    mps = [{"density": d, "gamma": g} for d, g in zip([0.5, 0.9, 0.3], [0.1, 0.2, 0.0])]
    ref = base.clone()
    for i, m in enumerate(mps):  # breadcrumbs without normalize is a sum of per-model merges
        ref += ref_merge("breadcrumbs", base, [xs[i]], [1], [m["density"]], gamma=m["gamma"]) - base
    assert rel(got, ref) < 1e-5
    one = [x[0] for x in xs]
    got = run("della", one, base[0], [1, 1, 1], [0.5, 0.5, 0.5])
    assert rel(got, ref_merge("della", base[0], one, [1, 1, 1], [0.5, 0.5, 0.5])) < 1e-5


def test_random_masks_keep_density_and_differ_between_models():
    n, density = 200_000, 0.3
    masks = [uniform(stream_key(NAME, i, "random"), 0, n) < density for i in range(2)]
    sd = (density * (1 - density) / n) ** 0.5
    for m in masks:
        assert abs(m.mean() - density) < 5 * sd
    assert abs((masks[0] & masks[1]).mean() - density ** 2) < 5 * sd  # independent of each other
    assert np.array_equal(uniform(7, 1000, 50), uniform(7, 0, 2000)[1000:1050])  # blocking-independent
    # over many streams (tensors), kept fractions spread as binomial ones: no stream is biased
    z = np.array([((uniform(stream_key("t", k), 0, 8192) < density).mean() - density)
                  / (density * (1 - density) / 8192) ** 0.5 for k in range(400)])
    assert abs(z.mean()) < 0.2 and 0.85 < z.std() < 1.15


def test_della_keep_probability_follows_rank():
    """Large magnitudes are kept more often: (density - eps) at the smallest, (density + eps) at the largest."""
    g = torch.Generator().manual_seed(2)
    base, x = torch.zeros(400, 500), torch.randn(400, 500, generator=g)
    got = run("della", [x], base, [1.0], [0.5], {"rescale": False}, epsilon=[0.3])
    kept = (got != 0).float()
    order = torch.argsort(torch.argsort(x.abs(), dim=1), dim=1)
    low, high = kept[order < 50].mean(), kept[order >= 450].mean()
    assert abs(low - 0.23) < 0.02 and abs(high - 0.77) < 0.02 and abs(kept.mean() - 0.5) < 0.01


def test_radix_select_exact():
    rng = np.random.default_rng(0)
    keys = np.abs(rng.standard_normal((3, 5000))).astype(np.float32)
    sel = RadixSelect([1, 2500, 5000])
    for p in range(2):
        sel.finish(p, sum(sel.histogram(p, keys[:, a:a + 700]) for a in range(0, 5000, 700)))
    assert sel.values == [float(np.sort(keys[q])[::-1][k - 1]) for q, k in enumerate([1, 2500, 5000])]


def test_della_epsilon_range(tensors):
    xs, base = tensors
    with pytest.raises(MergeMethodError, match="density \\+- epsilon"):
        run("della", xs, base, [1, 1, 1], [0.1, 0.5, 0.5])
