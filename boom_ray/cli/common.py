"""What the subcommands share: the `--config` / `--set` / `--verbose` flags and the config they
load, the encoder flags of `boom eval` and `boom embed`, and the demo-data builders' flags.

Only config and argparse here: every command module imports this at `boom --help`."""

from __future__ import annotations

import argparse

import yaml
from pydantic import ValidationError

from boom_ray.config import ConfigError, EvalConfig, BoomConfig, load_config


def add_config_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--config", required=required, metavar="RUN.yaml", help="run configuration (YAML)")
    add_set_argument(p)


def add_set_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.max_steps=20 (YAML value syntax)")


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def add_verbose_argument(p: argparse.ArgumentParser) -> None:
    """`--verbose` for every command that starts Ray from a run config."""
    p.add_argument("--verbose", action="store_true",
                   help="stream Ray's and the workers' output (every step line) instead of the quiet console "
                        "and its live view (same as --set ray.verbose=true)")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """`--config`, `--set` and `--verbose`: the flags of every command that runs a stage of a run
    config on Ray (`boom bag`, `train`, `sweep`, `report`, `run`, `update`)."""
    add_config_arguments(p)
    add_verbose_argument(p)


def overrides_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The `--set` pairs, with `--verbose` as `ray.verbose`."""
    overrides = parse_overrides(getattr(args, "overrides", []))
    if getattr(args, "verbose", False):
        overrides["ray.verbose"] = True
    return overrides


def config_from_args(args: argparse.Namespace) -> BoomConfig:
    return load_config(args.config, overrides_from_args(args))


def add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-encoders", type=int, default=1, help="encoder actors on Ray Data (scale out)")
    p.add_argument("--encoder-cpus", type=float, default=1.0, help="CPUs per encoder actor")
    p.add_argument("--encoder-gpus", type=float, default=0.0, help="GPUs per encoder actor")


def eval_config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The EvalConfig of the --batch-size / --num-encoders / --encoder-cpus / --encoder-gpus flags;
    a bad value is a ConfigError naming its flag, not a pydantic traceback."""
    try:
        return EvalConfig(batch_size=args.batch_size, num_encoders=args.num_encoders,
                          encoder_cpus=args.encoder_cpus, encoder_gpus=args.encoder_gpus)
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "eval settings"
        raise ConfigError(f"{flag} {err.get('input')!r}: {err['msg']}") from None


# --------------------------------------------------------------------------- data builders
def add_build_arguments(p: argparse.ArgumentParser, *, rows_default: str, suite_size: int, held_out: str) -> None:
    """The sampling flags every demo-data builder shares (`boom build-wordnet`, `boom build-demo-data`)."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows-per-task", type=int, metavar="N",
                   help=f"at most N training rows per task (default: {rows_default})")
    p.add_argument("--suite-size", type=int, default=suite_size, metavar="N",
                   help="queries / pairs / items per evaluation suite")
    p.add_argument("--holdout", type=float, default=0.1, metavar="FRACTION",
                   help=f"fraction of {held_out} held out for dev + test suites")


def build_options(args: argparse.Namespace) -> dict[str, object]:
    """The sampling flags as `demo_data.wordnet.BuildOptions` keywords (the builder module, which
    defines that class, is imported only when a build runs)."""
    return {"seed": args.seed, "max_rows_per_task": args.max_rows_per_task, "suite_size": args.suite_size,
            "holdout": args.holdout}


def rebuild_command(command: str, args: argparse.Namespace, first: tuple[str, ...],
                    sources: dict[str, str] | None = None) -> str:
    """The command line that rebuilds a builder's output, recorded in its manifest and README:
    `first` flags always, then the sampling flags, then each source flag that is not its default."""
    parts = [command] + [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in first]
    parts.append(f"--seed {args.seed}")
    for flag in ("max_rows_per_task", "suite_size", "holdout"):
        value = getattr(args, flag, None)
        if value is not None:
            parts.append(f"--{flag.replace('_', '-')} {value}")
    parts += [f"--{k.replace('_', '-')} {getattr(args, k)}" for k, v in (sources or {}).items()
              if str(getattr(args, k, v)) != v]
    return " ".join(parts)
