"""`boom status --config RUN.yaml` (or `boom status WORKDIR`): where a run stands, from its work dir."""

from __future__ import annotations

import argparse

from boom_ray.cli.common import add_config_arguments, config_from_args
from boom_ray.config import ConfigError

HELP = "show which stages are done, each bag's state and step, merges, scores and leftovers"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workdir", nargs="?", metavar="WORKDIR",
                   help="a run's work dir (its run.json names the config) instead of --config")
    add_config_arguments(p, required=False)
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def run(args: argparse.Namespace) -> int:
    from boom_ray.workflows import status as run_state  # lazy: pyarrow; boom --help stays instant

    if args.config:
        cfg = config_from_args(args)
    elif args.workdir:
        cfg = run_state.config_of_workdir(args.workdir)
    else:
        raise ConfigError("give --config RUN.yaml or a work dir")
    status = run_state.run_status(cfg)
    print(run_state.status_json(status) if args.json else run_state.format_status(status))
    return 0
