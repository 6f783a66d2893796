"""`boom report`: every model of a run (base, each bag, each merge) on every suite of the run.

    boom report --config jobs/configs/demo.yaml

Writes `<workdir>/report.md` (model x suite table with ID and OOD means, intervals, merge-vs-bag
headlines, out-of-domain scores by prompt), `<workdir>/report.png` (ID mean vs OOD mean per model)
and `<workdir>/mteb_results/<model key>/<suite>.json` (mteb TaskResult layout). Each model's
results are cached in `<workdir>/eval/<key>.json` with a fingerprint of the model folder (file
names, sizes, modification times) and of the evaluation (suite files, domains, instructions,
prompt settings), so re-running the report after adding one merge evaluates only that merge.
Once evaluated, a bag's or merge's own model card (README.md) carries its scores
(`boom_ray.cards.evaluated`); the base model's card is never touched.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from boom_ray.cards.evaluated import add_results
from boom_ray.config import BoomConfig
from boom_ray.corpus.bags import run_bags
from boom_ray.errors import BoomError
from boom_ray.eval.chart import render_chart  # noqa: F401  (re-exported: the report's chart)
from boom_ray.eval.evaluate import evaluate_model, load_suites
from boom_ray.eval.mteb_results import write_task_results
from boom_ray.eval.prompts import declared_prompts
from boom_ray.eval.report_stats import aggregate, render_headlines, render_intervals, render_prompt_comparison
from boom_ray.eval.results import summarize
from boom_ray.model.settings import resolve_model_path
from boom_ray.runtime.storage import exists, join, read_json_or_none, resolve, stable_hash, tree_digest, write_bytes, write_json

log = logging.getLogger(__name__)

MTEB_DIR = "mteb_results"
"""`<workdir>/mteb_results/<model key>/<suite>.json`: the report's results in mteb's TaskResult layout."""

EVAL_VERSION = 2
"""Bump when scoring changes, so cached results from older code are recomputed (2: prompts only as
declared, per-unit scores, out-of-domain prompt variants)."""


@dataclass(frozen=True)
class RunModel:
    key: str
    """File-name-safe id: base, bag20, merge-multislerp."""
    label: str
    path: str
    kind: str  # base | bag | merge


def run_models(cfg: BoomConfig) -> list[RunModel]:
    """The run's models whose folders exist, in the report's order: base, bags, merges."""
    models = []
    base = cfg.model.name_or_path
    if "://" in base or os.path.isdir(resolve_model_path(base)):
        models.append(RunModel("base", "base", base, "base"))
    else:
        log.warning("base model %s is not a local folder; left out of the report", base)

    def finished(path: str) -> bool:
        return exists(*resolve(join(path, "config.json")))

    for name in run_bags(cfg, required=False):
        path = join(cfg.workdir, "models", name)
        if finished(path):
            models.append(RunModel(name, name, path, "bag"))
    for spec in cfg.merge.merges:
        path = join(cfg.workdir, "merges", spec.name)
        if finished(path):
            models.append(RunModel(f"merge-{spec.name}", spec.name, path, "merge"))
    return models


def model_fingerprint(path: str) -> str:
    """Changes whenever a file of the model folder is added, removed or rewritten."""
    return tree_digest(path if "://" in path else resolve_model_path(path))


def eval_fingerprint(cfg: BoomConfig) -> str:
    """Changes with the suites' contents and tags and with the settings that change embeddings
    (suites by content: a job's working-dir upload gives them new modification times)."""
    suites = [[ref.model_dump(exclude={"path"}) | {"name": os.path.basename(ref.path.rstrip("/"))},
               tree_digest(ref.path, content=True)] for ref in cfg.eval.suites]
    extra = {"dims": cfg.eval.dims} if cfg.eval.dims else {}  # absent by default: caches stay valid
    if cfg.eval.prompts != "declared":
        extra["prompts"] = cfg.eval.prompts
    return stable_hash({"version": EVAL_VERSION, "suites": suites,
                        "model": cfg.model.model_dump(include=cfg.model.model_fields_set), **extra})


def evaluate_run(cfg: BoomConfig, force: bool = False) -> dict[str, dict[str, Any]]:
    """Results per model key, evaluating only models whose cached results are missing or stale."""
    return evaluate_run_with_variants(cfg, force)[0]


def prompt_variants(model: RunModel, suites: list, results: dict[str, Any], cfg: BoomConfig,
                    model_cfg) -> dict[str, Any]:
    """The model's out-of-domain suites with its own advertised prompt only ("model") and with no
    prompt ("none"); an evaluation that would repeat one already made is reused, not rerun."""
    ood = [s for s in suites if s.domain == "out"]
    if not ood:
        return {}
    names = {s.name for s in ood}
    same = summarize(model.path, [e for e in results["suites"] if e["name"] in names])
    mode, instructed = cfg.eval.prompts, any(s.instruction for s in ood)
    declared = declared_prompts(model.path, model_cfg)
    declares = declared.query or declared.document
    # "model" is the main evaluation when that ran in model mode, or in declared mode on suites
    # without instructions; "none" equals "model" for a model that declares no prompt.
    if mode == "model" or (mode == "declared" and not instructed):
        by_model = same
    elif mode == "none" and not declares:
        by_model = same
    else:
        by_model = evaluate_model(model.path, ood, cfg.eval, model_cfg=model_cfg, prompts="model")
    if mode == "none":
        none = same
    elif not declares:
        none = by_model
    else:
        none = evaluate_model(model.path, ood, cfg.eval, model_cfg=model_cfg, prompts="none")
    return {"model": by_model, "none": none}


def evaluate_run_with_variants(cfg: BoomConfig, force: bool = False
                               ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(results per model key, prompt variants per model key), from the cache where current."""
    if not cfg.eval.suites:
        raise BoomError("eval.suites is empty in the run config: there is nothing to evaluate")
    suites = load_suites(cfg.eval.suites)  # read once; a broken suite fails before any model loads
    fs, workdir = resolve(cfg.workdir)
    eval_fp = eval_fingerprint(cfg)
    out, variants = {}, {}
    for model in run_models(cfg):
        cache = join(workdir, "eval", f"{model.key}.json")
        fp = model_fingerprint(model.path)

        def current(doc: Any) -> bool:
            return bool(doc) and doc.get("fingerprint") == fp and doc.get("eval_fingerprint") == eval_fp

        cached = None if force else read_json_or_none(fs, cache)
        shared = shared_cache_path(cfg, model, fp, eval_fp)
        if not current(cached) and shared is not None and not force:
            cached = read_json_or_none(*shared)
            if current(cached):  # evaluated by another run (a repeat): keep a copy in this run's eval/
                write_json(fs, cache, cached)
        if current(cached):
            log.info("%s: cached results are current", model.key)
            doc, fresh = cached, False
        else:
            print(f"evaluating {model.label} ({model.path})")
            model_cfg = cfg.model if model.kind == "base" else None
            results = evaluate_model(model.path, suites, cfg.eval, model_cfg=model_cfg, show_progress=True)
            doc = {"model": model.path, "fingerprint": fp, "eval_fingerprint": eval_fp,
                   "results": results, "prompt_variants": prompt_variants(model, suites, results, cfg, model_cfg)}
            fresh = True
        if model.kind != "base" and add_results(model.path, doc["results"], corpus=cfg.corpus.path):
            # the card is ours, not the model: fingerprint the folder again so the cache stays current
            doc, fresh = {**doc, "fingerprint": model_fingerprint(model.path)}, True
        if fresh:
            write_json(fs, cache, doc)
            shared = shared_cache_path(cfg, model, doc["fingerprint"], eval_fp)
            if shared is not None:
                write_json(*shared, doc)
        out[model.key], variants[model.key] = doc["results"], doc.get("prompt_variants", {})
    return out, variants


def shared_cache_path(cfg: BoomConfig, model: RunModel, fp: str, eval_fp: str) -> tuple[Any, str] | None:
    """(filesystem, path) of `model`'s entry in the cache shared by several runs (`eval.cache_dir`),
    named by its key and a hash of the two fingerprints; None when the run shares none."""
    if not cfg.eval.cache_dir:
        return None
    fs, root = resolve(cfg.eval.cache_dir)
    return fs, join(root, f"{model.key}-{stable_hash([model.kind, fp, eval_fp], 24)}.json")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_markdown(cfg: BoomConfig, models: list[RunModel], results: dict[str, dict[str, Any]],
                    evidence: dict[str, Any] | None = None, variants: dict[str, dict[str, Any]] | None = None,
                    notes: list[str] | None = None) -> str:
    """The report: headlines and intervals (`evidence`, from report_stats.aggregate), `notes`
    (Markdown lines), the score table, the out-of-domain prompt comparison (`variants`) and the
    model list."""
    first = results[models[0].key]["suites"]
    head = ["model"] + [f"{s['name']} ({s['domain']}, {s['main_metric']})" for s in first] + ["ID mean", "OOD mean"]
    lines = [f"# BOOM report: {cfg.workdir}", ""]
    if evidence is not None:
        lines += render_headlines(evidence) + [""]
    lines += list(notes or [])
    lines += ["Each suite column shows the suite's main metric (nDCG@10 retrieval, Spearman STS, accuracy "
              "classification, V-measure clustering); ID / OOD mean average them over in-domain / "
              "out-of-domain suites.", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        r = results[m.key]
        by_name = {s["name"]: s["main"] for s in r["suites"]}
        row = [m.label] + [_fmt(by_name.get(s["name"])) for s in first] + [_fmt(r["id_mean"]), _fmt(r["ood_mean"])]
        lines.append("| " + " | ".join(row) + " |")
    if evidence is not None:
        lines += render_intervals(evidence, models, [s["name"] for s in first])
    lines += render_prompt_comparison(models, results, variants or {})
    lines += ["", "Models:", ""] + [f"- `{m.label}` ({m.kind}): `{m.path}`" for m in models]
    lines += ["", "![ID vs OOD](report.png)", ""]
    return "\n".join(lines)


def write_report(cfg: BoomConfig, force: bool = False) -> dict[str, Any]:
    """Evaluate (with the cache) and write report.md + report.png; what the pipeline's last stage calls.

    Returns {"report_md", "report_png", "markdown" (the text written), "results": {model key: results},
    "evidence" (intervals and differences, `report_stats.aggregate`), "prompt_variants"}."""
    models = run_models(cfg)
    if not models:
        raise BoomError(f"{cfg.workdir}: no model to report on (no base folder, models/<bag>/ or merges/<name>/)")
    results, variants = evaluate_run_with_variants(cfg, force=force)
    fs, workdir = resolve(cfg.workdir)
    md_path, png_path = join(workdir, "report.md"), join(workdir, "report.png")
    evidence = aggregate([{"name": "run", "status": "ok", "models": results}], models)
    markdown = render_markdown(cfg, models, results, evidence, variants)
    write_bytes(fs, md_path, markdown.encode())
    write_bytes(fs, png_path, render_chart(models, results, evidence))
    for m in models:  # mteb's TaskResult layout, one file per model and suite
        write_task_results(join(cfg.workdir, MTEB_DIR, m.key), results[m.key])
    return {"report_md": md_path, "report_png": png_path, "markdown": markdown, "results": results,
            "evidence": evidence, "prompt_variants": variants}
