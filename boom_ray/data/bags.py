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

from boom_ray import storage
from boom_ray.data.corpus import BAG_SCHEMA
from boom_ray.errors import BoomError


def bag_dir(workdir: str, bag: str) -> str:
    return posixpath.join(workdir, "bags", bag)


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
