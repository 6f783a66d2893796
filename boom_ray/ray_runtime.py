"""Connecting to Ray the same way from the CLI, jobs and tests."""

from __future__ import annotations

import logging
import os

from boom_ray.config import RayConfig


def init_ray(cfg: RayConfig | None = None) -> None:
    """Join the configured cluster, the one a `ray job submit` runs in, or start a local Ray.

    Idempotent: a Ray already initialised in this process (a test session, a job) is reused.
    """
    import ray

    if ray.is_initialized():
        return
    cfg = cfg or RayConfig()
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        # "local": a fresh Ray for this process, never a cluster someone `ray start`ed here.
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False,
                 logging_level=logging.WARNING)
