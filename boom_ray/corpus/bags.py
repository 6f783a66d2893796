"""Reading bags back: `<workdir>/bags/<bag>/` holds one Parquet file per task and manifest.json.

A bag's row order is fixed (files sorted by path, rows in file order), so a row index names the
same row on every rank and every run; the batch plan is made of such indices.
"""

from __future__ import annotations

import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from boom_ray.runtime import storage
from boom_ray.config import BoomConfig, bag_name
from boom_ray.corpus.reader import BAG_SCHEMA
from boom_ray.errors import BoomError


PLAN_FILE = "plan.json"
"""`<workdir>/bags/plan.json`: the bags of the task and cluster strategies (written by `boom bag`)."""


def bag_dir(workdir: str, bag: str) -> str:
    return posixpath.join(workdir, "bags", bag)


def read_plan(workdir: str) -> dict | None:
    fs, path = storage.resolve(workdir)
    return storage.read_json_or_none(fs, posixpath.join(path, "bags", PLAN_FILE))


def run_bags(cfg: BoomConfig, *, required: bool = True) -> dict[str, float]:
    """The run's bags in order, each with its default merge weight.

    random strategy: bag20 ... bag100 from `bagging.ratios`, weighted by their ratio (BOOM).
    task / cluster: the groups `boom bag` wrote to plan.json, each weighted by its share of the
    corpus's valid rows: the same data-size rule as the ratios (and as the paper's 2.8 / 4.3 for
    an update), so a model trained on more data counts more. Without a plan (bags not made yet):
    an error, or {} when not `required` (the report of a run that has not bagged)."""
    if cfg.bagging.strategy == "random":
        return {bag_name(r): r for r in cfg.bagging.ratios}
    plan = read_plan(cfg.workdir)
    if plan is None or plan.get("strategy") != cfg.bagging.strategy:
        if not required:
            return {}
        raise BoomError(f"{cfg.workdir}: no bags of strategy {cfg.bagging.strategy!r} yet (no bags/{PLAN_FILE}); "
                        "run `boom bag --config ...` first")
    return {name: float(plan["weights"][name]) for name in plan["bags"]}


def read_manifest(bag_uri: str) -> dict | None:
    """The bag's manifest, or None when the bag is missing or unfinished."""
    fs, path = storage.resolve(bag_uri)
    return storage.read_json_or_none(fs, posixpath.join(path, "manifest.json"))


def bag_files(bag_uri: str) -> tuple[pafs.FileSystem, list[str]]:
    fs, path = storage.resolve(bag_uri)
    if not storage.exists(fs, posixpath.join(path, "manifest.json")):
        raise BoomError(f"{bag_uri}: not a finished bag (no manifest.json); run `boom bag` first")
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return fs, sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))


def read_bag(bag_uri: str, columns: list[str] | None = None) -> pa.Table:
    """All rows of a bag in its fixed order. Local files are memory-mapped, so several training
    workers on one node share the page cache instead of each holding a copy."""
    fs, files = bag_files(bag_uri)
    local = isinstance(fs, pafs.LocalFileSystem)
    tables = [pq.read_table(f, columns=columns, memory_map=local, filesystem=None if local else fs)
              for f in files]
    if not tables:
        return BAG_SCHEMA.empty_table() if columns is None else BAG_SCHEMA.empty_table().select(columns)
    return pa.concat_tables(tables)


def task_index(table: pa.Table) -> tuple[dict[str, np.ndarray], dict[str, str | None]]:
    """Row indices of each task in `table`, and each task's `type` (its first non-null one)."""
    tasks = table["task"].combine_chunks().dictionary_encode()
    codes = tasks.indices.to_numpy(zero_copy_only=False)
    names = tasks.dictionary.to_pylist()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    rows = {names[i]: order[bounds[i]:bounds[i + 1]] for i in range(len(names))}
    types: dict[str, str | None] = {}
    type_column = table["type"].to_pylist() if "type" in table.column_names else [None] * table.num_rows
    for name, idx in rows.items():
        types[name] = next((type_column[i] for i in idx if type_column[i] is not None), None)
    return rows, types
