"""`boom train` as a user runs it, in its own process and its own local Ray: each bag's
progress is printed once, none of Ray's or the workers' own lines reach the console, and the
per-bag log file holds the step lines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.train.bagtools import learnable_rows, run_config, write_bag

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_boom_train_prints_each_bag_once_and_keeps_ray_internals_in_the_logs(tiny_qwen3_path, tmp_path):
    write_bag(tmp_path, "bag20", {"words/a": learnable_rows(24, 1)})
    cfg = run_config(tmp_path, tiny_qwen3_path, ["bag20"], max_steps=6, log_every=2)
    cfg["ray"] = {"num_cpus": 1}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "boom_ray.cli", "train", "--config", str(tmp_path / "run.yaml")],
                          env=env, capture_output=True, text=True, timeout=170, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    lines = out.splitlines()
    assert "(RayTrainWorker" not in out and "PlacementGroupCleaner" not in out, out
    assert [ln for ln in lines if ln.startswith("logs: ")][0].startswith(f"logs: {tmp_path / 'logs'}"), out
    exported = [ln for ln in lines if ln.startswith("bag20") and "exported" in ln]
    assert exported == ["bag20  exported   step 6/6  loss " + exported[0].split("loss ")[1]], out
    # Per-step lines go to the log file only: the console prints a bag's line when its state
    # changes (the first report may already be at any step) and then once per 30 s period.
    wall = time.time() - t0
    training = [ln for ln in lines if ln.startswith("bag20") and " training " in ln]
    assert len(training) <= 1 + int(wall // 30), out
    assert not [ln for ln in lines if ln.startswith("[bag20] step")], out
    log = (tmp_path / "logs" / "train-bag20.log").read_text()
    assert "[bag20] step 2/6" in log and "[bag20] step 6/6" in log and "[bag20] exported after 6 steps" in log
    print(f"boom train took {time.time() - t0:.0f}s:\n{out}")
