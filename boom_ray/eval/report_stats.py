"""The report's evidence: intervals per model and suite, merge-vs-reference headlines, and the
prompt comparison on out-of-domain suites. Pure: results documents in, dicts and Markdown out.

The aggregation takes a list of runs (repeats; see `boom_ray.eval.stats`), so a report over
several seeded repeats is the same call with more runs; a single run gives bootstrap-only
intervals. A failed repeat is named and left out.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from boom_ray.eval import stats

FULL_BAG = "bag100"


def references(runs: Sequence[dict[str, Any]], bags: Sequence[str]) -> list[str]:
    """The references a merge is compared with: the full-corpus bag (bag100) and the best single
    bag by its mean over all suites (averaged over the usable repeats), without duplicates."""
    ok, _ = stats.split_runs(runs)
    present = [b for b in bags if any(b in r["models"] for r in ok)]
    refs = [FULL_BAG] if FULL_BAG in present else []

    def overall(bag: str) -> float:
        values = [r["models"][bag]["mean"] for r in ok if bag in r["models"] and r["models"][bag]["mean"] is not None]
        return float(np.mean(values)) if values else float("-inf")

    if present:
        best = max(present, key=overall)
        if best not in refs:
            refs.append(best)
    return refs


def aggregate(runs: Sequence[dict[str, Any]], models: Sequence[Any], n_boot: int = stats.N_BOOT,
              seed: int = stats.SEED) -> dict[str, Any]:
    """{"intervals": {model key: model_intervals}, "differences": [{"model", "reference",
    "label", "reference_label", "diff", "line"}], "repeats": [names used], "failed": [{"name",
    "error"}]}; `models` are the report's RunModels (key, label, kind)."""
    ok, failed = stats.split_runs(runs)
    labels = {m.key: m.label for m in models}
    intervals = {m.key: stats.model_intervals(ok, m.key, n_boot, seed) for m in models}
    bags = [m.key for m in models if m.kind == "bag"]
    diffs = []
    for m in models:
        if m.kind != "merge":
            continue
        for ref in references(ok, bags):
            diff = stats.paired_difference(ok, m.key, ref, n_boot, seed)
            if diff is not None:
                diffs.append({"model": m.key, "reference": ref, "label": m.label, "reference_label": labels[ref],
                              "diff": diff, "line": stats.headline(m.label, labels[ref], diff)})
    return {"intervals": intervals, "differences": diffs, "repeats": [r["name"] for r in ok],
            "failed": [{"name": r["name"], "error": r.get("error")} for r in failed]}


def _cell(iv: stats.Interval | None) -> str:
    if iv is None:
        return "-"
    if iv.lo is None:
        return f"{iv.mean:.4f}"
    return f"{iv.mean:.4f} [{iv.lo:.3f}, {iv.hi:.3f}]"


def render_headlines(agg: dict[str, Any]) -> list[str]:
    """Markdown lines the report opens with: one per merge and reference, the repeats used and
    the repeats left out (named, with their error)."""
    n = len(agg["repeats"])
    lines = [f"**{d['line']}**  " for d in agg["differences"]]
    if lines:
        lines += ["", "Differences in points (x 100) of the main metric, merge minus reference, with 95 % "
                  f"intervals: paired bootstrap over the suites' queries / pairs ({stats.N_BOOT:,} seeded "
                  "resamples)" + (" combined with the spread over repeats." if n > 1 else "; one repeat, so "
                                  "the interval says nothing about seed-to-seed variation.")]
    lines += ["", f"Repeats used: {n} ({', '.join(agg['repeats']) or 'none'})."]
    for f in agg["failed"]:
        lines.append(f"Left out of every interval: repeat `{f['name']}` failed ({f['error'] or 'no error recorded'}).")
    return lines


def render_intervals(agg: dict[str, Any], models: Sequence[Any], suite_names: Sequence[str]) -> list[str]:
    """Markdown lines: mean and 95 % interval per model, per suite and for the ID / OOD means."""
    head = ["model"] + list(suite_names) + ["ID mean", "OOD mean"]
    lines = ["", "Mean and 95 % interval per model:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        iv = agg["intervals"].get(m.key)
        if iv is None:
            continue
        cells = [_cell(iv["suites"].get(s)) for s in suite_names] + [_cell(iv["id_mean"]), _cell(iv["ood_mean"])]
        lines.append("| " + " | ".join([m.label] + cells) + " |")
    return lines


def render_prompt_comparison(models: Sequence[Any], results: dict[str, dict[str, Any]],
                             variants: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines: each model's OOD suites as evaluated, with the model's own advertised
    prompt only, and with no prompt at all (`variants[key]` = {"model": doc, "none": doc})."""
    ood = [s["name"] for s in next(iter(results.values()))["suites"] if s["domain"] == "out"]
    if not ood or not variants:
        return []
    head = ["model", "prompt"] + ood + ["OOD mean"]
    lines = ["", "Out-of-domain suites by prompt: as evaluated (suite instruction, else the model's own "
             "prompt), the model's advertised prompt only (what a user following its "
             "config_sentence_transformers.json gets), and no prompt:", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        docs = [("as evaluated", results.get(m.key))] + [(name, variants.get(m.key, {}).get(mode))
                                                         for name, mode in (("advertised", "model"), ("none", "none"))]
        for name, doc in docs:
            if doc is None:
                continue
            by_name = {s["name"]: s["main"] for s in doc["suites"]}
            vals = [by_name.get(s) for s in ood]
            known = [v for v in vals if v is not None]
            cells = ["-" if v is None else f"{v:.4f}" for v in vals]
            mean = f"{np.mean(known):.4f}" if known else "-"
            lines.append("| " + " | ".join([m.label, name] + cells + [mean]) + " |")
    return lines
