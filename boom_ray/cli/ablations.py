"""`boom ablations --grid GRID.yaml [--cells A B ...]`: the paper's comparison grid, one run per cell."""

from __future__ import annotations

import argparse

from boom_ray.cli.common import add_set_argument, add_verbose_argument, overrides_from_args

HELP = "run an ablation grid (one pipeline per cell) and tabulate every model's ID / OOD means"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid", required=True, metavar="GRID.yaml", help="grid file: `run` + `cells`")
    p.add_argument("--cells", nargs="+", metavar="CELL", help="run only these cells (default: all)")
    add_set_argument(p)  # applies to the grid's base run, hence to every cell
    add_verbose_argument(p)


def run(args: argparse.Namespace) -> int:
    from boom_ray.workflows.ablations import load_grid, run_grid  # lazy: ray and torch; boom --help stays instant

    out = run_grid(load_grid(args.grid, args.cells, overrides_from_args(args)))
    print(out["table"])
    print(f"table: {out['path']}")
    return 0
