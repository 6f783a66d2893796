"""`boom merge`: a mergekit YAML run unchanged, or the merge section of a run config.

    boom merge mergekit.yaml --out merged/ [--force] [--set memory_budget=512MB]
    boom merge --config run.yaml [--force]

The mergekit form runs in this process (no cluster needed, like `mergekit-yaml`); the run-config
form runs one Ray task per merge (boom_ray.merge.stage).
"""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from boom_ray.cli.common import add_set_argument, add_verbose_argument, config_from_args, parse_overrides
from boom_ray.config import ConfigError, MergeConfig

HELP = "merge models with a streaming, memory-bounded Ray task"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mergekit_yaml", nargs="?", metavar="MERGEKIT.yaml",
                   help="a mergekit config to run unchanged (needs --out)")
    p.add_argument("--config", metavar="RUN.yaml", help="merge the run's bag exports with its merge section")
    add_set_argument(p)
    add_verbose_argument(p)
    p.add_argument("--out", metavar="DIR", help="output model directory (with MERGEKIT.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")


def merge_config_from_overrides(pairs: list[str]):
    """A MergeConfig from `--set key=value` pairs (`merge.` prefix optional)."""
    values = {k.removeprefix("merge."): v for k, v in parse_overrides(pairs).items()}
    try:
        return MergeConfig(**values)
    except ValidationError as exc:
        raise ConfigError(f"--set: invalid merge setting: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None


def run(args: argparse.Namespace) -> int:
    from boom_ray.merge.request import MergeRequestError, load_mergekit_yaml  # lazy: pyarrow; boom --help stays instant
    from boom_ray.merge.stage import describe, run_merges, run_requests  # lazy: pyarrow, ray; boom --help stays instant
    from boom_ray.merge.task import merge  # lazy: pyarrow; boom --help stays instant

    if args.config and args.mergekit_yaml:
        raise MergeRequestError("give either MERGEKIT.yaml (with --out) or --config RUN.yaml, not both")
    if args.mergekit_yaml:
        if not args.out:
            raise MergeRequestError("MERGEKIT.yaml needs --out DIR")
        request = load_mergekit_yaml(args.mergekit_yaml)
        manifest = merge(request, args.out, merge_config_from_overrides(args.overrides), force=args.force)
        print(describe(args.out, manifest))
        return 0
    if args.config:
        if args.out:
            raise MergeRequestError("--out goes with MERGEKIT.yaml; a run config writes <workdir>/merges/<name>/")
        cfg = config_from_args(args)
        for (out, _), manifest in zip(run_requests(cfg), run_merges(cfg, force=args.force)):
            print(describe(out, manifest))
        return 0
    raise MergeRequestError("nothing to merge: give MERGEKIT.yaml --out DIR, or --config RUN.yaml")
