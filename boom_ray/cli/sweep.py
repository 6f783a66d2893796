"""`boom sweep --config RUN.yaml`: Ray Tune over per-bag merge weights, scored on the dev suites."""

from __future__ import annotations

import argparse

from boom_ray.cli.common import add_run_arguments, config_from_args

HELP = "Ray Tune sweep over merge weights, scored on dev suites"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)


def run(args: argparse.Namespace) -> int:
    from boom_ray.sweep import run_sweep  # lazy: ray (Tune) and torch (evaluation); boom --help stays instant

    summary = run_sweep(config_from_args(args))
    weights = ", ".join(f"{b}={w:.4f}" for b, w in summary["weights"].items())
    print(f"best {summary['objective']} = {summary['score']:.4f} ({summary['mode']}): {summary['method']} "
          f"with {weights}")
    print(f"best model: {summary['best_model']}")
    return 0
