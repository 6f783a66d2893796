"""Command names, flags and config keys are contracts users' scripts rely on: none may vanish or
change its default, type or choices. tests/golden/contracts.json holds them as they were released;
new flags and keys may be added freely. After adding some, record them with

    .venv/bin/python tests/test_contracts.py --write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent / "golden" / "contracts.json"


def cli_contract() -> dict[str, dict[str, Any]]:
    """`boom COMMAND` -> flag (or positional dest) -> what a script relies on."""
    from boom_ray.cli import build_parser

    out: dict[str, dict[str, Any]] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        flags: dict[str, Any] = {}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    walk(subparser, f"{name} {sub}")
                continue
            key = "/".join(action.option_strings) or action.dest
            flags[key] = {"dest": action.dest, "nargs": action.nargs, "default": repr(action.default),
                          "choices": sorted(map(str, action.choices)) if action.choices else None,
                          "required": action.required, "action": type(action).__name__}
        out[name] = flags

    walk(build_parser(), "boom")
    return out


def config_contract() -> dict[str, Any]:
    """Every key of the run config by its YAML path (`train.max_steps`) -> type and default."""
    from boom_ray.config import BoomConfig

    schema = BoomConfig.model_json_schema()
    defs = schema.get("$defs", {})
    out: dict[str, Any] = {}

    def resolve(node: dict) -> dict:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        return node

    def walk(node: dict, path: str) -> None:
        node = resolve(node)
        for key, prop in node.get("properties", {}).items():
            where = f"{path}.{key}" if path else key
            branches = [resolve(b) for b in prop.get("anyOf", [prop])]
            out[where] = {"type": sorted(str(b.get("type", "object")) for b in branches),
                          "default": json.dumps(prop.get("default"), sort_keys=True),
                          "enum": sorted(map(str, prop["enum"])) if "enum" in prop else None,
                          "required": key in node.get("required", [])}
            for branch in branches:
                if branch.get("properties"):
                    walk(branch, where)
                items = branch.get("items")
                if isinstance(items, dict) and resolve(items).get("properties"):
                    walk(items, where + "[]")

    walk(schema, "")
    return out


def contracts() -> dict[str, Any]:
    return {"cli": cli_contract(), "config": config_contract()}


def _missing_or_changed(golden: dict, now: dict, where: str = "") -> list[str]:
    problems = []
    for key, value in golden.items():
        here = f"{where}{key}" if not where else f"{where} | {key}"
        if key not in now:
            problems.append(f"{here}: gone")
        elif isinstance(value, dict) and isinstance(now[key], dict) and not ({"dest", "type"} & set(value)):
            problems += _missing_or_changed(value, now[key], here)
        elif value != now[key]:
            problems.append(f"{here}: was {value}, now {now[key]}")
    return problems


def test_every_released_command_flag_and_config_key_is_still_there_unchanged():
    problems = _missing_or_changed(json.loads(GOLDEN.read_text()), contracts())
    assert not problems, "contracts broken:\n" + "\n".join(problems)


def test_the_checker_sees_a_removed_flag_and_a_changed_default():
    golden = contracts()
    now = json.loads(json.dumps(golden))
    del now["cli"]["boom run"]["--config"]
    now["config"]["train.max_steps"]["default"] = "7"
    problems = _missing_or_changed(golden, now)
    assert any("boom run | --config: gone" in p for p in problems)
    assert any(p.startswith("config | train.max_steps: was") for p in problems)


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(contracts(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
