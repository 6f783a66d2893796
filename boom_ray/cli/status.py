"""`boom status --config RUN.yaml` (or `boom status WORKDIR`): where a run stands, from its work dir."""

from __future__ import annotations

import argparse

from boom_ray.cli.common import add_config_arguments, config_from_args

HELP = "show which stages are done, each bag's state and step, merges, scores and leftovers"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workdir", nargs="?", metavar="WORKDIR",
                   help="a run's work dir (its run.json names the config) instead of --config")
    add_config_arguments(p, required=False)
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def _config(args: argparse.Namespace):
    from boom_ray.runtime import storage
    from boom_ray.config import ConfigError, validate_config

    if args.config:
        return config_from_args(args)
    if not args.workdir:
        raise ConfigError("give --config RUN.yaml or a work dir")
    fs, root = storage.resolve(args.workdir)
    record = storage.read_json_or_none(fs, storage.join(root, "run.json"))
    if not record or "config" not in record:
        raise ConfigError(f"{args.workdir}: no run.json with the run's config; give --config RUN.yaml")
    return validate_config({**record["config"], "workdir": args.workdir})


def run(args: argparse.Namespace) -> int:
    from boom_ray.workflows.status import format_status, run_status, status_json

    status = run_status(_config(args))
    print(status_json(status) if args.json else format_status(status))
    return 0
