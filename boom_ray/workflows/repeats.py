"""`boom run --repeats N`: N independent seeded runs of the pipeline and one report over them.

Repeat k (0 .. N-1) is a whole run in `<workdir>/repeat-<k>/` (bags/, models/, merges/, eval/,
run.json, its own report) with `bagging.seed + k` and `train.seed + k`; every repeat looks its
evaluations up in `<workdir>/eval-cache/` (by model and evaluation fingerprint) first, so a model
that is the same in every repeat (the base model) is evaluated once. The top-level
`<workdir>/report.md` + `report.png` aggregate the usable repeats (`report_stats.aggregate`: a
paired bootstrap over test items combined with the spread over repeats), and
`<workdir>/repeats.json` records each repeat's seeds, status and error. A repeat that fails is
named in the report with its error and left out of every interval and mean; the others still
run. With N == 1 the run is the work dir itself, exactly as without repeats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from boom_ray.config import BoomConfig, derive
from boom_ray.errors import BoomError
from boom_ray.eval.report import (RunModel, evaluate_run_with_variants, render_chart, render_markdown, run_models,
                                  write_report)
from boom_ray.eval.report_stats import aggregate, render_headlines
from boom_ray.runtime import storage
from boom_ray.runtime.ray_session import init_ray
from boom_ray.workflows.pipeline import check_runnable, run_pipeline
from boom_ray.workflows.stages import one_line

CACHE_DIR = "eval-cache"
SUMMARY = "repeats.json"
KIND_ORDER = ("base", "bag", "merge")


@dataclass(frozen=True)
class Repeat:
    name: str
    cfg: BoomConfig
    bagging_seed: int
    train_seed: int


def repeat_name(k: int) -> str:
    return f"repeat-{k}"


def repeat_configs(cfg: BoomConfig) -> list[Repeat]:
    """The runs of `cfg`: with repeats == 1, the run itself; else one per repeat, in its own folder
    with seeds + k and the shared evaluation cache. Pure."""
    if cfg.repeats == 1:
        return [Repeat("run", cfg, cfg.bagging.seed, cfg.train.seed)]
    out = []
    for k in range(cfg.repeats):
        name = repeat_name(k)
        changes = {"workdir": storage.join(cfg.workdir, name), "repeats": 1,
                   "bagging.seed": cfg.bagging.seed + k, "train.seed": cfg.train.seed + k,
                   "eval.cache_dir": cfg.eval.cache_dir or storage.join(cfg.workdir, CACHE_DIR)}
        out.append(Repeat(name, derive(cfg, changes, f"{name} of {cfg.workdir}"), cfg.bagging.seed + k,
                          cfg.train.seed + k))
    return out


def mean_results(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A results document whose main scores and ID / OOD means are the means over `docs` (one
    model's results in each usable repeat); a score missing from a repeat is left out of its
    mean. Pure."""
    def mean(values: list[Any]) -> float | None:
        known = [v for v in values if v is not None]
        return float(np.mean(known)) if known else None

    suites = []
    for entry in docs[0]["suites"]:
        same = [s for d in docs for s in d["suites"] if s["name"] == entry["name"]]
        suites.append({k: entry[k] for k in ("name", "type", "domain", "main_metric") if k in entry}
                      | {"main": mean([s["main"] for s in same]), "repeats": len(same)})
    return {"model": docs[0].get("model"), "suites": suites, "repeats": len(docs),
            **{agg: mean([d.get(agg) for d in docs]) for agg in ("id_mean", "ood_mean", "mean")}}


def union_models(per_repeat: Sequence[tuple[str, Sequence[Any]]], workdir: str) -> list[Any]:
    """The report's models over every repeat ((repeat workdir, its RunModels) each): base, bags,
    merges, each once, in first-seen order; a model whose folder differs per repeat gets the
    path pattern `<workdir>/repeat-*/...`. Pure."""
    seen: dict[str, list[Any]] = {}
    for repeat_dir, models in per_repeat:
        for m in models:
            seen.setdefault(m.key, []).append((repeat_dir, m))
    out = []
    for key, found in seen.items():
        first_dir, first = found[0]
        path = first.path
        if len({m.path for _, m in found}) > 1 and path.startswith(first_dir.rstrip("/") + "/"):
            path = storage.join(workdir, "repeat-*", path[len(first_dir.rstrip("/")) + 1:])
        out.append(RunModel(key, first.label, path, first.kind))
    return sorted(out, key=lambda m: KIND_ORDER.index(m.kind) if m.kind in KIND_ORDER else len(KIND_ORDER))


