"""Validate one source file and write its rows into every requested bag.

Two streaming passes over one file, so memory is bounded by a chunk plus 9 bytes per row:
1. parse and validate chunk by chunk; valid rows go to a staging Parquet file (the 100 % bag
   itself when it is requested: it is the whole validated corpus), bad rows to the quarantine;
   only each valid row's line number is kept.
2. per bag, pick the rows from the line numbers alone (`sampling.select`), then read the
   staging file back row group by row group and write each bag's share.
The caller (a Ray Data task per file, see `stage.py`) owns the temporary output directories.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from boom_ray.corpus import sampling
from boom_ray.corpus.reader import BAG_SCHEMA, SourceFile, iter_chunks


@dataclass(frozen=True)
class BagRequest:
    name: str
    ratio: float
    out_dir: str
    """Temporary directory of this bag; the file's rows go to `<out_dir>/<task>.parquet`."""


@dataclass
class FileResult:
    task: str
    source: str
    read: int = 0
    kept: int = 0
    bad: dict[str, int] = field(default_factory=dict)
    selected: dict[str, int] = field(default_factory=dict)
    types: list[str] = field(default_factory=list)
    """Distinct non-null `type` values of the task's rows (normally one)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "FileResult":
        return cls(**json.loads(text))


def output_path(out_dir: str, src: SourceFile) -> str:
    return posixpath.join(out_dir, src.task + ".parquet")


def _writer(fs: pafs.FileSystem, path: str) -> pq.ParquetWriter:
    fs.create_dir(posixpath.dirname(path), recursive=True)
    return pq.ParquetWriter(path, BAG_SCHEMA, filesystem=fs, compression="snappy")


def bag_source_file(fs: pafs.FileSystem, src: SourceFile, bags: list[BagRequest], *, seed: int,
                    nested: bool, quarantine_dir: str, staging_dir: str, chunk_rows: int,
                    out_fs: pafs.FileSystem) -> FileResult:
    """Validate `src`, quarantine its bad rows and write its share of every bag.

    Deterministic: the same file, seed and ratios give the same rows in the same order.
    """
    result = FileResult(task=src.task, source=src.relpath)
    full = next((b for b in bags if b.ratio >= 1.0), None)
    staging = output_path(full.out_dir if full else staging_dir, src)
    reasons: Counter[str] = Counter()
    types: set[str] = set()
    lines: list[np.ndarray] = []
    quarantine = None
    writer = _writer(out_fs, staging)
    try:
        for chunk in iter_chunks(fs, src, chunk_rows):
            result.read += chunk.valid.num_rows + len(chunk.bad)
            if chunk.bad:
                if quarantine is None:
                    path = posixpath.join(quarantine_dir, src.relpath + ".quarantine.jsonl")
                    out_fs.create_dir(posixpath.dirname(path), recursive=True)
                    quarantine = out_fs.open_output_stream(path)
                for row in chunk.bad:
                    reasons[row["reason"]] += 1
                    quarantine.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
            if chunk.valid.num_rows:
                writer.write_table(chunk.valid, row_group_size=chunk.valid.num_rows)
                lines.append(chunk.valid["line"].to_numpy())
                types.update(t for t in chunk.valid["type"].unique().to_pylist() if t is not None)
    finally:
        writer.close()
        if quarantine is not None:
            quarantine.close()
    all_lines = np.concatenate(lines) if lines else np.zeros(0, dtype=np.int64)
    result.kept = len(all_lines)
    result.bad = dict(sorted(reasons.items()))
    result.types = sorted(types)

    masks = {}
    for bag in bags:
        keys = sampling.row_keys(seed, sampling.bag_salt(bag.ratio, nested), src.task, all_lines)
        masks[bag.name] = sampling.select(keys, all_lines, bag.ratio)
        result.selected[bag.name] = int(masks[bag.name].sum())

    partial = [b for b in bags if b is not full]
    writers = {b.name: _writer(out_fs, output_path(b.out_dir, src)) for b in partial}
    try:
        offset = 0
        with out_fs.open_input_file(staging) as handle:
            reader = pq.ParquetFile(handle)
            for i in range(reader.num_row_groups):
                group = reader.read_row_group(i)
                span = slice(offset, offset + group.num_rows)
                offset += group.num_rows
                for bag in partial:
                    mask = masks[bag.name][span]
                    if mask.any():
                        writers[bag.name].write_table(group.filter(pa.array(mask)))
    finally:
        for w in writers.values():
            w.close()
    if full is None:
        out_fs.delete_file(staging)
    return result
