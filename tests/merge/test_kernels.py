"""The fused bfloat16 kernels compute what the numpy path computes: the weighted sum in float32
with the writer's rounding, the Gram matrix to float32 accuracy; and they are taken exactly where
a tensor's merge is a weighted sum (or Gram pass) of bfloat16 models."""

from __future__ import annotations

import numpy as np
import pytest

from boom_ray.merge import kernels
from boom_ray.merge.driver import fused_combine, fused_gram
from boom_ray.merge.io import from_float32, rows_to_float32
from boom_ray.merge.methods import get_method


def bf16_rows(k: int, m: int, seed: int = 0) -> list[np.ndarray]:
    """k rows of m bfloat16 values (as uint16 bits): normal values, rounded from float32."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        bits = np.empty(m, np.uint16)
        from_float32(rng.standard_normal(m, dtype=np.float32) * 0.05, "BF16", bits)
        out.append(bits)
    return out


def widened(raws: list[np.ndarray]) -> np.ndarray:
    rows = np.empty((len(raws), raws[0].size), np.float32)
    rows_to_float32(raws, "BF16", rows)
    return rows


@pytest.mark.parametrize("k, m", [(1, 7), (2, 256), (5, 1000), (3, 65536 + 11)])
def test_weighted_sum_is_the_float32_sum_and_rounds_as_the_writer(k, m):
    raws = bf16_rows(k, m, seed=k)
    coef = np.linspace(0.9, -0.4, k).astype(np.float32)
    res, out = np.empty(m, np.float32), np.empty(m, np.uint16)
    kernels.weighted_sum_bf16(tuple(raws), coef, res, out, True)

    rows = widened(raws)
    sequential = rows[0] * coef[0]  # the kernel's order: c0 x0 + c1 x1 + ... in float32
    for j in range(1, k):
        sequential = sequential + rows[j] * coef[j]
    assert np.array_equal(res, sequential)
    exact = (coef.astype(np.float64)[:, None] * rows.astype(np.float64)).sum(axis=0)
    assert np.abs(res - exact).max() <= 4 * k * np.finfo(np.float32).eps * np.abs(rows).max()
    rounded = np.empty(m, np.uint16)
    from_float32(res, "BF16", rounded)
    assert np.array_equal(out, rounded)


def test_weighted_sum_without_rounding_leaves_only_the_float32_result():
    raws = bf16_rows(2, 300)
    res = np.full(300, np.nan, np.float32)
    kernels.weighted_sum_bf16(tuple(raws), np.array([0.5, 0.5], np.float32), res, np.empty(0, np.uint16), False)
    assert np.isfinite(res).all()


@pytest.mark.parametrize("k, m", [(2, 100), (5, 65536), (4, 3000)])
def test_gram_matches_float64(k, m):
    raws = bf16_rows(k, m, seed=10 + k)
    rows = widened(raws).astype(np.float64)
    exact = rows @ rows.T
    got = kernels.gram_bf16(tuple(raws))
    assert got.shape == (k, k) and np.array_equal(got, got.T)
    assert np.abs(got - exact).max() <= 1e-5 * np.abs(exact).max()


def _state(name: str, n: int, has_base: bool = False):
    method = get_method(name)
    settings = method.validate(n, has_base, {}, [{"weight": 1.0 + i} for i in range(n)])
    return method, method.new_state(method.resolve(settings, "t", 0.0), 10, (10,), "t")


def fused(method, state, dtype: str, has_base: bool):
    """The driver's choice for a tensor's combine: the fused kernel or None (numpy)."""
    return fused_combine(method.weighted_sum(state, has_base), dtype)


def test_fused_paths_are_taken_for_weighted_sums_of_bf16_models_only():
    method, state = _state("multislerp", 3)
    assert fused_gram(method.gram_statistics(state, 0, False), "BF16") is not None
    assert fused_gram(method.gram_statistics(state, 0, False), "F32") is None
    assert fused_gram(method.gram_statistics(state, 0, True), "BF16") is None  # x - base first: numpy path
    method.finish(state, 0, np.eye(3))
    assert fused(method, state, "BF16", False) is not None
    assert fused(method, state, "F16", False) is None
    assert fused(method, state, "BF16", True) is None
    linear, lstate = _state("linear", 2)
    assert fused(linear, lstate, "BF16", False) is not None
    karcher, kstate = _state("karcher", 2)  # an iterated mean, not a fixed weighted sum
    assert fused(karcher, kstate, "BF16", False) is None


def test_fused_combine_equals_the_methods_combine_to_float32_rounding():
    """multislerp through the kernel against its numpy `combine` on the same widened rows."""
    method, state = _state("multislerp", 4)
    raws = bf16_rows(4, 5000, seed=3)
    rows = widened(raws)
    method.finish(state, 0, rows.astype(np.float64) @ rows.T.astype(np.float64))
    numpy_path = method.combine(state, rows.copy(), None, np.empty(5000, np.float32))
    kernel = fused(method, state, "BF16", False)(raws, np.empty(5000, np.float32))
    assert np.abs(kernel - numpy_path).max() <= 8 * np.finfo(np.float32).eps * np.abs(numpy_path).max()