def failed_names(entries: Sequence[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in entries if e["status"] != "ok"]


def repeats_table(entries: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines: one row per repeat with its seeds, status and error."""
    lines = ["", "Repeats:", "", "| repeat | bagging.seed | train.seed | status | error |", "|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e['name']} | {e['bagging_seed']} | {e['train_seed']} | {e['status']} | "
                     f"{(e.get('error') or '').replace('|', '/')} |")
    return lines


def write_repeats_report(cfg: BoomConfig, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`<workdir>/report.md` + `report.png` over the repeats (`entries`: repeats.json's, each with
    "name" and "status"); the usable repeats' results come from their evaluation caches. Returns
    {"report_md", "report_png" (None without a usable repeat), "markdown", "evidence", "results"}."""
    status = {e["name"]: e for e in entries}
    runs, per_repeat, variants = [], [], {}
    for rep in repeat_configs(cfg):
        entry = status.get(rep.name, {"status": "failed", "error": "not run"})
        if entry["status"] != "ok":
            runs.append({"name": rep.name, "status": "failed", "error": entry.get("error"), "models": {}})
            continue
        results, extra = evaluate_run_with_variants(rep.cfg)  # cached by the repeat's eval stage
        runs.append({"name": rep.name, "status": "ok", "models": results})
        per_repeat.append((rep.cfg.workdir, run_models(rep.cfg)))
        for key, modes in extra.items():
            for mode, doc in modes.items():
                variants.setdefault(key, {}).setdefault(mode, []).append(doc)
    models = union_models(per_repeat, cfg.workdir)
    evidence = aggregate(runs, models)
    ok = [r for r in runs if r["status"] == "ok"]
    means = {m.key: mean_results([r["models"][m.key] for r in ok if m.key in r["models"]]) for m in models}
    mean_variants = {key: {mode: mean_results(docs) for mode, docs in modes.items()} for key, modes in variants.items()}
    fs, root = storage.resolve(cfg.workdir)
    md_path, png_path = storage.join(root, "report.md"), storage.join(root, "report.png")
    notes = [f"Scores are means over the {len(ok)} usable repeat(s) of {len(runs)} (seeds bagging.seed + k, "
             "train.seed + k for repeat k); intervals below combine the test items' bootstrap with the "
             "spread over repeats.", ""]
    if models:
        markdown = render_markdown(cfg, models, means, evidence, mean_variants, notes) + "\n".join(
            repeats_table(entries)) + "\n"
        storage.write_bytes(fs, png_path, render_chart(models, means, evidence))
    else:
        markdown = "\n".join([f"# BOOM report: {cfg.workdir}", "", "No usable repeat: nothing to score.", ""]
                             + render_headlines(evidence) + repeats_table(entries)) + "\n"
        png_path = None
    storage.write_bytes(fs, md_path, markdown.encode())
    return {"report_md": md_path, "report_png": png_path, "markdown": markdown, "evidence": evidence,
            "results": means}


def run_repeats(cfg: BoomConfig, from_stage: str | None = None) -> dict[str, Any]:
    """Run every repeat's pipeline in turn (a failed one does not stop the others), then the
    top-level report; returns repeats.json's content ({"repeats": [entry], "failed": [names],
    "report_md", "report_png"}). With repeats == 1: `run_pipeline` on the work dir itself."""
    if cfg.repeats == 1:
        run_pipeline(cfg, from_stage)
        return {"repeats": [{"name": "run", "workdir": cfg.workdir, "bagging_seed": cfg.bagging.seed,
                             "train_seed": cfg.train.seed, "status": "ok", "error": None}], "failed": []}
    check_runnable(cfg, from_stage)
    fs, root = storage.resolve(cfg.workdir)
    summary_path = storage.join(root, SUMMARY)
    entries: list[dict[str, Any]] = []
    for rep in repeat_configs(cfg):
        print(f"\n######## {rep.name} of {cfg.repeats}: bagging.seed {rep.bagging_seed}, train.seed "
              f"{rep.train_seed} ({rep.cfg.workdir}) ########", flush=True)
        entry = {"name": rep.name, "workdir": rep.cfg.workdir, "bagging_seed": rep.bagging_seed,
                 "train_seed": rep.train_seed, "status": "running", "error": None}
        start = time.perf_counter()
        try:
            run_pipeline(rep.cfg, from_stage)
            entry["status"] = "ok"
        except Exception as exc:  # this repeat only: the others still run, the report names it
            entry["status"], entry["error"] = "failed", one_line(exc)
            print(f"{rep.name} failed: {entry['error']}", flush=True)
        entry["seconds"] = round(time.perf_counter() - start, 2)
        entries.append(entry)
        storage.write_json(fs, summary_path, {"repeats": entries, "failed": failed_names(entries), "finished": False})
    print(f"\n######## report over {cfg.repeats} repeats ########", flush=True)
    out = write_repeats_report(cfg, entries)
    print(out["markdown"])
    print(f"report: {out['report_md']}" + (f" and {out['report_png']}" if out["report_png"] else ""))
    summary = {"repeats": entries, "failed": failed_names(entries),
               "finished": True, "report_md": out["report_md"], "report_png": out["report_png"]}
    storage.write_json(fs, summary_path, summary)
    return summary


def read_summary(cfg: BoomConfig) -> dict[str, Any]:
    """repeats.json of a run with repeats; a BoomError when `boom run` has not written it yet."""
    fs, root = storage.resolve(cfg.workdir)
    summary = storage.read_json_or_none(fs, storage.join(root, SUMMARY))
    if summary is None:
        raise BoomError(f"{cfg.workdir}: no {SUMMARY}; run `boom run --repeats {cfg.repeats}` first")
    return summary


def report_run(cfg: BoomConfig) -> dict[str, Any]:
    """`boom report`: the report over the repeats that `boom run --repeats N` recorded in
    repeats.json, else the run's own report (write_report's result either way)."""
    fs, root = storage.resolve(cfg.workdir)
    if not storage.exists(fs, root):
        raise BoomError(f"{cfg.workdir}: work directory not found")
    init_ray(cfg.ray)
    if cfg.repeats == 1 and not storage.exists(fs, storage.join(root, SUMMARY)):
        return write_report(cfg)
    entries = read_summary(cfg)["repeats"]
    if cfg.repeats == 1:  # the config without its --repeats flag: the work dir says how many
        cfg = derive(cfg, {"repeats": len(entries)}, f"{cfg.workdir}/{SUMMARY}")
    return write_repeats_report(cfg, entries)
