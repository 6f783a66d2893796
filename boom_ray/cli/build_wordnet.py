"""`boom build-wordnet --wordnet-dir DIR --out DIR`: WordNet 3.0 -> multi-task corpus + suites."""

from __future__ import annotations

import argparse
from pathlib import Path

from boom_ray.cli.common import add_build_arguments, build_options, rebuild_command

HELP = "build a multi-task corpus and eval suites from WordNet 3.0"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wordnet-dir", default="/usr/share/wordnet", metavar="DIR",
                   help="WordNet 3.0 database (Debian wordnet-base)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (corpus/ and suites/)")
    add_build_arguments(p, rows_default="one per training synset", suite_size=500,
                        held_out="noun and adjective synsets")


def run(args: argparse.Namespace) -> int:
    from boom_ray.demo_data.wordnet import BuildOptions, build  # lazy: numpy, pyarrow; boom --help stays instant

    summary = build(Path(args.wordnet_dir), Path(args.out), BuildOptions(**build_options(args)),
                    command=command_line(args))
    print(f"wrote {args.out}: {sum(summary['tasks'].values())} training rows in "
          f"{len(summary['tasks'])} tasks, {len(summary['suites'])} evaluation suites")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command that rebuilds this output, recorded in its manifest and README."""
    return rebuild_command("boom build-wordnet", args, ("wordnet_dir", "out"))
