"""Errors a user can act on. The CLI prints their message without a traceback."""

from __future__ import annotations

from typing import Any


class BoomError(Exception):
    """Base of every error whose message alone tells the user what to fix (file, row, tensor)."""


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def describe_validation_errors(errors: list[dict[str, Any]], source: str) -> str:
    """Pydantic validation errors as one message: each with its YAML path (`bagging.ratios[2]`)."""
    lines = [f"{source}: invalid run configuration:"]
    for err in errors:
        where = _loc(err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"  {where}: required key is missing")
        else:
            lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)
