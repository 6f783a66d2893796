"""`boom run --config RUN.yaml [--from STAGE]`: bag, train, merge, evaluate, report."""

from __future__ import annotations

import argparse

from boom_ray.cli.common import add_config_arguments, add_verbose_argument, config_from_args
from boom_ray.config import STAGES

HELP = "the whole BOOM pipeline: bag, train, merge, evaluate, report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_verbose_argument(p)
    p.add_argument("--from", dest="from_stage", choices=list(STAGES),
                   help="redo this stage and every later one, even where outputs exist")


def run(args: argparse.Namespace) -> int:
    from boom_ray.pipeline import run_pipeline

    run_pipeline(config_from_args(args), args.from_stage)
    return 0
