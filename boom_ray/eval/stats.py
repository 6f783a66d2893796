"""Confidence statistics for the report: pure functions of results documents, no model, no files.

Two sources of uncertainty, combined:
- the test items: a suite is a sample of queries (pairs, items, texts). A paired bootstrap
  resamples them with replacement (seeded, `N_BOOT` = 1000 resamples) and recomputes each suite's
  main score from the per-unit scores the evaluators keep (``units`` of a suite entry: per-query
  nDCG@10, per-pair cosine + gold for Spearman, per-item correctness, per-text cluster + label).
  *Paired*: the same resample indices serve every model and every repeat, so a difference between
  two models is resampled as a difference, which is far tighter than two separate intervals.
- the seeds: R repeats of the whole run (bag -> train -> merge) give R points; their spread
  enters as a t interval of their mean, t(0.975, R - 1) * s / sqrt(R).

For one quantity (a model's suite score, ID or OOD mean, or a merge's difference to a reference)
with R repeats: the point is the mean over repeats; the bootstrap of the mean over repeats gives
the percentile interval [q2.5, q97.5], i.e. half-widths below and above the point (clamped at
0, so the interval always holds the point); each half-width is then combined in quadrature with
the seed half-width. With 1 repeat that is the bootstrap percentile interval alone.

A run (repeat) is ``{"name": str, "status": "ok" | "failed", "error": str?, "models": {key:
results document}}``; failed runs are named by `split_runs` and left out of every interval.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

N_BOOT = 1000
SEED = 0
CONFIDENCE = 0.95
CHUNK = 100
"""Resamples drawn at a time: bounds memory at CHUNK x suite size indices."""


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float | None
    hi: float | None
    repeats: int

    def fmt_points(self, signed: bool = True) -> str:
        """In points (x 100): ``+1.7 [+0.4, +3.0]``."""
        f = "{:+.1f}" if signed else "{:.1f}"
        if self.lo is None or self.hi is None:
            return f.format(100 * self.mean)
        return f"{f.format(100 * self.mean)} [{f.format(100 * self.lo)}, {f.format(100 * self.hi)}]"


def split_runs(runs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(usable runs, failed runs): a run is usable when its status is ok."""
    ok = [r for r in runs if r.get("status", "ok") == "ok"]
    return ok, [r for r in runs if r.get("status", "ok") != "ok"]


# --------------------------------------------------------------------------- bootstrap
def _key_seed(seed: int, key: str) -> list[int]:
    return [int(seed), zlib.crc32(key.encode())]


def _n_units(units: dict[str, Any]) -> int:
    for field in ("values", "x", "pred"):
        if field in units:
            return len(units[field])
    raise ValueError(f"unknown units layout {sorted(units)}")


def score_units(units: dict[str, Any], idx: np.ndarray | None = None) -> np.ndarray | float:
    """The suite's main score from its units; with `idx` [B, n] one score per resample row."""
    stat = units["statistic"]
    if stat == "mean":
        v = np.asarray(units["values"], dtype=np.float64)
        return float(v.mean()) if idx is None else v[idx].mean(axis=1)
    if stat == "spearman":
        from scipy.stats import rankdata  # lazy: scipy (1.4 s); importing eval/report must not pay it

        x, y = np.asarray(units["x"], dtype=np.float64), np.asarray(units["y"], dtype=np.float64)
        if idx is None:
            idx = np.arange(len(x))[None, :]
            return float(_row_pearson(rankdata(x[idx], axis=1), rankdata(y[idx], axis=1))[0])
        return _row_pearson(rankdata(x[idx], axis=1), rankdata(y[idx], axis=1))
    if stat == "v_measure":
        from sklearn.metrics import v_measure_score  # lazy: sklearn (2 s); as above

        pred, gold = np.asarray(units["pred"]), np.asarray(units["gold"])
        if idx is None:
            return float(v_measure_score(gold, pred))
        return np.array([v_measure_score(gold[row], pred[row]) for row in idx])
    raise ValueError(f"unknown statistic {stat!r}")


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)


