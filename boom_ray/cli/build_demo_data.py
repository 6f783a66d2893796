"""`boom build-demo-data --out DIR`: WordNet + FOLDOC training corpus, in-domain suites from
their held-out items, out-of-domain suites from sources never trained on."""

from __future__ import annotations

import argparse
from pathlib import Path

from boom_ray.cli.common import add_build_arguments, build_options, rebuild_command

SOURCE_DEFAULTS = {"wordnet_dir": "/usr/share/wordnet", "dictd_dir": "/usr/share/dictd",
                   "dpkg_status": "/var/lib/dpkg/status", "doc_dir": "/usr/share/doc"}
"""Where Debian puts the sources: the flags' defaults, which the rebuild command leaves out
(kept here, not imported from the builder, so `boom --help` does not load it)."""

HELP = "build the demo's multi-source corpus and in-/out-of-domain eval suites (Debian dict-* data)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (corpus/ and suites/)")
    p.add_argument("--wordnet-dir", default=SOURCE_DEFAULTS["wordnet_dir"], metavar="DIR",
                   help="WordNet 3.0 database (Debian wordnet-base)")
    p.add_argument("--dictd-dir", default=SOURCE_DEFAULTS["dictd_dir"], metavar="DIR",
                   help="dictd databases (Debian dict-foldoc, dict-jargon, dict-vera, dict-devil)")
    p.add_argument("--dpkg-status", default=SOURCE_DEFAULTS["dpkg_status"], metavar="FILE",
                   help="dpkg status database: the installed packages' descriptions")
    p.add_argument("--doc-dir", default=SOURCE_DEFAULTS["doc_dir"], metavar="DIR",
                   help="where each package's copyright file is (<DIR>/<pkg>/copyright)")
    add_build_arguments(p, rows_default="all training items", suite_size=300,
                        held_out="WordNet noun/adjective synsets and FOLDOC entries")


def run(args: argparse.Namespace) -> int:
    from boom_ray.demo_data.demo import Paths, build  # lazy: numpy, pyarrow; boom --help stays instant
    from boom_ray.demo_data.wordnet import BuildOptions  # lazy: numpy, pyarrow; boom --help stays instant

    paths = Paths(Path(args.wordnet_dir), Path(args.dictd_dir), Path(args.dpkg_status), Path(args.doc_dir))
    summary = build(paths, Path(args.out), BuildOptions(**build_options(args)), command=command_line(args))
    print(f"wrote {args.out}: {sum(summary['tasks'].values())} training rows in "
          f"{len(summary['tasks'])} tasks, {len(summary['suites'])} evaluation suites "
          f"({summary['seconds']} s)")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command that rebuilds this output, recorded in its manifest and README."""
    return rebuild_command("boom build-demo-data", args, ("out",), SOURCE_DEFAULTS)
