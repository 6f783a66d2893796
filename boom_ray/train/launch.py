"""Train every bag of a run on Ray Train, bags in parallel, one TorchTrainer per bag.

Each bag gets its own ScalingConfig (``train.num_workers`` x ``train.cpus_per_worker`` /
``gpus_per_worker``) and its own run folder ``<workdir>/train_runs/<bag>-<hash>``, the hash of the
request and of the layout (world size, effective ZeRO stage), so a re-run of the same request
and layout picks up its last checkpoint (Ray Train V2 restores a run from its storage folder), a
changed request never resumes from a stale one, and a changed layout is handled once
(:mod:`boom_ray.train.runs`).

Concurrency: Ray Train V2's ``fit()`` blocks its caller, and a controller actor (0 CPU) per run
does the work, so the bags' ``fit()`` calls run in driver threads: every bag at once unless
``train.max_concurrent_bags`` caps it. Nothing is sized from the cluster's current resources: a
trainer that does not fit yet waits for its placement group, which on an autoscaling cluster is
what makes the autoscaler add nodes. A bag that fails is reported and the others carry on. Bags
whose export exists with the same request are skipped.

Ray Data is never starved: bags are materialised Parquet before training (no Ray Data pipeline
feeds the trainers), and the workers take only the CPUs the config gives them.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import posixpath
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from boom_ray.config import BoomConfig, TrainConfig, explicit_settings
from boom_ray.corpus.bags import bag_dir, read_manifest, run_bags
from boom_ray.errors import BoomError
from boom_ray.runtime import storage
from boom_ray.runtime.ray_session import announce_logs, init_ray
from boom_ray.train import progress
from boom_ray.train.ds_config import check_mini_batch_size, deepspeed_config, load_user_config, resolve_precision
from boom_ray.train.export import export_matches, model_dir, read_export_manifest, request_hash, train_request
from boom_ray.train.runs import carry_over, find_other_layout, remove_run_info, run_name, write_run_info

log = logging.getLogger(__name__)


class TrainingFailed(BoomError):
    """One or more bags failed; the message names them."""


@dataclass
class BagResult:
    bag: str
    status: str
    """trained | skipped | failed"""
    steps: int | None = None
    tokens: int | None = None
    final_loss: float | None = None
    wall_time_s: float | None = None
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    export: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    skipped_steps: int | None = None
    """Optimizer steps DeepSpeed skipped for inf/NaN gradients (None: an export that predates the count)."""


def bags_to_train(cfg: BoomConfig, only: list[str] | None = None) -> list[str]:
    """`--bags`, else `train.bags`, else every bag of the run (`data.bags.run_bags`)."""
    names = only or cfg.train.bags or list(run_bags(cfg))
    return list(dict.fromkeys(names))


HUB_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
           "HF_HUB_ENABLE_HF_TRANSFER", "TRANSFORMERS_OFFLINE")
"""The driver's Hugging Face settings that training workers inherit. Hub access is the user's
choice: on a cluster with internet a hub id (reference.yaml's Qwen/Qwen3-4B) must load on a
fresh node, and a test box stays offline because its own environment says so."""


def worker_env(train: TrainConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the training workers: the driver's hub settings (`HUB_ENV`, where set),
    and DS_ACCELERATOR=cpu for DeepSpeed on CPU."""
    source = os.environ if environ is None else environ
    env = {k: source[k] for k in HUB_ENV if k in source}
    env.update({"TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"})
    if not train.use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    return env


def resources_per_worker(train: TrainConfig) -> dict[str, float]:
    res = {"CPU": train.cpus_per_worker}
    if train.use_gpu:
        res["GPU"] = train.gpus_per_worker
    return res


def concurrent_bags(train: TrainConfig, n_bags: int) -> int:
    """How many bags' trainers are submitted at once: `train.max_concurrent_bags`, default all.

    Never sized from ray.cluster_resources(): on an autoscaling cluster that is what runs now
    (0 GPUs on a fresh cluster.yaml), not what can be started. A submitted trainer whose
    placement group cannot be placed yet waits, and that pending demand is what makes the
    autoscaler add nodes; on a fixed cluster the waiting trainers simply queue."""
    return max(1, min(train.max_concurrent_bags or n_bags, n_bags))


def train_runs_dir(workdir: str) -> str:
    """Ray Train storage of the run: the work dir's URI, or its absolute local path."""
    root = workdir if "://" in workdir else storage.resolve(workdir)[1]
    return posixpath.join(root, "train_runs")


def _make_trainer(cfg: BoomConfig, job: dict[str, Any], storage_path: str):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig  # lazy: ray
    from ray.train.torch import TorchTrainer  # lazy: ray, torch

    from boom_ray.train.loop import train_loop  # lazy: torch, ray (the workers' loop; boom plan imports launch)

    train = cfg.train
    return TorchTrainer(
        train_loop,
        train_loop_config=job,
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu,
                                     resources_per_worker=resources_per_worker(train)),
        run_config=RunConfig(
            name=job["run_name"], storage_path=storage_path,
            failure_config=FailureConfig(max_failures=train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": worker_env(train)}),
    )


def prepare_job(cfg: BoomConfig, bag: str) -> dict[str, Any]:
    """What one bag's workers need, and the request its export will carry."""
    uri = bag_dir(cfg.workdir, bag)
    manifest = read_manifest(uri)
    if manifest is None:
        raise BoomError(f"{uri}: bag {bag} does not exist or is unfinished; run `boom bag --config ...` first")
    train = cfg.train
    check_mini_batch_size(train)
    # a broken file fails here, not in every worker
    user = load_user_config(train.deepspeed_config) if train.deepspeed_config else None
    request = train_request(cfg, bag, manifest, resolve_precision(train.precision, train.use_gpu))
    ds = deepspeed_config(train, world_size=train.num_workers, on_gpu=train.use_gpu, user=user,
                          micro_batch_per_rank=max(1, train.global_batch_size // train.num_workers))
    layout = {"world_size": train.num_workers, "zero_stage": int(ds.get("zero_optimization", {}).get("stage", 0))}
    digest = request_hash(request)
    return {"config": explicit_settings(cfg), "bag": bag, "bag_uri": uri, "request": request,
            "request_hash": digest, "layout": layout, "run_name": run_name(bag, digest, layout),
            "started": time.time()}


Say = Callable[..., None]
"""say(bag, text, warn=False): one line for the user (the live view's notice, or a plain print)."""


def print_notice(bag: str, text: str, warn: bool = False) -> None:
    """The `Say` of a run without a live view (`--verbose`): printed as before."""
    print(f"[{bag}] {text}", file=sys.stderr if warn else sys.stdout, flush=True)


def plan_resume(job: dict[str, Any], storage_path: str, say: Say = print_notice) -> None:
    """Look once for an interrupted run of the same request with another layout (see
    :mod:`boom_ray.train.runs`); sets job["resume_from"] or says why the bag starts fresh."""
    bag, new = job["bag"], job["layout"]
    other = find_other_layout(storage_path, bag, job["request_hash"], new, job["run_name"])
    write_run_info(storage_path, job["run_name"], bag, job["request_hash"], new)
    if other is None:
        return
    job["previous_run"] = other["run"]  # removed once this run is exported
    how, why = carry_over(other["layout"], new)
    old = f"world {other['layout']['world_size']}, ZeRO {other['layout']['zero_stage']}"
    now = f"world {new['world_size']}, ZeRO {new['zero_stage']}"
    if how == "fresh":
        say(bag, f"WARNING: not resuming step {other['step']} of {other['run']} ({old}) with {now}: "
                 f"{why}; starting fresh", warn=True)
        return
    say(bag, f"resuming step {other['step']} of {other['run']} ({old}) with {now}, {why}")
    job["resume_from"] = {"uri": other["uri"], "universal": how == "universal", "run": other["run"]}


def train_bag(cfg: BoomConfig, bag: str, storage_path: str, force: bool = False, view=None) -> BagResult:
    """Train one bag to its export (blocking); never raises, the result says what happened.
    `force` retrains even when a matching export exists (`boom run --from train`); `view`: the
    stage's :class:`~boom_ray.train.progress.LiveView` (None: print, as `--verbose` does)."""
    say = view.notice if view else print_notice
    state = view.set_state if view else lambda *a, **k: None
    started = time.time()
    try:
        job = prepare_job(cfg, bag)
        if not force and export_matches(cfg.workdir, bag, job["request_hash"]):
            m = read_export_manifest(cfg.workdir, bag) or {}
            state(bag, progress.SKIPPED, step=m.get("steps"), total_steps=m.get("steps"), loss=m.get("final_loss"),
                  skipped_steps=m.get("skipped_steps"))
            return BagResult(bag, "skipped", m.get("steps"), m.get("tokens_seen"), m.get("final_loss"),
                             m.get("wall_time_s"), export=model_dir(cfg.workdir, bag),
                             skipped_steps=m.get("skipped_steps"))
        if view:
            view.log(bag, f"[{bag}] training (run {job['run_name']})")
            job["progress"] = view.board_name
        else:
            say(bag, f"training (run {job['run_name']})")
        plan_resume(job, storage_path, say)
        _make_trainer(cfg, job, storage_path).fit()
        m = read_export_manifest(cfg.workdir, bag)
        if not m or m.get("request_hash") != job["request_hash"]:
            raise BoomError(f"{bag}: training finished but left no matching export")
        _remove_run_dir(storage_path, job["run_name"])
        if job.get("previous_run"):
            _remove_run_dir(storage_path, job["previous_run"])
        state(bag, progress.EXPORTED, step=m["steps"], loss=m["final_loss"], skipped_steps=m.get("skipped_steps"))
        if m.get("skipped_steps"):
            say(bag, f"WARNING: {skipped_note(m['skipped_steps'], m['steps'])}", warn=True)
        return BagResult(bag, "trained", m["steps"], m["tokens_seen"], m["final_loss"], m["wall_time_s"],
                         started=started, finished=time.time(), export=model_dir(cfg.workdir, bag),
                         extra={k: m.get(k) for k in ("restarts", "resumed_from", "world_size", "zero_stage")},
                         skipped_steps=m.get("skipped_steps"))
    except Exception as exc:  # noqa: BLE001 - one bag's failure must not stop the others
        message = _short_error(exc)
        state(bag, progress.FAILED)
        if view and view.log_dir:  # the one line names the cause; the whole error stays in the log
            view.log(bag, f"[{bag}] FAILED: {exc}")
            say(bag, f"FAILED: {message} (full error: {view.log_dir}/train-{bag}.log)", warn=True)
        else:
            say(bag, f"FAILED: {message}", warn=True)
        return BagResult(bag, "failed", error=message, started=started, finished=time.time())


_CAUSE_RE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


def _short_error(exc: BaseException) -> str:
    """One line naming the cause: Ray wraps worker errors in tracebacks, the innermost
    ``SomeError: message`` line is the one a user can act on."""
    if isinstance(exc, BoomError):
        return str(exc)[:500]
    text = str(exc).strip() or type(exc).__name__
    causes = [m for m in map(_CAUSE_RE.match, text.splitlines()) if m]
    if causes:
        name, message = causes[-1].groups()
        return f"{name}: {message}"[:500]
    first = next((ln for ln in text.splitlines() if ln.strip()), text)
    return f"{type(exc).__name__}: {first}"[:500]


def _remove_run_dir(storage_path: str, name: str) -> None:
    """Checkpoints are only for resuming; once the export is written they are dead weight."""
    try:
        fs, root = storage.resolve(storage_path)
        storage.remove(fs, posixpath.join(root, name))
        remove_run_info(storage_path, name)
    except OSError as exc:  # leftover checkpoints are harmless
        log.warning("could not remove %s/%s: %s", storage_path, name, exc)


def train_bags(cfg: BoomConfig, bags: list[str] | None = None, max_concurrent: int | None = None,
               force: bool = False) -> list[BagResult]:
    """Train `bags` (default: every bag of the run) concurrently; results in bag order.

    Unless `ray.verbose`, the bags' progress is one live view (:mod:`boom_ray.train.progress`)
    and each bag's messages go to `<logs>/train-<bag>.log`."""
    init_ray(cfg.ray)
    names = bags_to_train(cfg, bags)
    max_concurrent = max_concurrent or concurrent_bags(cfg.train, len(names))
    storage_path = train_runs_dir(cfg.workdir)
    view = None if cfg.ray.verbose else progress.open_view(names, announce_logs(cfg.workdir))
    lock = threading.Lock()
    results: dict[str, BagResult] = {}
    try:
        with cf.ThreadPoolExecutor(max_workers=max(1, min(max_concurrent, len(names))),
                                   thread_name_prefix="boom-train") as pool:
            futures = {pool.submit(train_bag, cfg, name, storage_path, force, view): name for name in names}
            for fut in cf.as_completed(futures):
                with lock:
                    results[futures[fut]] = fut.result()
    finally:
        if view:
            view.close()
    return [results[n] for n in names]


def skipped_note(skipped: int, steps: int | None) -> str:
    """`3 of 30 optimizer steps skipped (inf/NaN gradients)`: the words of the console and the summary."""
    return f"{skipped:,} of {steps if steps is not None else '?'} optimizer steps skipped (inf/NaN gradients)"


def summary_table(results: list[BagResult]) -> str:
    """One row per bag; a bag with skipped optimizer steps or an error gets a line of its own."""
    header = f"{'bag':<10} {'status':<8} {'steps':>7} {'tokens':>12} {'final loss':>10} {'wall s':>8}"
    lines = [header, "-" * len(header)]
    for r in results:
        loss = f"{r.final_loss:.4f}" if r.final_loss is not None else "-"
        lines.append(f"{r.bag:<10} {r.status:<8} {r.steps if r.steps is not None else '-':>7} "
                     f"{r.tokens if r.tokens is not None else '-':>12} {loss:>10} "
                     f"{f'{r.wall_time_s:.1f}' if r.wall_time_s is not None else '-':>8}")
        if r.skipped_steps:
            lines.append(f"  {r.bag}: {skipped_note(r.skipped_steps, r.steps)}")
        if r.error:
            lines.append(f"  {r.bag}: {r.error}")
    return "\n".join(lines)
