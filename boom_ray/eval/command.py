"""`boom eval` and `boom embed`.

    boom eval --model runs/x/merges/multislerp --suite suites/nfcorpus --suite suites/sts --out results.json
    boom embed --model runs/x/merges/multislerp --input corpus.jsonl --output corpus_vectors/
"""

from __future__ import annotations

import argparse
import posixpath

from pydantic import ValidationError

from boom_ray.config import ConfigError, EvalConfig
from boom_ray.errors import BoomError
from boom_ray.eval.results import format_table
from boom_ray.storage import exists, resolve, staged_dir, write_json


def _eval_cfg(args: argparse.Namespace) -> EvalConfig:
    """The EvalConfig of the --batch-size / --num-encoders / --encoder-cpus / --encoder-gpus flags;
    a bad value is a ConfigError naming its flag, not a pydantic traceback."""
    try:
        return EvalConfig(batch_size=args.batch_size, num_encoders=args.num_encoders,
                          encoder_cpus=args.encoder_cpus, encoder_gpus=args.encoder_gpus)
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "eval settings"
        raise ConfigError(f"{flag} {err.get('input')!r}: {err['msg']}") from None


def eval_main(args: argparse.Namespace) -> int:
    from boom_ray.eval.evaluate import evaluate_model

    eval_cfg = _eval_cfg(args)
    results = evaluate_model(args.model, args.suite, eval_cfg, default_domain=args.domain,
                             default_instruction=args.instruction, show_progress=True)
    print(format_table(results))
    if args.out:
        fs, path = resolve(args.out)
        write_json(fs, path, results)
        print(f"results written to {args.out}")
    return 0


class EmbedInputError(BoomError):
    """An input for `boom embed` that cannot be read or lacks the named columns."""


def _input_format(fs, path: str) -> str:
    """'parquet' or 'json' from the file name, or from the files of a folder."""
    from pyarrow import fs as pafs

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


def embed_main(args: argparse.Namespace) -> int:
    """Read id + text columns on Ray Data, embed them with the encoder actor pool, write Parquet
    (id, vector) into a temporary folder and rename it to --output when every block is written."""
    import ray

    from boom_ray.eval.embedding import map_encoders
    from boom_ray.ray_runtime import init_ray

    in_fs, in_path = resolve(args.input)
    out_fs, out_path = resolve(args.output)
    if exists(out_fs, out_path):
        raise EmbedInputError(f"{args.output}: output already exists; remove it or choose another folder")
    kind = _input_format(in_fs, in_path)
    init_ray()
    read_args = dict(filesystem=in_fs, num_cpus=0.25)  # leave the CPUs to the encoders
    ds = ray.data.read_parquet(in_path, **read_args) if kind == "parquet" else ray.data.read_json(
        in_path, file_extensions=["jsonl", "json"], **read_args)
    columns = ds.columns()
    for field in (args.id_field, args.text_field):
        if field not in columns:
            raise EmbedInputError(f"{args.input}: no column {field!r} (columns: {columns}); "
                                  "see --id-field / --text-field")
    ds = ds.select_columns([args.id_field, args.text_field])
    eval_cfg = _eval_cfg(args)
    ds = map_encoders(ds, args.model, eval_cfg, text_col=args.text_field, keep=[args.id_field], prompt=args.prompt)
    with staged_dir(out_fs, out_path, replace=False) as tmp:
        ds.write_parquet(tmp, filesystem=out_fs)
    print(f"embeddings written to {args.output}")
    return 0
