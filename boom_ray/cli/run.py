"""`boom run --config RUN.yaml [--from STAGE] [--repeats N]`: bag, train, merge, evaluate, report."""

from __future__ import annotations

import argparse
import sys

from boom_ray.cli.common import add_run_arguments, config_from_args
from boom_ray.config import STAGES

HELP = "the whole BOOM pipeline: bag, train, merge, evaluate, report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--from", dest="from_stage", choices=list(STAGES),
                   help="redo this stage and every later one, even where outputs exist")
    p.add_argument("--repeats", metavar="N",
                   help="N independent runs with seeds seed, seed+1, ... in <workdir>/repeat-<k>/, and one "
                        "report over them (same as --set repeats=N; default: the config's repeats, 1)")


def run_config(args: argparse.Namespace):
    """The run's config; `--repeats N` overrides its `repeats` and is validated with it, so a bad N
    is named as a bad key would be."""
    if args.repeats is not None:
        args.overrides = [*args.overrides, f"repeats={args.repeats}"]
    return config_from_args(args)


def run(args: argparse.Namespace) -> int:
    from boom_ray.workflows.repeats import run_repeats  # lazy: ray and torch; boom --help stays instant

    summary = run_repeats(run_config(args), args.from_stage)
    if summary["failed"]:
        print(f"boom run: {len(summary['failed'])} of {len(summary['repeats'])} repeats failed: "
              + "; ".join(f"{e['name']}: {e['error']}" for e in summary["repeats"] if e["status"] != "ok"),
              file=sys.stderr)
        return 1
    return 0
