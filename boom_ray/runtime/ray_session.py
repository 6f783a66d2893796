"""Connecting to Ray the same way from the CLI, jobs and tests, and where the logs go."""

from __future__ import annotations

import logging
import os

from boom_ray.config import RayConfig
from boom_ray.runtime import storage

_announced: set[str] = set()
_state: dict[str, bool] = {"verbose": False}


def own_progress_only(ctx) -> bool:
    """Turn off Ray Data's progress bars for a stage that draws its own (returns what was set,
    to restore), and, unless `ray.verbose`, keep Ray Data's driver lines (execution plans,
    "Progress bars disabled") in its log file, ray-data.log in the session folder, off the
    console: its console handler is set to errors only."""
    was = ctx.enable_progress_bars
    ctx.enable_progress_bars = False
    if not _state["verbose"]:
        for handler in logging.getLogger("ray.data").handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.ERROR)
    return was


def joins_cluster(cfg: RayConfig | None = None) -> bool:
    """Whether boom-ray runs on a cluster given by address (which may grow) rather than a local
    Ray of its own (whose nodes are all there is)."""
    return bool((cfg or RayConfig()).address or os.environ.get("RAY_ADDRESS"))


def init_ray(cfg: RayConfig | None = None) -> None:
    """Join the configured cluster, the one a `ray job submit` runs in, or start a local Ray.

    Workers' and Ray's own output stays in Ray's log files unless `ray.verbose` (`--verbose`):
    forwarded, it floods the console with every line twice and Ray's internal warnings, and the
    training stage shows a live view instead (:mod:`boom_ray.train.progress`).

    Idempotent: a Ray already initialised in this process (a test session, a job) is reused.
    """
    import ray  # lazy: ray; importing this module (boom --help, merge/) must not load it, only joining Ray

    if ray.is_initialized():
        return
    cfg = cfg or RayConfig()
    _state["verbose"] = cfg.verbose
    if joins_cluster(cfg):
        address = cfg.address or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=cfg.verbose)
    else:
        # "local": a fresh Ray for this process, never a cluster someone `ray start`ed here.
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=cfg.verbose)


def ray_logs_dir() -> str | None:
    """This Ray session's log folder on the driver's node (workers' stdout/stderr, Ray's own)."""
    try:
        from ray._private import worker  # lazy: ray; see init_ray

        return worker._global_node.get_logs_dir_path()
    except Exception:  # noqa: BLE001 - a Ray client or an older Ray: no local session folder
        return None


def logs_dir(workdir: str) -> str:
    """Where boom-ray writes its own logs (per-bag training logs): `<workdir>/logs/` for a local
    work dir; for a URI work dir a local folder under the Ray session folder, since log files are
    appended line by line and object stores cannot append."""
    if "://" not in workdir:
        return os.path.join(storage.resolve(workdir)[1], "logs")
    session = os.path.dirname(ray_logs_dir() or "") or os.path.join(os.path.expanduser("~"), ".boom")
    return os.path.join(session, "boom-logs")


def announce_logs(workdir: str) -> str:
    """Print once per process where the logs are; returns boom-ray's log folder."""
    path = logs_dir(workdir)
    if path not in _announced:
        _announced.add(path)
        ray_logs = ray_logs_dir()
        print(f"logs: {path}" + (f" (Ray's own and the workers' output: {ray_logs})" if ray_logs else ""),
              flush=True)
    return path
