"""The `boom` command. Each subcommand's work lives in its stage's module, imported only when
that subcommand runs, so `boom --help` is instant and does not import torch or Ray."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Callable

from boom_ray import __version__
from boom_ray.errors import BoomError

# name -> (module, function, help). The function takes the parsed args and returns an exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "bag": ("boom_ray.data.stage", "main", "validate the corpus and sample it into bags (Ray Data)"),
    "build-wordnet": ("boom_ray.data.wordnet", "main", "build a multi-task corpus and eval suites from WordNet 3.0"),
    "train": ("boom_ray.train.stage", "main", "fine-tune one embedding model per bag (Ray Train + DeepSpeed)"),
    "merge": ("boom_ray.merge.command", "main", "merge models with a streaming, memory-bounded Ray task"),
    "sweep": ("boom_ray.merge.sweep", "main", "Ray Tune sweep over merge weights, scored on dev suites"),
    "eval": ("boom_ray.eval.command", "eval_main", "evaluate a model on retrieval/STS/classification/clustering suites"),
    "embed": ("boom_ray.eval.command", "embed_main", "embed a JSONL or Parquet text column into Parquet (Ray Data)"),
    "report": ("boom_ray.eval.report", "main", "write report.md and an ID-vs-OOD chart for every model of a run"),
    "run": ("boom_ray.pipeline", "main", "the whole BOOM pipeline: bag, train, merge, evaluate, report"),
    "update": ("boom_ray.update", "main", "incremental update: train on new + sampled old data, merge into the current model"),
}


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="RUN.yaml", help="run configuration (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.max_steps=20 (YAML value syntax)")


def _add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name in ("bag", "train", "sweep", "report", "run", "update"):
        _config_args(p)
    if name == "train":
        p.add_argument("--bags", nargs="+", metavar="BAG", help="train only these bags (e.g. bag20 bag100)")
    if name == "run":
        p.add_argument("--from", dest="from_stage", choices=["bag", "train", "merge", "eval", "report"],
                       help="redo this stage and every later one, even where outputs exist")
    if name == "merge":
        p.add_argument("mergekit_yaml", nargs="?", metavar="MERGEKIT.yaml",
                       help="a mergekit config to run unchanged (needs --out)")
        p.add_argument("--config", metavar="RUN.yaml", help="merge the run's bag exports with its merge section")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--out", metavar="DIR", help="output model directory (with MERGEKIT.yaml)")
        p.add_argument("--force", action="store_true", help="overwrite an existing output")
    if name == "build-wordnet":
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
    if name in ("eval", "embed"):
        p.add_argument("--model", required=True, metavar="DIR", help="model directory")
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--num-encoders", type=int, default=1, help="encoder actors on Ray Data (scale out)")
        p.add_argument("--encoder-cpus", type=float, default=1.0, help="CPUs per encoder actor")
        p.add_argument("--encoder-gpus", type=float, default=0.0, help="GPUs per encoder actor")
    if name == "eval":
        p.add_argument("--suite", action="append", required=True, metavar="DIR", help="suite directory (repeatable)")
        p.add_argument("--out", metavar="results.json", help="write results as JSON")
        p.add_argument("--instruction", help="query instruction for suites without one")
        p.add_argument("--domain", choices=["in", "out"], help="domain for suites without suite.json")
    if name == "embed":
        p.add_argument("--input", required=True, metavar="PATH", help="JSONL or Parquet file or folder")
        p.add_argument("--output", required=True, metavar="DIR", help="Parquet output folder (id, vector)")
        p.add_argument("--text-field", default="text")
        p.add_argument("--id-field", default="_id")
        p.add_argument("--prompt", help="prompt prepended to every text (e.g. a query instruction)")


def build_parser(available: dict[str, tuple[str, str, str]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boom", description="BOOM: bagging-based robust model merging on Ray")
    parser.add_argument("--version", action="version", version=f"boom-ray {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, _, help_text) in available.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_arguments(name, p)
    return parser


def _available() -> dict[str, tuple[str, str, str]]:
    """Commands whose module is part of this installation (found without importing it)."""
    return {n: spec for n, spec in COMMANDS.items() if importlib.util.find_spec(spec[0]) is not None}


def main(argv: list[str] | None = None) -> int:
    available = _available()
    args = build_parser(available).parse_args(argv)
    module, function, _ = available[args.command]
    handler: Callable[[argparse.Namespace], int | None] = getattr(importlib.import_module(module), function)
    try:
        return int(handler(args) or 0)
    except BoomError as exc:
        print(f"boom {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"boom {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
