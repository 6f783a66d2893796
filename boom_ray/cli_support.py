"""Helpers the subcommands share: loading the config with `--set` overrides."""

from __future__ import annotations

import argparse

import yaml

from boom_ray.config import ConfigError, RunConfig, load_config


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, parse_overrides(getattr(args, "overrides", [])))
