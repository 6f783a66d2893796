"""Where a run stands (`boom status`), read from its work dir alone: no Ray, no model loaded.

Stages from `run.json`; each bag as bagged / trained / training (its last checkpointed step) /
failed / not started; each merge; the latest report scores; and every staging leftover, live or
stale, that a crash left behind (leftovers.list_leftovers).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from typing import Any

import pyarrow.fs as pafs

from boom_ray.config import STAGES, ConfigError, BoomConfig, validate_config
from boom_ray.corpus.bags import run_bags
from boom_ray.runtime import leftovers, storage
from boom_ray.train.runs import STATE_FILE


def _latest_checkpoint_step(fs: pafs.FileSystem, run_dir: str) -> int | None:
    """The step of the newest checkpoint of a Ray Train run folder (None without one)."""
    steps = []
    for info in fs.get_file_info(pafs.FileSelector(run_dir, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File and posixpath.basename(info.path) == STATE_FILE:
            state = storage.read_json_or_none(fs, info.path) or {}
            if isinstance(state.get("step"), int):
                steps.append(state["step"])
    return max(steps) if steps else None


def bag_status(cfg: BoomConfig, fs: pafs.FileSystem, root: str, bag: str, run_record: dict[str, Any]) -> dict:
    bagged = storage.exists(fs, storage.join(root, "bags", bag, "manifest.json"))
    export = storage.read_json_or_none(fs, storage.join(root, "models", bag, "boom_train.json"))
    if export is not None:
        return {"bag": bag, "bagged": bagged, "state": "trained", "step": export.get("steps"),
                "loss": export.get("final_loss")}
    runs = storage.join(root, "train_runs")
    run_dirs = [i.path for i in fs.get_file_info(pafs.FileSelector(runs, allow_not_found=True))
                if i.type == pafs.FileType.Directory and posixpath.basename(i.path).startswith(f"{bag}-")]
    step = max((s for s in (_latest_checkpoint_step(fs, d) for d in run_dirs) if s is not None), default=None)
    failed = bag in ((run_record.get("stages", {}).get("train", {}).get("detail") or {}).get("failed") or [])
    state = "failed" if failed else ("training or interrupted" if run_dirs else "not started")
    return {"bag": bag, "bagged": bagged, "state": state, "step": step, "loss": None}


def config_of_workdir(workdir: str) -> BoomConfig:
    """The config a work dir's run.json recorded, with `workdir` as given (the folder may have
    moved since): `boom status WORKDIR` needs no config file."""
    fs, root = storage.resolve(workdir)
    record = storage.read_json_or_none(fs, storage.join(root, "run.json"))
    if not record or "config" not in record:
        raise ConfigError(f"{workdir}: no run.json with the run's config; give --config RUN.yaml")
    return validate_config({**record["config"], "workdir": workdir})


def run_status(cfg: BoomConfig) -> dict[str, Any]:
    """Everything `boom status` prints, as data."""
    fs, root = storage.resolve(cfg.workdir)
    if not storage.is_dir(fs, root):
        return {"workdir": cfg.workdir, "exists": False}
    record = storage.read_json_or_none(fs, storage.join(root, "run.json")) or {}
    stages = {name: (record.get("stages", {}).get(name) or {}).get("status", "not run") for name in STAGES}
    bags = [bag_status(cfg, fs, root, bag, record) for bag in run_bags(cfg, required=False)]
    merges = []
    for spec in cfg.merge.merges:
        manifest = storage.read_json_or_none(fs, storage.join(root, "merges", spec.name, "boom_merge.json"))
        merges.append({"name": spec.name, "method": spec.method, "done": manifest is not None,
                       "seconds": (manifest or {}).get("seconds")})
    scores = {}
    for info in fs.get_file_info(pafs.FileSelector(storage.join(root, "eval"), allow_not_found=True)):
        if info.path.endswith(".json"):
            cached = storage.read_json_or_none(fs, info.path) or {}
            results = cached.get("results") or {}
            if "id_mean" in results or "ood_mean" in results:
                scores[posixpath.basename(info.path)[:-5]] = {k: results.get(k) for k in ("id_mean", "ood_mean")}
    return {"workdir": cfg.workdir, "exists": True, "stages": stages, "bags": bags, "merges": merges,
            "scores": scores, "report": storage.exists(fs, storage.join(root, "report.md")),
            "leftovers": [dataclasses.asdict(x) for x in leftovers.list_leftovers(cfg.workdir)]}


def format_status(status: dict[str, Any]) -> str:
    if not status["exists"]:
        return f"{status['workdir']}: no work dir yet (nothing has run)"
    lines = [f"work dir {status['workdir']}",
             "stages: " + ", ".join(f"{k} {v}" for k, v in status["stages"].items()), "",
             f"{'bag':<10} {'bagged':<7} {'state':<24} {'step':>6} {'loss':>8}"]
    for b in status["bags"]:
        loss = "" if b["loss"] is None else f"{b['loss']:.4f}"
        lines.append(f"{b['bag']:<10} {'yes' if b['bagged'] else 'no':<7} {b['state']:<24} "
                     f"{'' if b['step'] is None else b['step']:>6} {loss:>8}")
    if status["merges"]:
        lines.append("")
        for m in status["merges"]:
            lines.append(f"merge {m['name']} ({m['method']}): {'done' if m['done'] else 'not done'}")
    if status["scores"]:
        lines.append("")
        for key, s in sorted(status["scores"].items()):
            shown = ", ".join(f"{k} {v:.4f}" for k, v in s.items() if isinstance(v, (int, float)))
            lines.append(f"{key}: {shown}")
    leftovers = status["leftovers"]
    lines.append("")
    if not leftovers:
        lines.append("no leftovers")
    for x in leftovers:
        lines.append(f"leftover {x['path']} ({x['bytes']} bytes): {'stale, removed by the next run' if x['stale'] else 'in use'}"
                     f" - {x['reason']}")
    return "\n".join(lines)


def status_json(status: dict[str, Any]) -> str:
    return json.dumps(status, indent=2, default=str)
