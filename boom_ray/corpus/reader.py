"""Reading and validating a FlagEmbedding corpus, one source file (= one task) at a time.

A corpus is a directory of `.jsonl` (or Parquet) files, nested folders allowed; a task is a
file's relative path without extension. Each file is read in chunks of rows, so memory stays
bounded whatever the file size. A chunk is parsed and checked column-wise by Arrow (fast path);
only a chunk that holds a bad row is re-read line by line by :func:`row_problem`, which is the one
definition of what a valid row is and of every quarantine reason.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from boom_ray.runtime import storage
from boom_ray.errors import BoomError

ROW_SCHEMA = pa.schema([
    ("query", pa.string()),
    ("pos", pa.list_(pa.string())),
    ("neg", pa.list_(pa.string())),
    ("prompt", pa.string()),
    ("type", pa.string()),
    ("pos_scores", pa.list_(pa.float64())),
    ("neg_scores", pa.list_(pa.float64())),
])
"""The FlagEmbedding columns; `prompt`, `type` and the teacher scores may be null."""
SCORE_COLUMNS = {"pos_scores": "pos", "neg_scores": "neg"}
"""Teacher scores for distillation (FlagEmbedding): one finite number per passage of the list."""

BAG_SCHEMA = pa.schema([("task", pa.string()), ("source", pa.string()), ("line", pa.int64()),
                        *ROW_SCHEMA])
"""A validated row with its provenance: task, source file (relative) and 1-based line (or row)."""

EXTENSIONS = {".jsonl": "jsonl", ".parquet": "parquet"}
_READ_BLOCK = 8 << 20


class CorpusError(BoomError):
    """The corpus cannot be read as a whole (no files, two files for one task, unreadable file)."""


@dataclass(frozen=True)
class SourceFile:
    path: str
    """Path on the corpus filesystem."""
    relpath: str
    task: str
    format: str
    size: int


@dataclass
class Chunk:
    """Validated rows of one chunk (BAG_SCHEMA) and its bad rows (for the quarantine)."""

    valid: pa.Table
    bad: list[dict[str, Any]] = field(default_factory=list)


def discover(corpus: str, fmt: str = "auto") -> tuple[pafs.FileSystem, list[SourceFile]]:
    """The corpus's source files, sorted by relative path: that order never depends on listing."""
    fs, root = storage.resolve(corpus)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise CorpusError(f"{corpus}: corpus not found")
    if info.type == pafs.FileType.File:
        infos, base = [info], posixpath.dirname(root)
    else:
        infos, base = fs.get_file_info(pafs.FileSelector(root, recursive=True)), root
    files: dict[str, SourceFile] = {}
    for item in infos:
        stem, ext = posixpath.splitext(item.path)
        kind = EXTENSIONS.get(ext.lower())
        if item.type != pafs.FileType.File or kind is None or (fmt != "auto" and kind != fmt):
            continue
        relpath = posixpath.relpath(item.path, base)
        if any(part.startswith(".") for part in relpath.split("/")):
            continue  # hidden files and our own temporary outputs
        task = posixpath.splitext(relpath)[0]
        if task in files:
            raise CorpusError(f"{corpus}: task {task!r} has two files, {files[task].relpath} and {relpath}")
        files[task] = SourceFile(item.path, relpath, task, kind, item.size or 0)
    if not files:
        wanted = " or ".join(EXTENSIONS) if fmt == "auto" else f".{fmt}"
        raise CorpusError(f"{corpus}: no {wanted} files found")
    return fs, sorted(files.values(), key=lambda f: f.relpath)


def fingerprint(fs: pafs.FileSystem, files: list[SourceFile]) -> str:
    """Identity of a corpus: every file's relative path, size and sampled content (content, not
    modification times: a corpus copied to another node or unpacked from a job's working-dir
    upload keeps its identity; an edited file changes it)."""
    return storage.stable_hash([[f.relpath, f.size, storage.sampled_digest(fs, f.path)] for f in files], 16)


def _string_list_problem(name: str, value: Any, *, allow_empty: bool) -> str | None:
    if not isinstance(value, list):
        return f"bad_type:{name}"
    if not value and not allow_empty:
        return f"empty_{name}"
    for item in value:
        if not isinstance(item, str):
            return f"bad_type:{name}"
        if not item.strip():
            return f"empty_string:{name}"
    return None


