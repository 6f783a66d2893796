"""`boom report`: every model of a run (base, each bag, each merge) on every suite of the run.

    boom report --config jobs/configs/demo.yaml

Writes `<workdir>/report.md` (model x suite table with ID and OOD means) and `<workdir>/report.png`
(ID mean vs OOD mean per model). Each model's results are cached in `<workdir>/eval/<key>.json`
with a fingerprint of the model folder (file names, sizes, modification times) and of the
evaluation (suite files, domains, instructions, prompt settings), so re-running the report after
adding one merge evaluates only that merge.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from typing import Any

from boom_ray.config import RunConfig, bag_name
from boom_ray.errors import BoomError
from boom_ray.eval.evaluate import evaluate_model, load_suites
from boom_ray.storage import exists, join, read_json_or_none, resolve, stable_hash, tree_digest, write_bytes, write_json

log = logging.getLogger(__name__)

EVAL_VERSION = 1
"""Bump when scoring changes, so cached results from older code are recomputed."""


@dataclass(frozen=True)
class RunModel:
    key: str
    """File-name-safe id: base, bag20, merge-multislerp."""
    label: str
    path: str
    kind: str  # base | bag | merge


def run_models(cfg: RunConfig) -> list[RunModel]:
    """The run's models whose folders exist, in the report's order: base, bags, merges."""
    from boom_ray.model.settings import resolve_model_path

    models = []
    base = cfg.model.name_or_path
    if "://" in base or os.path.isdir(resolve_model_path(base)):
        models.append(RunModel("base", "base", base, "base"))
    else:
        log.warning("base model %s is not a local folder; left out of the report", base)

    def finished(path: str) -> bool:
        return exists(*resolve(join(path, "config.json")))

    for ratio in cfg.bagging.ratios:
        name = bag_name(ratio)
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
    from boom_ray.model.settings import resolve_model_path

    return tree_digest(path if "://" in path else resolve_model_path(path))


def eval_fingerprint(cfg: RunConfig) -> str:
    """Changes with the suites' contents and tags and with the settings that change embeddings
    (suites by content: a job's working-dir upload gives them new modification times)."""
    suites = [[ref.model_dump(exclude={"path"}) | {"name": os.path.basename(ref.path.rstrip("/"))},
               tree_digest(ref.path, content=True)] for ref in cfg.eval.suites]
    return stable_hash({"version": EVAL_VERSION, "suites": suites,
                        "model": cfg.model.model_dump(include=cfg.model.model_fields_set)})


def evaluate_run(cfg: RunConfig, force: bool = False) -> dict[str, dict[str, Any]]:
    """Results per model key, evaluating only models whose cached results are missing or stale."""
    if not cfg.eval.suites:
        raise BoomError("eval.suites is empty in the run config: there is nothing to evaluate")
    suites = load_suites(cfg.eval.suites)  # read once; a broken suite fails before any model loads
    fs, workdir = resolve(cfg.workdir)
    eval_fp = eval_fingerprint(cfg)
    out = {}
    for model in run_models(cfg):
        cache = join(workdir, "eval", f"{model.key}.json")
        fp = model_fingerprint(model.path)
        cached = None if force else read_json_or_none(fs, cache)
        if cached and cached.get("fingerprint") == fp and cached.get("eval_fingerprint") == eval_fp:
            log.info("%s: cached results are current", model.key)
            out[model.key] = cached["results"]
            continue
        print(f"evaluating {model.label} ({model.path})")
        model_cfg = cfg.model if model.kind == "base" else None
        results = evaluate_model(model.path, suites, cfg.eval, model_cfg=model_cfg, show_progress=True)
        write_json(fs, cache, {"model": model.path, "fingerprint": fp, "eval_fingerprint": eval_fp,
                               "results": results})
        out[model.key] = results
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_markdown(cfg: RunConfig, models: list[RunModel], results: dict[str, dict[str, Any]]) -> str:
    first = results[models[0].key]["suites"]
    head = ["model"] + [f"{s['name']} ({s['domain']}, {s['main_metric']})" for s in first] + ["ID mean", "OOD mean"]
    lines = [f"# BOOM report: {cfg.workdir}", "",
             "Each suite column shows the suite's main metric (nDCG@10 retrieval, Spearman STS, accuracy "
             "classification, V-measure clustering); ID / OOD mean average them over in-domain / "
             "out-of-domain suites.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        r = results[m.key]
        by_name = {s["name"]: s["main"] for s in r["suites"]}
        row = [m.label] + [_fmt(by_name.get(s["name"])) for s in first] + [_fmt(r["id_mean"]), _fmt(r["ood_mean"])]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Models:", ""] + [f"- `{m.label}` ({m.kind}): `{m.path}`" for m in models]
    lines += ["", "![ID vs OOD](report.png)", ""]
    return "\n".join(lines)


def render_chart(models: list[RunModel], results: dict[str, dict[str, Any]]) -> bytes:
    """PNG: one labelled point per model at (ID mean, OOD mean); bars when one of the two is missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"base": "tab:gray", "bag": "tab:blue", "merge": "tab:red"}
    ids = [results[m.key]["id_mean"] for m in models]
    oods = [results[m.key]["ood_mean"] for m in models]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    if all(v is not None for v in ids + oods):
        for m, x, y in zip(models, ids, oods):
            ax.scatter([x], [y], color=colors[m.kind], s=40, zorder=3)
            ax.annotate(m.label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=9)
        ax.set_xlabel("in-domain mean (main metric)")
        ax.set_ylabel("out-of-domain mean (main metric)")
        ax.set_title("ID vs OOD per model")
        for kind, color in colors.items():
            if any(m.kind == kind for m in models):
                ax.scatter([], [], color=color, label=kind)
        ax.legend(loc="best", fontsize=8)
    else:
        which, values = ("OOD", oods) if all(v is not None for v in oods) else ("ID", ids)
        values = [v if v is not None else 0.0 for v in values]
        ax.barh([m.label for m in models], values, color=[colors[m.kind] for m in models])
        ax.set_xlabel(f"{which} mean (main metric)")
        ax.set_title(f"{which} mean per model (the run has no {'ID' if which == 'OOD' else 'OOD'} suites)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_report(cfg: RunConfig, force: bool = False) -> dict[str, Any]:
    """Evaluate (with the cache) and write report.md + report.png; what the pipeline's last stage calls.

    Returns {"report_md", "report_png", "markdown" (the text written), "results": {model key: results}}."""
    models = run_models(cfg)
    if not models:
        raise BoomError(f"{cfg.workdir}: no model to report on (no base folder, models/<bag>/ or merges/<name>/)")
    results = evaluate_run(cfg, force=force)
    fs, workdir = resolve(cfg.workdir)
    md_path, png_path = join(workdir, "report.md"), join(workdir, "report.png")
    markdown = render_markdown(cfg, models, results)
    write_bytes(fs, md_path, markdown.encode())
    write_bytes(fs, png_path, render_chart(models, results))
    return {"report_md": md_path, "report_png": png_path, "markdown": markdown, "results": results}
