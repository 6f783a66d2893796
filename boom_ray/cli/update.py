"""`boom update --config UPDATE.yaml`: train on new + sampled old data, merge into the current model."""

from __future__ import annotations

import argparse

from boom_ray.cli.common import add_run_arguments, config_from_args

HELP = "incremental update: train on new + sampled old data, merge into the current model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)


def run(args: argparse.Namespace) -> int:
    from boom_ray.workflows.update import run_update  # lazy: ray and torch; boom --help stays instant

    record = run_update(config_from_args(args))
    cost = record["training_cost"]
    print(f"\nupdated model: {record['lineage']['updated_model']}")
    print(f"training cost: {cost['update_tokens']:,} tokens for the update vs ~"
          f"{cost['retrain_all_bags_tokens_estimate']:,} to retrain {len(cost['bags_in_full_retrain'])} "
          f"bags on old + new data ({cost['retrain_over_update']}x)")
    for label, s in record["scores"].items():
        print(f"{label:>8}: ID mean {s['id_mean']}, OOD mean {s['ood_mean']}")
    return 0
