"""Connecting to Ray the same way from the CLI, jobs and tests."""

from __future__ import annotations

import logging
import os

from boom_ray.config import RayConfig


def joins_cluster(cfg: RayConfig | None = None) -> bool:
    """Whether boom-ray runs on a cluster given by address (which may grow) rather than a local
    Ray of its own (whose nodes are all there is)."""
    return bool((cfg or RayConfig()).address or os.environ.get("RAY_ADDRESS"))


def init_ray(cfg: RayConfig | None = None) -> None:
    """Join the configured cluster, the one a `ray job submit` runs in, or start a local Ray.

    Idempotent: a Ray already initialised in this process (a test session, a job) is reused.
    """
    import ray

    if ray.is_initialized():
        return
    cfg = cfg or RayConfig()
    if joins_cluster(cfg):
        address = cfg.address or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        # "local": a fresh Ray for this process, never a cluster someone `ray start`ed here.
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False,
                 logging_level=logging.WARNING)
