"""`boom eval --model DIR --suite DIR [--suite DIR ...] [--out results.json] [--mteb-dir DIR] [--prompts MODE]`.

    boom eval --model runs/x/merges/multislerp --suite suites/nfcorpus --suite suites/sts --out results.json
"""

from __future__ import annotations

import argparse

from boom_ray.cli.common import add_encoder_arguments, eval_config_from_args

HELP = "evaluate a model on retrieval/STS/classification/clustering suites"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_encoder_arguments(p)
    p.add_argument("--suite", action="append", required=True, metavar="DIR", help="suite directory (repeatable)")
    p.add_argument("--out", metavar="results.json", help="write results as JSON")
    p.add_argument("--instruction", help="query instruction for suites without one")
    p.add_argument("--domain", choices=["in", "out"], help="domain for suites without suite.json")
    p.add_argument("--prompts", choices=["declared", "model", "none"], default="declared",
                   help="declared: suite/--instruction, else the model's own prompt (default); "
                        "model: the model's own prompt only; none: no prompt")
    p.add_argument("--mteb-dir", metavar="DIR", help="also write one mteb TaskResult JSON per suite here")


def run(args: argparse.Namespace) -> int:
    from boom_ray.eval.evaluate import evaluate_model  # lazy: torch and ray (the encoders); boom --help stays instant
    from boom_ray.eval.results import format_table  # lazy: numpy; boom --help stays instant
    from boom_ray.runtime.storage import resolve, write_json  # lazy: pyarrow; boom --help stays instant

    eval_cfg = eval_config_from_args(args)
    results = evaluate_model(args.model, args.suite, eval_cfg, default_domain=args.domain,
                             default_instruction=args.instruction, show_progress=True, prompts=args.prompts)
    print(format_table(results))
    if args.out:
        fs, path = resolve(args.out)
        write_json(fs, path, results)
        print(f"results written to {args.out}")
    if args.mteb_dir:
        from boom_ray.eval.mteb_results import write_task_results  # lazy: pyarrow; boom --help stays instant

        write_task_results(args.mteb_dir, results)
        print(f"mteb TaskResult files written to {args.mteb_dir}")
    return 0
