"""`boom build-demo-data --out DIR`: WordNet + FOLDOC training corpus, in-domain suites from
their held-out items, out-of-domain suites from sources never trained on."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "build the demo's multi-source corpus and in-/out-of-domain eval suites (Debian dict-* data)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (corpus/ and suites/)")
    p.add_argument("--wordnet-dir", default="/usr/share/wordnet", metavar="DIR",
                   help="WordNet 3.0 database (Debian wordnet-base)")
    p.add_argument("--dictd-dir", default="/usr/share/dictd", metavar="DIR",
                   help="dictd databases (Debian dict-foldoc, dict-jargon, dict-vera, dict-devil)")
    p.add_argument("--dpkg-status", default="/var/lib/dpkg/status", metavar="FILE",
                   help="dpkg status database: the installed packages' descriptions")
    p.add_argument("--doc-dir", default="/usr/share/doc", metavar="DIR",
                   help="where each package's copyright file is (<DIR>/<pkg>/copyright)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows-per-task", type=int, metavar="N",
                   help="at most N training rows per task (default: all training items)")
    p.add_argument("--suite-size", type=int, default=300, metavar="N",
                   help="queries / items per evaluation suite")
    p.add_argument("--holdout", type=float, default=0.1, metavar="FRACTION",
                   help="fraction of WordNet noun/adjective synsets and FOLDOC entries held out")


def run(args: argparse.Namespace) -> int:
    from boom_ray.datasets.demo import Paths, build
    from boom_ray.datasets.wordnet import BuildOptions

    options = BuildOptions(seed=args.seed, max_rows_per_task=args.max_rows_per_task,
                           suite_size=args.suite_size, holdout=args.holdout)
    paths = Paths(Path(args.wordnet_dir), Path(args.dictd_dir), Path(args.dpkg_status), Path(args.doc_dir))
    summary = build(paths, Path(args.out), options, command=command_line(args))
    print(f"wrote {args.out}: {sum(summary['tasks'].values())} training rows in "
          f"{len(summary['tasks'])} tasks, {len(summary['suites'])} evaluation suites "
          f"({summary['seconds']} s)")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command that rebuilds this output, recorded in its manifest and README."""
    parts = ["boom build-demo-data", f"--out {args.out}", f"--seed {args.seed}"]
    for flag in ("max_rows_per_task", "suite_size", "holdout"):
        value = getattr(args, flag, None)
        if value is not None:
            parts.append(f"--{flag.replace('_', '-')} {value}")
    defaults = {"wordnet_dir": "/usr/share/wordnet", "dictd_dir": "/usr/share/dictd",
                "dpkg_status": "/var/lib/dpkg/status", "doc_dir": "/usr/share/doc"}
    parts += [f"--{k.replace('_', '-')} {getattr(args, k)}" for k, v in defaults.items()
              if str(getattr(args, k, v)) != v]
    return " ".join(parts)
