"""Driver of the autoscaling test, run as its own process against a Ray head started with the
fake multi-node provider (tests/train/test_autoscaling.py): writes five tiny bags, records the
nodes before, trains every bag with `train_bags` (one 1-CPU worker each: a 1-CPU node per bag)
and writes what happened as JSON.

``python autoscale_driver.py GCS_ADDRESS WORKDIR MODEL_DIR OUT_JSON``
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _nodes():
    import ray

    return [{"id": n["NodeID"], "alive": n["Alive"], "cpus": n["Resources"].get("CPU", 0.0)} for n in ray.nodes()]


def main(address: str, workdir: str, model: str, out: str) -> None:
    import ray

    from boom_ray.config import BoomConfig
    from boom_ray.train.export import read_export_manifest
    from boom_ray.train.launch import train_bags
    from tests.train.bagtools import learnable_rows, run_config, write_bag

    bags = ["bag20", "bag40", "bag60", "bag80", "bag100"]
    for i, bag in enumerate(bags):
        write_bag(workdir, bag, {"words": learnable_rows(16, 100 + i)})
    cfg = BoomConfig.model_validate(run_config(workdir, model, bags, max_steps=10, log_every=5, num_workers=1,
                                              cpus_per_worker=1, zero_stage=0))
    ray.init(address=address, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}})
    head = ray.get_runtime_context().get_node_id()
    before = _nodes()
    t0 = time.time()
    results = train_bags(cfg)
    elapsed = time.time() - t0
    report = {"head": head, "nodes_before": before, "nodes_after": _nodes(), "stage_s": elapsed,
              "results": [{"bag": r.bag, "status": r.status, "error": r.error} for r in results],
              "manifests": {b: read_export_manifest(workdir, b) for b in bags}}
    Path(out).write_text(json.dumps(report, indent=2, default=str))
    ray.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:5])