def _scores_problem(name: str, value: Any, passages: list) -> str | None:
    if not isinstance(value, list):
        return f"bad_type:{name}"
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return f"bad_type:{name}"
    if len(value) != len(passages):
        return f"length_mismatch:{name}"
    if not all(math.isfinite(item) for item in value):
        return f"non_finite:{name}"
    return None


def row_problem(obj: Any) -> str | None:
    """Why a parsed row is not a valid FlagEmbedding row, or None when it is.

    Reasons: not_object, missing_query, bad_type:query, empty_query, missing_pos, bad_type:pos,
    empty_pos, empty_string:pos, missing_neg, bad_type:neg, empty_string:neg, bad_type:prompt,
    empty_string:prompt, bad_type:type, empty_string:type, and for the optional teacher scores
    bad_type:pos_scores (not a list of numbers), length_mismatch:pos_scores (not one score per
    passage of `pos`), non_finite:pos_scores (NaN or infinite), the same for neg_scores. An empty
    `neg` list is allowed (the row then trains on in-batch negatives only); `prompt`, `type`,
    `pos_scores` and `neg_scores` are optional.
    """
    if not isinstance(obj, dict):
        return "not_object"
    query = obj.get("query")
    if query is None:
        return "missing_query"
    if not isinstance(query, str):
        return "bad_type:query"
    if not query.strip():
        return "empty_query"
    if obj.get("pos") is None:
        return "missing_pos"
    if problem := _string_list_problem("pos", obj["pos"], allow_empty=False):
        return problem
    if obj.get("neg") is None:
        return "missing_neg"
    if problem := _string_list_problem("neg", obj["neg"], allow_empty=True):
        return problem
    for name in ("prompt", "type"):
        value = obj.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            return f"bad_type:{name}"
        if not value.strip():
            return f"empty_string:{name}"
    for name, passages in SCORE_COLUMNS.items():
        if obj.get(name) is not None and (problem := _scores_problem(name, obj[name], obj[passages])):
            return problem
    return None


def _all_valid(table: pa.Table) -> bool:
    """Column-wise version of `row_problem` for a table already typed as ROW_SCHEMA."""
    if table.num_rows == 0:
        return True
    checks = [
        pc.all(pc.is_valid(table["query"])),
        pc.all(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table["query"])), 0)),
        pc.all(pc.is_valid(table["pos"])),
        pc.all(pc.greater(pc.list_value_length(table["pos"]), 0)),
        pc.all(pc.is_valid(table["neg"])),
    ]
    for name in ("pos", "neg"):
        items = pc.list_flatten(table[name])
        if len(items):
            checks.append(pc.all(pc.is_valid(items)))
            checks.append(pc.all(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(items)), 0)))
    for name in ("prompt", "type"):
        present = pc.drop_null(table[name])
        if len(present):
            checks.append(pc.all(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(present)), 0)))
    for name, passages in SCORE_COLUMNS.items():
        scores = table[name]
        same_length = pc.equal(pc.list_value_length(scores), pc.list_value_length(table[passages]))
        checks.append(pc.all(pc.or_kleene(pc.is_null(scores), same_length)))
        items = pc.list_flatten(scores)
        if len(items):
            checks.append(pc.all(pc.is_valid(items)))
            checks.append(pc.all(pc.is_finite(items)))
    return all(c.as_py() is not False for c in checks)


def _with_provenance(rows: pa.Table, src: SourceFile, lines: list[int]) -> pa.Table:
    n = rows.num_rows
    return pa.table([pa.array([src.task] * n, pa.string()), pa.array([src.relpath] * n, pa.string()),
                     pa.array(lines, pa.int64()), *rows.columns], schema=BAG_SCHEMA)


def _bad(src: SourceFile, line: int, reason: str, raw: str) -> dict[str, Any]:
    return {"source": src.relpath, "line": line, "reason": reason, "raw": raw}


