"""The `boom` command: argument parsing and printing, one module per subcommand.

Each subcommand module defines HELP, `add_arguments(parser)` and `run(args) -> exit code`, and
imports its stage's code only inside `run`, so `boom --help` is instant and imports neither torch
nor Ray. The stages themselves are plain functions that take a BoomConfig (run_bagging,
train_bags, run_merges, run_sweep, write_report, run_pipeline, run_update, ...), for jobs,
notebooks and tests to call without argparse.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys
import threading

from boom_ray import __version__
from boom_ray.errors import BoomError

# command name -> module under boom_ray.cli, in the order `boom --help` lists them
COMMANDS: dict[str, str] = {
    "bag": "bag",
    "build-wordnet": "build_wordnet",
    "build-demo-data": "build_demo_data",
    "train": "train",
    "merge": "merge",
    "sweep": "sweep",
    "eval": "eval",
    "embed": "embed",
    "report": "report",
    "run": "run",
    "update": "update",
    "status": "status",
    "ablations": "ablations",
    "plan": "plan",
}


def _module(name: str):
    return importlib.import_module(f"boom_ray.cli.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boom", description="BOOM: bagging-based robust model merging on Ray")
    parser.add_argument("--version", action="version", version=f"boom-ray {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = _module(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(_module(args.command).run(args) or 0)
    except BoomError as exc:
        print(f"boom {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"boom {args.command}: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The `boom` executable: `main`, then a fast exit. Python's teardown of the object graphs
    that numba and torch build takes 0.3 to 0.5 s after every command (a third of a small `boom
    merge`); once the command is done and only this thread is left, nothing in that teardown is
    ours. So the exit handlers (Ray's shutdown, logging) run, the streams are flushed, and the
    process ends. With any other non-daemon thread alive it exits normally, joining it."""
    code = main()
    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    if others:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach the reader
            pass
    os._exit(code)
