"""`boom ablations --grid GRID.yaml`: the BOOM paper's comparison grid as a set of runs.

The paper compares BOOM's random bags merged by several methods with models trained per task and
per cluster of tasks (then merged), and with single full-corpus models trained with batch-level
shuffling, sequentially (task after task) or in two stages. One run config covers one cell: one
bag strategy and one schedule. A grid file names a base run and its cells as dotted overrides:

    run:            # a whole run config (BoomConfig), shared by every cell
      workdir: runs/paper-ablations
      ...
    cells:          # cell name -> overrides of `run` (the `boom --set` syntax, as a mapping)
      boom: {}
      per_task: {bagging.strategy: task}
      sequential: {bagging.ratios: [1.0], train.schedule: sequential, merge.merges: []}

Each cell runs the whole pipeline in `<workdir>/<cell>/` (resumable as `boom run` is), and the
grid's `<workdir>/ablations.md` puts every model of every cell in one table of ID and OOD means.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from boom_ray.config import ConfigError, BoomConfig, derive, read_yaml, set_dotted, validate_config
from boom_ray.config.units import check_folder_name
from boom_ray.eval.report import evaluate_run
from boom_ray.runtime import storage
from boom_ray.workflows.pipeline import run_pipeline


@dataclass
class Grid:
    run: BoomConfig
    cells: dict[str, BoomConfig]
    source: str


def _cell_config(run: BoomConfig, name: str, overrides: Any, source: str) -> BoomConfig:
    try:
        check_folder_name(name, "cell name")
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if not isinstance(overrides, dict):
        raise ConfigError(f"{source}: cells.{name}: expected a mapping of dotted keys, got {overrides!r}")
    if "workdir" in overrides:
        raise ConfigError(f"{source}: cells.{name}: a cell's workdir is <run.workdir>/{name}; do not set it")
    changes = {**overrides, "workdir": storage.join(run.workdir, name)}
    cell = derive(run, changes, f"{source} (cells.{name})")
    if cell.repeats > 1:  # run_grid runs one pipeline per cell: refused, not silently run once
        raise ConfigError(f"{source}: cells.{name}: repeats {cell.repeats}: a grid runs each cell once; "
                          "run a cell's config with `boom run --repeats N` instead")
    return cell


def load_grid(path: str | Path, cells: list[str] | None = None, overrides: dict[str, Any] | None = None) -> Grid:
    """Read and validate a grid file: the base run and every cell's derived run config (so a bad
    override fails now, naming its cell, not after the first cells have trained). `overrides`
    (dotted keys, as `--set`) change the base run, hence every cell."""
    path = Path(path)
    data = read_yaml(path, "grid file")
    if not isinstance(data, dict) or set(data) - {"run", "cells"} or not isinstance(data.get("cells"), dict):
        raise ConfigError(f"{path}: a grid file has exactly `run` (a run config) and `cells` (name -> overrides)")
    if isinstance(data.get("run"), dict):
        set_dotted(data["run"], overrides or {})
    run = validate_config(data.get("run"), f"{path} (run)")
    wanted = cells or list(data["cells"])
    unknown = [c for c in wanted if c not in data["cells"]]
    if unknown:
        raise ConfigError(f"{path}: unknown cell(s) {unknown}; cells: {list(data['cells'])}")
    return Grid(run, {name: _cell_config(run, name, data["cells"][name] or {}, str(path)) for name in wanted},
                str(path))


def is_grid_file(path: str | Path) -> bool:
    """Whether a YAML file is a grid file (has `cells`) rather than a run config."""
    data = yaml.safe_load(Path(path).read_text())
    return isinstance(data, dict) and "cells" in data


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def grid_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table: one line per (cell, model) with the model's ID and OOD means."""
    lines = ["| cell | model | ID mean | OOD mean |", "|---|---|---|---|"]
    for cell, models in results.items():
        for model, res in models.items():
            lines.append(f"| {cell} | {model} | {_fmt(res.get('id_mean'))} | {_fmt(res.get('ood_mean'))} |")
    return "\n".join(lines)


def run_grid(grid: Grid) -> dict[str, Any]:
    """Run every cell's pipeline in turn, then write `<workdir>/ablations.md`; returns
    {"cells": {cell: run manifest}, "table": markdown, "path": where it was written}."""
    manifests, results = {}, {}
    for name, cfg in grid.cells.items():
        print(f"\n##### cell {name} ({cfg.workdir}) #####", flush=True)
        manifests[name] = run_pipeline(cfg)
        results[name] = evaluate_run(cfg)  # cached by the cell's eval stage: no model is embedded again
    table = grid_table(results)
    fs, root = storage.resolve(grid.run.workdir)
    fs.create_dir(root, recursive=True)
    out = storage.join(root, "ablations.md")
    storage.write_bytes(fs, out, (f"# Ablation grid ({grid.source})\n\n{table}\n").encode())
    return {"cells": manifests, "table": table, "path": out}
