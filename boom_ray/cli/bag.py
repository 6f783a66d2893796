"""`boom bag --config RUN.yaml`: validate the corpus, quarantine bad rows, write the bags."""

from __future__ import annotations

import argparse
import time

from boom_ray.cli.common import add_run_arguments, config_from_args

HELP = "validate the corpus and sample it into bags (Ray Data)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)


def run(args: argparse.Namespace) -> int:
    from boom_ray.corpus.bag_stage import format_summary, run_bagging  # lazy: ray (Ray Data); boom --help stays instant

    cfg = config_from_args(args)
    start = time.perf_counter()
    outcome = run_bagging(cfg)
    print(format_summary(cfg, outcome))
    print(f"done in {time.perf_counter() - start:.1f}s")
    return 0
