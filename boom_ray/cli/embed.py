"""`boom embed --model DIR --input PATH --output DIR`: a text column -> Parquet (id, vector).

    boom embed --model runs/x/merges/multislerp --input corpus.jsonl --output corpus_vectors/
"""

from __future__ import annotations

import argparse

from boom_ray.cli.common import add_encoder_arguments, eval_config_from_args

HELP = "embed a JSONL or Parquet text column into Parquet (Ray Data)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_encoder_arguments(p)
    p.add_argument("--input", required=True, metavar="PATH", help="JSONL or Parquet file or folder")
    p.add_argument("--output", required=True, metavar="DIR", help="Parquet output folder (id, vector)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--id-field", default="_id")
    p.add_argument("--prompt", help="prompt prepended to every text (e.g. a query instruction)")


def run(args: argparse.Namespace) -> int:
    from boom_ray.eval.embed_files import embed_files  # lazy: ray (Ray Data) and torch; boom --help stays instant

    embed_files(args.model, args.input, args.output, eval_config_from_args(args),
                text_field=args.text_field, id_field=args.id_field, prompt=args.prompt)
    print(f"embeddings written to {args.output}")
    return 0
