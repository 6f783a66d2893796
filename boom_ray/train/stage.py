"""`boom train --config RUN.yaml [--bags ...]`: one fine-tuned embedder per bag, bags in parallel.

Exits non-zero when any bag failed, naming it; the others still finish and are exported.
"""

from __future__ import annotations

import argparse

from boom_ray.cli_support import config_from_args


def main(args: argparse.Namespace) -> int:
    from boom_ray.train.launch import TrainingFailed, summary_table, train_bags

    cfg = config_from_args(args)
    results = train_bags(cfg, getattr(args, "bags", None))
    print(summary_table(results), flush=True)
    failed = [r.bag for r in results if r.status == "failed"]
    if failed:
        raise TrainingFailed(f"training failed for {', '.join(failed)} (see the table above)")
    return 0
