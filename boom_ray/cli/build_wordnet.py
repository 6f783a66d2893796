"""`boom build-wordnet --wordnet-dir DIR --out DIR`: WordNet 3.0 -> multi-task corpus + suites."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "build a multi-task corpus and eval suites from WordNet 3.0"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wordnet-dir", default="/usr/share/wordnet", metavar="DIR",
                   help="WordNet 3.0 database (Debian wordnet-base)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (corpus/ and suites/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows-per-task", type=int, metavar="N",
                   help="at most N training rows per task (default: one per training synset)")
    p.add_argument("--suite-size", type=int, default=500, metavar="N",
                   help="queries / pairs / test items per evaluation suite")
    p.add_argument("--holdout", type=float, default=0.1, metavar="FRACTION",
                   help="fraction of noun and adjective synsets held out for dev + test suites")


def run(args: argparse.Namespace) -> int:
    from boom_ray.datasets.wordnet import BuildOptions, build

    options = BuildOptions(seed=args.seed, max_rows_per_task=args.max_rows_per_task,
                           suite_size=args.suite_size, holdout=args.holdout)
    summary = build(Path(args.wordnet_dir), Path(args.out), options, command=command_line(args))
    print(f"wrote {args.out}: {sum(summary['tasks'].values())} training rows in "
          f"{len(summary['tasks'])} tasks, {len(summary['suites'])} evaluation suites")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command that rebuilds this output, recorded in its manifest and README."""
    parts = ["boom build-wordnet", f"--wordnet-dir {args.wordnet_dir}", f"--out {args.out}",
             f"--seed {args.seed}"]
    for flag in ("max_rows_per_task", "suite_size", "holdout"):
        value = getattr(args, flag, None)
        if value is not None:
            parts.append(f"--{flag.replace('_', '-')} {value}")
    return " ".join(parts)
