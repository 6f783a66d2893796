"""`boom report --config RUN.yaml`: report.md + report.png, every model of the run on every suite
(over the repeats, where `boom run --repeats N` made them)."""

from __future__ import annotations

import argparse

from boom_ray.cli.common import add_run_arguments, config_from_args

HELP = "write report.md and an ID-vs-OOD chart for every model of a run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)


def run(args: argparse.Namespace) -> int:
    from boom_ray.workflows.repeats import report_run  # lazy: ray and torch (evaluation); boom --help stays instant

    out = report_run(config_from_args(args))
    print(out["markdown"])
    print(f"report written to {out['report_md']} and {out['report_png']}")
    return 0
