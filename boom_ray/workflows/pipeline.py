"""`boom run`: the whole BOOM method as one Ray workflow.

    bag -> train (every bag, in parallel) -> merge -> eval -> report

The pipeline is a list of stages (workflows/stages.py), each with the same life cycle and result.
Each stage checks its own outputs against its manifest and skips the work that is already done,
so a rerun after a failure picks up where it stopped; `--from STAGE` redoes that stage and every
later one. `<workdir>/run.json` records the config, the library versions and each stage's status,
time and detail; it is rewritten after every stage, so it says where a run stopped.
"""

from __future__ import annotations

import datetime as dt
import platform
import time
from importlib import metadata
from typing import Any, Sequence

from boom_ray.config import STAGES, BoomConfig
from boom_ray.errors import BoomError
from boom_ray.runtime import leftovers, storage
from boom_ray.runtime.ray_session import announce_logs, init_ray
from boom_ray.workflows.stages import BOOM_STAGES, FAILED, Stage, StageResult


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


def check_runnable(cfg: BoomConfig, from_stage: str | None = None) -> None:
    """Refuse a run that could only fail late: an unknown stage, no suite to evaluate on."""
    if from_stage is not None and from_stage not in STAGES:
        raise ValueError(f"unknown stage {from_stage!r}; stages are {', '.join(STAGES)}")
    if not cfg.eval.suites:  # found now, not after hours of training
        raise BoomError("eval.suites is empty in the run config: the pipeline's eval and report stages "
                        "need at least one suite")


def run_stages(cfg: BoomConfig, stages: Sequence[Stage], from_stage: str | None = None) -> dict[str, Any]:
    """Run `stages` in order, forcing `from_stage` and every later one; returns the run manifest.

    `<workdir>/run.json` is rewritten after every stage; the first failed stage (or an interrupt)
    is recorded there, the later ones stay "pending", and its error is raised."""
    names = [stage.name for stage in stages]
    if from_stage is not None and from_stage not in names:
        raise ValueError(f"unknown stage {from_stage!r}; stages are {', '.join(names)}")
    first_forced = names.index(from_stage) if from_stage else len(names)
    fs, root = storage.resolve(cfg.workdir)
    manifest_path = storage.join(root, "run.json")
    records = {name: {"name": name, "status": "pending", "seconds": None, "started": None, "detail": {}}
               for name in names}
    manifest = {"config": cfg.model_dump(mode="json"), "versions": versions(), "started": _now(),
                "from_stage": from_stage, "stages": records}
    try:
        for index, stage in enumerate(stages):
            print(f"\n=== {stage.name} ===", flush=True)
            record = records[stage.name]
            record["started"] = _now()
            start = time.perf_counter()
            try:
                result = stage.run(cfg, force=index >= first_forced)
            except BaseException:  # an interrupt: recorded as failed, as a crash is
                result = StageResult(FAILED, round(time.perf_counter() - start, 2))
                raise
            finally:
                record.update(status=result.status, seconds=result.seconds, detail=result.detail)
                storage.write_json(fs, manifest_path, manifest)
            if result.error is not None:
                raise result.error
    finally:
        manifest["finished"] = _now()
        storage.write_json(fs, manifest_path, manifest)
    print("\n" + " | ".join(f"{r['name']}: {r['status']} {r['seconds']:.0f}s" for r in records.values()))
    return manifest


def run_pipeline(cfg: BoomConfig, from_stage: str | None = None) -> dict[str, Any]:
    """Run every stage of BOOM in order; returns the run manifest (also <workdir>/run.json)."""
    check_runnable(cfg, from_stage)
    init_ray(cfg.ray)
    fs, root = storage.resolve(cfg.workdir)
    fs.create_dir(root, recursive=True)
    announce_logs(cfg.workdir)
    for leftover in leftovers.remove_stale_leftovers(cfg.workdir):  # what crashed runs left anywhere
        print(f"removed {leftover.path}: stale staging {leftover.kind}, {leftover.bytes} bytes ({leftover.reason})")
    return run_stages(cfg, BOOM_STAGES, from_stage)
