"""Embed a text column of JSONL or Parquet files into Parquet (id, vector) on Ray Data
(`boom embed`): read id + text, embed with the encoder actor pool, write into a staged folder that
is renamed to the output only when every block is written."""

from __future__ import annotations

import posixpath

from pyarrow import fs as pafs

from boom_ray.config import EvalConfig
from boom_ray.errors import BoomError
from boom_ray.eval.embedding import map_encoders
from boom_ray.runtime.ray_session import init_ray
from boom_ray.runtime.storage import exists, resolve, staged_dir


class EmbedInputError(BoomError):
    """An input for `boom embed` that cannot be read or lacks the named columns."""


def input_format(fs, path: str) -> str:
    """'parquet' or 'json' from the file name, or from the files of a folder."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise EmbedInputError(f"{path}: input not found")
    names = [path] if info.type == pafs.FileType.File else [
        i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File]
    kinds = {("parquet" if n.endswith(".parquet") else "json" if n.endswith((".jsonl", ".json")) else None)
             for n in names if not posixpath.basename(n).startswith((".", "_"))}
    kinds.discard(None)
    if len(kinds) != 1:
        raise EmbedInputError(f"{path}: expected .jsonl or .parquet files (one kind), found {sorted(kinds) or 'none'}")
    return kinds.pop()


def embed_files(model: str, input_uri: str, output_uri: str, eval_cfg: EvalConfig, *,
                text_field: str = "text", id_field: str = "_id", prompt: str | None = None) -> str:
    """Write (id, vector) Parquet for every row of `input_uri` to `output_uri`; returns the output."""
    import ray  # lazy: ray; boom --help imports the embed command's module

    in_fs, in_path = resolve(input_uri)
    out_fs, out_path = resolve(output_uri)
    if exists(out_fs, out_path):
        raise EmbedInputError(f"{output_uri}: output already exists; remove it or choose another folder")
    kind = input_format(in_fs, in_path)
    init_ray()
    read_args = dict(filesystem=in_fs, num_cpus=0.25)  # leave the CPUs to the encoders
    ds = ray.data.read_parquet(in_path, **read_args) if kind == "parquet" else ray.data.read_json(
        in_path, file_extensions=["jsonl", "json"], **read_args)
    columns = ds.columns()
    for field in (id_field, text_field):
        if field not in columns:
            raise EmbedInputError(f"{input_uri}: no column {field!r} (columns: {columns}); "
                                  "see --id-field / --text-field")
    ds = ds.select_columns([id_field, text_field])
    ds = map_encoders(ds, model, eval_cfg, text_col=text_field, keep=[id_field], prompt=prompt)
    with staged_dir(out_fs, out_path, replace=False) as tmp:
        ds.write_parquet(tmp, filesystem=out_fs)
    return output_uri
