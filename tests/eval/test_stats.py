"""Confidence statistics: hand-computed values and the properties a report relies on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import v_measure_score

from boom_ray.eval import stats
from boom_ray.eval.stats import Interval, combine, headline, model_intervals, paired_difference


def _suite(name, domain, values=None, **units):
    u = {"statistic": "mean", "values": list(values)} if values is not None else units
    main = float(stats.score_units(u))
    return {"name": name, "domain": domain, "main": main, "units": u}


def _doc(*suites):
    return {"suites": list(suites)}


def _run(name, models, status="ok"):
    return {"name": name, "status": status, "models": models}


def test_t_interval_over_repeats_by_hand():
    iv = combine([0.5, 0.6, 0.7], None)
    # t(0.975, 2) = 4.302653, s = 0.1: half-width 4.302653 * 0.1 / sqrt(3) = 0.248414
    assert iv.mean == pytest.approx(0.6)
    assert (iv.lo, iv.hi) == pytest.approx((0.6 - 0.248414, 0.6 + 0.248414), abs=1e-6)
    assert combine([0.5], None) == Interval(0.5, None, None, 1)


def test_single_repeat_is_the_bootstrap_percentile_interval():
    boot = np.arange(1001) / 1000.0  # quantiles 0.025 and 0.975 exactly
    iv = combine([0.5], boot)
    assert (iv.lo, iv.hi) == pytest.approx((0.025, 0.975))
    # two items scored 0 and 1: a resample mean is 0, 0.5 or 1, so the 95 % interval is [0, 1]
    iv = model_intervals([_run("r0", {"m": _doc(_suite("s", "in", [0.0, 1.0]))})], "m")["suites"]["s"]
    assert (iv.mean, iv.lo, iv.hi) == pytest.approx((0.5, 0.0, 1.0))


def test_seed_spread_and_bootstrap_add_in_quadrature():
    boot = np.full(1001, 0.6)  # no spread over items
    assert combine([0.5, 0.6, 0.7], boot).hi == pytest.approx(0.6 + 0.248414, abs=1e-6)
    wide = np.r_[np.full(30, 0.5), np.full(940, 0.6), np.full(31, 0.7)]  # quantiles 0.5 / 0.7
    iv = combine([0.5, 0.6, 0.7], wide)
    assert iv.hi - iv.mean == pytest.approx(np.hypot(0.1, 0.248414), abs=1e-6)
    assert iv.mean - iv.lo == pytest.approx(np.hypot(0.1, 0.248414), abs=1e-6)


def test_identical_models_differ_by_zero_and_a_constant_shift_is_exact():
    rng = np.random.default_rng(1)
    a = _doc(_suite("q", "in", rng.random(50)), _suite("p", "out", x=list(rng.random(40)), y=list(rng.random(40)),
                                                        statistic="spearman"))
    shifted = _doc(_suite("q", "in", np.asarray(a["suites"][0]["units"]["values"]) - 0.1), a["suites"][1])
    runs = [_run("r0", {"a": a, "b": a, "c": shifted})]
    same = paired_difference(runs, "a", "b")
    for iv in [*same["suites"].values(), same["id_mean"], same["ood_mean"]]:
        assert (iv.mean, iv.lo, iv.hi) == (0.0, 0.0, 0.0)
    shift = paired_difference(runs, "a", "c")["id_mean"]
    assert (shift.mean, shift.lo, shift.hi) == pytest.approx((0.1, 0.1, 0.1), abs=1e-12)


def test_seeded_and_contains_the_mean():
    rng = np.random.default_rng(2)
    runs = [_run(f"r{i}", {"a": _doc(_suite("q", "in", rng.random(30)), _suite("c", "out", pred=list(rng.integers(0, 3, 30)),
                                                                            gold=list(rng.integers(0, 3, 30)),
                                                                            statistic="v_measure")),
                           "b": _doc(_suite("q", "in", rng.random(30)), _suite("c", "out", pred=list(rng.integers(0, 3, 30)),
                                                                            gold=list(rng.integers(0, 3, 30)),
                                                                            statistic="v_measure"))})
            for i in range(3)]
    first, again = paired_difference(runs, "a", "b", n_boot=200), paired_difference(runs, "a", "b", n_boot=200)
    assert first == again
    assert paired_difference(runs, "a", "b", n_boot=200, seed=7) != first
    for result in (first, model_intervals(runs, "a", n_boot=200)):
        for iv in [*result["suites"].values(), result["id_mean"], result["ood_mean"]]:
            assert iv.lo <= iv.mean <= iv.hi and iv.repeats == 3


def test_units_recompute_the_main_scores():
    rng = np.random.default_rng(3)
    x, y = rng.random(25), rng.random(25)
    units = {"statistic": "spearman", "x": list(x), "y": list(y)}
    assert stats.score_units(units) == pytest.approx(spearmanr(x, y).statistic)
    idx = rng.integers(0, 25, size=(4, 25))
    np.testing.assert_allclose(stats.score_units(units, idx), [spearmanr(x[r], y[r]).statistic for r in idx])
    pred, gold = rng.integers(0, 3, 25), rng.integers(0, 3, 25)
    cl = {"statistic": "v_measure", "pred": list(pred), "gold": list(gold)}
    np.testing.assert_allclose(stats.score_units(cl, idx), [v_measure_score(gold[r], pred[r]) for r in idx])


def test_failed_repeat_is_left_out():
    good = [_run(f"r{i}", {"m": _doc(_suite("q", "in", [v, v + 0.2]))}) for i, v in enumerate([0.3, 0.4])]
    broken = _run("r2", {}, status="failed")
    assert stats.split_runs(good + [broken]) == (good, [broken])
    assert model_intervals(good + [broken], "m") == model_intervals(good, "m")
    assert model_intervals(good + [broken], "m")["id_mean"].repeats == 2


def test_headline_format():
    diff = {"id_mean": Interval(-0.007, -0.015, 0.001, 3), "ood_mean": Interval(0.017, 0.004, 0.030, 3)}
    assert headline("multislerp", "bag100", diff) == \
        "multislerp vs bag100: ID -0.7 [-1.5, +0.1], OOD +1.7 [+0.4, +3.0] (3 repeats)"
    one = {"id_mean": None, "ood_mean": Interval(0.01, -0.002, 0.02, 1)}
    assert headline("linear", "bag20", one) == "linear vs bag20: OOD +1.0 [-0.2, +2.0] (1 repeat)"
