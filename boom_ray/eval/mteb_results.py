"""Results in mteb's TaskResult JSON layout, one file per model and suite, so tools that read
mteb results (mteb's own `TaskResult.from_disk`, leaderboards, notebooks) read boom-ray's:

    {"dataset_revision": ..., "task_name": <suite>, "mteb_version": ..., "evaluation_time": s,
     "kg_co2_emissions": null,
     "scores": {"test": [{"hf_subset": "default", "languages": ["eng-Latn"], "main_score": ...,
                          "ndcg_at_10": ..., ...}]}}

Metric names follow mteb's (``ndcg@10`` -> ``ndcg_at_10``; Spearman of cosine similarities is
``cosine_spearman``, as mteb names it, and ``spearman``; macro F1 is ``f1``). `mteb_version` is
that of the installed mteb whose layout this follows (None without mteb); the scores themselves
come from boom-ray's evaluators. Per-unit scores are not written.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any

from boom_ray.runtime.storage import join, resolve, write_json

SPLIT = "test"
HF_SUBSET = "default"
LANGUAGES = ["eng-Latn"]
_RENAMES = {"spearman": ["cosine_spearman", "spearman"], "pearson": ["cosine_pearson", "pearson"],
            "f1_macro": ["f1"]}


def mteb_version() -> str | None:
    try:
        return importlib.metadata.version("mteb")
    except importlib.metadata.PackageNotFoundError:
        return None


def metric_names(name: str) -> list[str]:
    """mteb's name(s) for one of boom-ray's metric names."""
    if name in _RENAMES:
        return _RENAMES[name]
    return [re.sub(r"@(\d+)$", r"_at_\1", name)]


def task_result(entry: dict[str, Any], *, version: str | None = None, dataset_revision: str = "local",
                languages: list[str] | None = None) -> dict[str, Any]:
    """The TaskResult dict of one suite entry of a results document."""
    scores: dict[str, Any] = {}
    for name, value in entry["metrics"].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for mteb_name in metric_names(name):
                scores[mteb_name] = value
    scores.update(main_score=entry["main"], hf_subset=HF_SUBSET, languages=list(languages or LANGUAGES))
    return {"dataset_revision": dataset_revision, "task_name": entry["name"],
            "mteb_version": version if version is not None else mteb_version(),
            "scores": {SPLIT: [scores]}, "evaluation_time": entry.get("seconds"), "kg_co2_emissions": None}


def write_task_results(out_dir: str, results: dict[str, Any]) -> list[str]:
    """`<out_dir>/<suite>.json` for every suite of a results document (local path or URI);
    returns the paths written."""
    fs, root = resolve(out_dir)
    version = mteb_version()
    paths = []
    for entry in results["suites"]:
        path = join(root, f"{entry['name']}.json")
        write_json(fs, path, task_result(entry, version=version))
        paths.append(path)
    return paths
