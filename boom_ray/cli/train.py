"""`boom train --config RUN.yaml [--bags ...]`: one fine-tuned embedder per bag, bags in parallel.

Exits non-zero when any bag failed, naming it; the others still finish and are exported.
"""

from __future__ import annotations

import argparse

from boom_ray.cli.common import add_run_arguments, config_from_args

HELP = "fine-tune one embedding model per bag (Ray Train + DeepSpeed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--bags", nargs="+", metavar="BAG", help="train only these bags (e.g. bag20 bag100)")


def run(args: argparse.Namespace) -> int:
    from boom_ray.train.launch import TrainingFailed, summary_table, train_bags  # lazy: ray, torch; fast --help

    results = train_bags(config_from_args(args), args.bags)
    print(summary_table(results), flush=True)
    failed = [r.bag for r in results if r.status == "failed"]
    if failed:
        raise TrainingFailed(f"training failed for {', '.join(failed)} (see the table above)")
    return 0