def _jsonl_chunk(src: SourceFile, lines: list[bytes], numbers: list[int]) -> Chunk:
    try:
        longest = max(map(len, lines))
        parsed = pajson.read_json(
            io.BytesIO(b"\n".join(lines)),
            read_options=pajson.ReadOptions(block_size=max(_READ_BLOCK, 2 * longest + 2)),
            parse_options=pajson.ParseOptions(explicit_schema=ROW_SCHEMA,
                                              unexpected_field_behavior="ignore"))
        if parsed.num_rows == len(lines) and _all_valid(parsed):
            return Chunk(_with_provenance(parsed.select(ROW_SCHEMA.names), src, numbers))
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    # Slow path: at least one row is bad; find which, one line at a time.
    good, good_lines, bad = [], [], []
    for raw, number in zip(lines, numbers):
        text = raw.decode("utf-8", errors="replace")
        try:
            obj = json.loads(raw)
        except ValueError:
            bad.append(_bad(src, number, "invalid_json", text))
            continue
        problem = row_problem(obj)
        if problem:
            bad.append(_bad(src, number, problem, text))
        else:
            good.append({name: obj.get(name) for name in ROW_SCHEMA.names})
            good_lines.append(number)
    return Chunk(_with_provenance(pa.Table.from_pylist(good, schema=ROW_SCHEMA), src, good_lines), bad)


def _iter_jsonl(fs: pafs.FileSystem, src: SourceFile, chunk_rows: int) -> Iterator[Chunk]:
    lines: list[bytes] = []
    numbers: list[int] = []
    number = 0
    tail = b""
    with fs.open_input_stream(src.path) as stream:
        while True:
            block = stream.read(_READ_BLOCK)
            data = tail + block
            parts = data.split(b"\n")
            tail = parts.pop() if block else b""
            for raw in parts:
                number += 1
                if raw.strip():
                    lines.append(raw.rstrip(b"\r"))
                    numbers.append(number)
                if len(lines) >= chunk_rows:
                    yield _jsonl_chunk(src, lines, numbers)
                    lines, numbers = [], []
            if not block:
                break
    if lines:
        yield _jsonl_chunk(src, lines, numbers)


def _iter_parquet(fs: pafs.FileSystem, src: SourceFile, chunk_rows: int) -> Iterator[Chunk]:
    try:
        handle = fs.open_input_file(src.path)
        reader = pq.ParquetFile(handle)
    except (OSError, pa.ArrowInvalid) as exc:
        raise CorpusError(f"{src.relpath}: not a readable Parquet file: {exc}") from None
    columns = [c for c in ROW_SCHEMA.names if c in reader.schema_arrow.names]
    first = 1
    with handle:
        for batch in reader.iter_batches(batch_size=chunk_rows, columns=columns):
            numbers = list(range(first, first + batch.num_rows))
            first += batch.num_rows
            table = pa.Table.from_batches([batch])
            try:
                typed = pa.table({name: (table[name].cast(ROW_SCHEMA.field(name).type)
                                         if name in columns else pa.nulls(table.num_rows, ROW_SCHEMA.field(name).type))
                                  for name in ROW_SCHEMA.names}, schema=ROW_SCHEMA)
                if _all_valid(typed):
                    yield Chunk(_with_provenance(typed, src, numbers))
                    continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                pass
            good, good_lines, bad = [], [], []
            for obj, number in zip(table.to_pylist(), numbers):
                problem = row_problem(obj)
                if problem:
                    bad.append(_bad(src, number, problem, json.dumps(obj, default=str)))
                else:
                    good.append({name: obj.get(name) for name in ROW_SCHEMA.names})
                    good_lines.append(number)
            yield Chunk(_with_provenance(pa.Table.from_pylist(good, schema=ROW_SCHEMA), src, good_lines), bad)


def iter_chunks(fs: pafs.FileSystem, src: SourceFile, chunk_rows: int = 8192) -> Iterator[Chunk]:
    """Validated chunks of one source file, in file order, each at most `chunk_rows` rows."""
    reader = _iter_jsonl if src.format == "jsonl" else _iter_parquet
    try:
        yield from reader(fs, src, chunk_rows)
    except OSError as exc:
        raise CorpusError(f"{src.relpath}: cannot read: {exc}") from None
