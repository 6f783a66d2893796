"""Results of one model on many suites: ID / OOD means, objectives for the sweep, a text table."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from boom_ray.errors import BoomError

AGGREGATES = ("id_mean", "ood_mean", "mean")


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _means(suites: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    return {"id_mean": _mean([s["main"] for s in suites if s["domain"] == "in"]),
            "ood_mean": _mean([s["main"] for s in suites if s["domain"] == "out"]),
            "mean": _mean([s["main"] for s in suites])}


def summarize(model: str, suites: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The results document: per-suite entries plus the means of each suite's main metric over
    in-domain (id_mean) and out-of-domain (ood_mean) suites; a mean is null with no such suite.
    Suites scored at truncated sizes (`eval.dims`: an entry's "dims") also get those means per
    size under "by_dim" ({"256": {"id_mean": ..., ...}})."""
    out = {"model": model, "suites": list(suites), **_means(suites)}
    dims = sorted({d for s in suites for d in s.get("dims", {})}, key=int)
    if dims:
        out["by_dim"] = {d: _means([{**s, "main": s["dims"][d]["main"]} for s in suites if d in s.get("dims", {})])
                         for d in dims}
    return out


def score(results: dict[str, Any], objective: str = "ood_mean/ndcg@10") -> float:
    """One number from a results document, for a sweep's objective.

    `objective` is ``AGGREGATE/METRIC`` where AGGREGATE is id_mean, ood_mean, mean or a suite name,
    and METRIC a metric name (ndcg@10, mrr@10, recall@100, spearman, accuracy, f1_macro, v_measure)
    or ``main`` (each suite's main metric). A plain aggregate (``ood_mean``) means ``AGGREGATE/main``.
    Aggregates average METRIC over the suites of that domain that report it."""
    where, _, metric = objective.partition("/")
    metric = metric or "main"
    suites = results.get("suites", [])
    if where == "id_mean":
        chosen = [s for s in suites if s["domain"] == "in"]
    elif where == "ood_mean":
        chosen = [s for s in suites if s["domain"] == "out"]
    elif where == "mean":
        chosen = list(suites)
    else:
        chosen = [s for s in suites if s["name"] == where]
        if not chosen:
            raise BoomError(f"objective {objective!r}: no suite named {where!r} "
                            f"(aggregates: {', '.join(AGGREGATES)}; suites: {[s['name'] for s in suites]})")
    values = [s["main"] if metric == "main" else s["metrics"][metric]
              for s in chosen if metric == "main" or metric in s["metrics"]]
    if not values:
        raise BoomError(f"objective {objective!r}: no evaluated suite reports {metric!r} there")
    return float(np.mean(values))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(results: dict[str, Any]) -> str:
    """Aligned text table of one model's results, as `boom eval` prints it."""
    header = ["suite", "type", "domain", "metric", "score", "other metrics"]
    rows = []
    for s in results["suites"]:
        others = ", ".join(f"{k}={v:.4f}" for k, v in s["metrics"].items()
                           if isinstance(v, float) and k != s["main_metric"])
        rows.append([s["name"], s["type"], s["domain"], s["main_metric"], _fmt(s["main"]), others])
    rows.append(["ID mean", "", "in", "main", _fmt(results["id_mean"]), ""])
    rows.append(["OOD mean", "", "out", "main", _fmt(results["ood_mean"]), ""])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
