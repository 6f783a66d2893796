"""Sampling properties: exact stratified counts, no replacement, seeded, nested when asked,
and independent of the order in which rows are seen."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from boom_ray.corpus import sampling


def _pick(seed, ratio, lines, nested=False, task="t"):
    keys = sampling.row_keys(seed, sampling.bag_salt(ratio, nested), task, lines)
    return set(lines[sampling.select(keys, lines, ratio)].tolist())


@given(n=st.integers(0, 500), ratio=st.sampled_from([0.2, 0.4, 0.6, 0.8, 1.0, 0.33]), seed=st.integers(0, 2**31))
@settings(max_examples=60, deadline=None)
def test_counts_are_exact_and_without_replacement(n, ratio, seed):
    lines = np.arange(1, n + 1)
    picked = _pick(seed, ratio, lines)
    assert len(picked) == sampling.sample_size(ratio, n) == min(n, int(np.floor(ratio * n + 0.5)))
    assert picked <= set(lines.tolist())


@given(perm_seed=st.integers(0, 1000))
@settings(max_examples=20, deadline=None)
def test_selection_does_not_depend_on_row_order(perm_seed):
    lines = np.arange(1, 301) * 3
    shuffled = np.random.default_rng(perm_seed).permutation(lines)
    assert _pick(7, 0.4, lines) == _pick(7, 0.4, shuffled)


def test_nested_bags_are_subsets_and_independent_bags_are_not():
    lines = np.arange(1, 2001)
    ratios = [0.2, 0.4, 0.6, 0.8, 1.0]
    nested = [_pick(1, r, lines, nested=True) for r in ratios]
    assert all(a <= b for a, b in zip(nested, nested[1:]))
    independent = [_pick(1, r, lines) for r in ratios]
    assert not independent[0] <= independent[1]
    assert independent[-1] == set(lines.tolist())


def test_seed_and_task_change_the_sample():
    lines = np.arange(1, 1001)
    assert _pick(1, 0.5, lines) == _pick(1, 0.5, lines)
    assert _pick(1, 0.5, lines) != _pick(2, 0.5, lines)
    assert _pick(1, 0.5, lines, task="a") != _pick(1, 0.5, lines, task="b")


def test_keys_are_uniform_enough_for_stratification():
    lines = np.arange(1, 100_001)
    keys = sampling.row_keys(3, "x", "t", lines)
    first_half = lines[sampling.select(keys, lines, 0.5)]
    # a fair sample of 1..N has its mean near N/2 (std of the mean ~ 91 here)
    assert abs(first_half.mean() - 50_000) < 600
