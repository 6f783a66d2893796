"""What every job entrypoint shares: run the code shipped with the job, through the `boom` CLI."""

from __future__ import annotations

import sys
from pathlib import Path

# The working dir uploaded with the job comes first, not a copy of boom-ray installed on the node.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boom_ray.cli import main as boom  # noqa: E402  (after the path above: the shipped copy)


def run(command: str, argv: list[str] | None = None) -> int:
    return boom([command, *(sys.argv[1:] if argv is None else argv)])
