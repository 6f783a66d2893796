"""`boom run`: the whole BOOM method as one Ray workflow.

    bag -> train (every bag, in parallel) -> merge -> eval -> report

Each stage checks its own outputs against its manifest and skips the work that is already done,
so a rerun after a failure picks up where it stopped; `--from STAGE` redoes that stage and every
later one. `<workdir>/run.json` records the config, the library versions and each stage's time.
"""

from __future__ import annotations

import datetime as dt
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

from boom_ray.runtime import leftovers, storage
from boom_ray.config import STAGES, RunConfig
from boom_ray.errors import BoomError


@dataclass
class StageRecord:
    name: str
    status: str = "pending"
    seconds: float | None = None
    started: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("boom-ray", "ray", "torch", "transformers", "deepspeed", "sentence-transformers", "pyarrow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _bag(cfg: RunConfig, force: bool) -> tuple[str, dict]:
    from boom_ray.corpus.bag_stage import format_summary, run_bagging

    outcome = run_bagging(cfg, force=force)
    print(format_summary(cfg, outcome))
    done = all(state == "up to date" for state in outcome.bags.values())
    return ("skipped" if done else "done"), {"bags": outcome.bags, "rows_read": outcome.read,
                                             "rows_quarantined": outcome.quarantined}


def _train(cfg: RunConfig, force: bool) -> tuple[str, dict]:
    from boom_ray.train.launch import TrainingFailed, summary_table, train_bags

    results = train_bags(cfg, force=force)
    print(summary_table(results), flush=True)
    failed = [r.bag for r in results if r.status == "failed"]
    if failed:
        raise TrainingFailed(f"training failed for {', '.join(failed)}; the other bags are exported, "
                             f"rerun `boom run` to retry only the failed ones")
    status = "skipped" if all(r.status == "skipped" for r in results) else "done"
    return status, {r.bag: {"status": r.status, "steps": r.steps, "tokens": r.tokens,
                            "final_loss": r.final_loss} for r in results}


def _merge(cfg: RunConfig, force: bool) -> tuple[str, dict]:
    from boom_ray.merge.stage import describe, run_merges, run_requests

    manifests = run_merges(cfg, force=force)
    outs = [out for out, _ in run_requests(cfg)]
    for out, manifest in zip(outs, manifests):
        print(describe(out, manifest))
    status = "skipped" if all(m.get("skipped") for m in manifests) else "done"
    return status, {out: m.get("method") for out, m in zip(outs, manifests)}


def _eval(cfg: RunConfig, force: bool) -> tuple[str, dict]:
    from boom_ray.eval.report import evaluate_run

    results = evaluate_run(cfg, force=force)
    return "done", {"models": sorted(results)}


def _report(cfg: RunConfig, force: bool) -> tuple[str, dict]:
    from boom_ray.eval.report import write_report

    out = write_report(cfg)  # evaluations are cached by the eval stage; this only renders
    print(out["markdown"])
    print(f"report: {out['report_md']} and {out['report_png']}")
    return "done", {"report_md": out["report_md"], "report_png": out["report_png"]}


RUNNERS: dict[str, Callable[[RunConfig, bool], tuple[str, dict]]] = {
    "bag": _bag, "train": _train, "merge": _merge, "eval": _eval, "report": _report}


def check_runnable(cfg: RunConfig, from_stage: str | None = None) -> None:
    """Refuse a run that could only fail late: an unknown stage, no suite to evaluate on."""
    if from_stage is not None and from_stage not in STAGES:
        raise ValueError(f"unknown stage {from_stage!r}; stages are {', '.join(STAGES)}")
    if not cfg.eval.suites:  # found now, not after hours of training
        raise BoomError("eval.suites is empty in the run config: the pipeline's eval and report stages "
                        "need at least one suite")


def run_pipeline(cfg: RunConfig, from_stage: str | None = None) -> dict[str, Any]:
    """Run every stage in order; returns the run manifest (also written to <workdir>/run.json)."""
    from boom_ray.runtime.ray_session import announce_logs, init_ray

    check_runnable(cfg, from_stage)
    init_ray(cfg.ray)
    fs, root = storage.resolve(cfg.workdir)
    fs.create_dir(root, recursive=True)
    announce_logs(cfg.workdir)
    for leftover in leftovers.remove_stale_leftovers(cfg.workdir):  # what crashed runs left anywhere
        print(f"removed {leftover.path}: stale staging {leftover.kind}, {leftover.bytes} bytes ({leftover.reason})")
    manifest_path = storage.join(root, "run.json")
    records = [StageRecord(name) for name in STAGES]
    manifest = {"config": cfg.model_dump(mode="json"), "versions": versions(), "started": _now(),
                "from_stage": from_stage, "stages": {}}
    first_forced = STAGES.index(from_stage) if from_stage else len(STAGES)
    try:
        for index, record in enumerate(records):
            print(f"\n=== {record.name} ===", flush=True)
            record.started = _now()
            start = time.perf_counter()
            try:
                record.status, record.detail = RUNNERS[record.name](cfg, index >= first_forced)
            except BaseException:
                record.status = "failed"
                raise
            finally:
                record.seconds = round(time.perf_counter() - start, 2)
                manifest["stages"] = {r.name: r.__dict__ for r in records}
                storage.write_json(fs, manifest_path, manifest)
    finally:
        manifest["finished"] = _now()
        storage.write_json(fs, manifest_path, manifest)
    print("\n" + " | ".join(f"{r.name}: {r.status} {r.seconds:.0f}s" for r in records))
    return manifest