def bootstrap(unit_sets: Sequence[dict[str, Any]], key: str, n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """[len(unit_sets), n_boot] main scores of each unit set on the same resamples of its items
    (seeded by `seed` and `key`, the suite's name, so every call for that suite draws the same)."""
    sizes = {_n_units(u) for u in unit_sets}
    if len(sizes) != 1:
        raise ValueError(f"{key}: units of different sizes {sorted(sizes)} cannot be paired")
    n = sizes.pop()
    rng = np.random.default_rng(_key_seed(seed, key))
    out = np.empty((len(unit_sets), n_boot))
    for start in range(0, n_boot, CHUNK):
        idx = rng.integers(0, n, size=(min(CHUNK, n_boot - start), n))
        for i, units in enumerate(unit_sets):
            out[i, start:start + len(idx)] = score_units(units, idx)
    return out


# --------------------------------------------------------------------------- intervals
def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    from scipy.stats import t  # lazy: scipy (1.4 s); as above

    return float(t.ppf(0.5 + confidence / 2, df))


def combine(points: Sequence[float], boot_of_mean: np.ndarray | None, confidence: float = CONFIDENCE) -> Interval:
    """Interval of the mean of `points` (one per repeat) given the bootstrap distribution of that
    mean over test items (None: not available; then the seed spread alone, and no interval for a
    single repeat). See the module docstring."""
    pts = np.asarray(points, dtype=np.float64)
    r = len(pts)
    if r == 0:
        raise ValueError("no repeat to aggregate")
    mean = float(pts.mean())
    seed_half = t_quantile(r - 1, confidence) * float(pts.std(ddof=1)) / np.sqrt(r) if r > 1 else 0.0
    if boot_of_mean is None:
        if r == 1:
            return Interval(mean, None, None, r)
        below = above = 0.0
    else:
        alpha = (1 - confidence) / 2
        q_lo, q_hi = np.quantile(np.asarray(boot_of_mean, dtype=np.float64), [alpha, 1 - alpha])
        below, above = max(mean - float(q_lo), 0.0), max(float(q_hi) - mean, 0.0)
    return Interval(mean, mean - float(np.hypot(below, seed_half)), mean + float(np.hypot(above, seed_half)), r)


def _suite_entries(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in results["suites"]}


def _domains(results: dict[str, Any]) -> dict[str, list[str]]:
    suites = results["suites"]
    return {"id_mean": [s["name"] for s in suites if s["domain"] == "in"],
            "ood_mean": [s["name"] for s in suites if s["domain"] == "out"]}


def _intervals(per_run: list[tuple[dict[str, Any], dict[str, Any] | None]], n_boot: int, seed: int
               ) -> dict[str, Any]:
    """Intervals of model A (or of A - B when B is given) per suite and for the ID / OOD means;
    `per_run` holds (A's results, B's results or None) for each usable repeat."""
    first = per_run[0][0]
    names = [s["name"] for s in first["suites"]]
    points: dict[str, list[float]] = {n: [] for n in names}
    boots: dict[str, np.ndarray | None] = {}
    for name in names:
        sets, diff = [], []
        for a, b in per_run:
            ea = _suite_entries(a)[name]
            eb = _suite_entries(b)[name] if b is not None else None
            points[name].append(ea["main"] - (eb["main"] if eb is not None else 0.0))
            sets.append(ea.get("units"))
            if eb is not None:
                sets.append(eb.get("units"))
            diff.append(eb is not None)
        if any(u is None for u in sets):
            boots[name] = None
            continue
        stats = bootstrap(sets, name, n_boot, seed)
        rows, i = [], 0
        for paired in diff:  # A, (B), A, (B), ... -> A - B per repeat
            rows.append(stats[i] - stats[i + 1] if paired else stats[i])
            i += 2 if paired else 1
        boots[name] = np.mean(rows, axis=0)
    out: dict[str, Any] = {"suites": {n: combine(points[n], boots[n]) for n in names}}
    for agg, members in _domains(first).items():
        if not members:
            out[agg] = None
            continue
        agg_points = np.mean([points[n] for n in members], axis=0)
        agg_boot = None if any(boots[n] is None for n in members) else np.mean([boots[n] for n in members], axis=0)
        out[agg] = combine(list(agg_points), agg_boot)
    return out


def model_intervals(runs: Sequence[dict[str, Any]], model: str, n_boot: int = N_BOOT, seed: int = SEED
                    ) -> dict[str, Any] | None:
    """Mean over the usable repeats with a 95 % interval, per suite and for the ID / OOD means, of
    `model` (a key of each run's models); None when no usable repeat has that model."""
    ok, _ = split_runs(runs)
    per_run = [(r["models"][model], None) for r in ok if model in r["models"]]
    return _intervals(per_run, n_boot, seed) if per_run else None


def paired_difference(runs: Sequence[dict[str, Any]], model: str, reference: str, n_boot: int = N_BOOT,
                      seed: int = SEED) -> dict[str, Any] | None:
    """`model` minus `reference`, per suite and for the ID / OOD means, paired within each usable
    repeat that has both; None when none has both."""
    ok, _ = split_runs(runs)
    per_run = [(r["models"][model], r["models"][reference]) for r in ok
               if model in r["models"] and reference in r["models"]]
    return _intervals(per_run, n_boot, seed) if per_run else None


def headline(label: str, reference: str, diff: dict[str, Any]) -> str:
    """``multislerp vs bag100: ID -0.7 [-1.5, +0.1], OOD +1.7 [+0.4, +3.0] (3 repeats)`` (points)."""
    parts = [f"{name} {diff[agg].fmt_points()}" for agg, name in (("id_mean", "ID"), ("ood_mean", "OOD"))
             if diff.get(agg) is not None]
    repeats = next(diff[a].repeats for a in ("id_mean", "ood_mean") if diff.get(a) is not None) if parts else 0
    return f"{label} vs {reference}: {', '.join(parts) or 'no suites'} ({repeats} repeat{'s' if repeats != 1 else ''})"
