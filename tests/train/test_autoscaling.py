"""Bags in parallel on Ray's real autoscaler (the fake multi-node provider: nodes are local
raylets that the autoscaler starts and stops), and bags queueing on a fixed cluster too small
for two of them.

The autoscaling cluster is its own Ray: a head with 0 CPUs started by ``ray start --head
--block`` in its own session (stopping that process group stops that cluster only; `ray stop`
would stop every Ray on the machine), with a worker type of 1 CPU, min_workers 0. Its driver is
a separate process (tests/train/autoscale_driver.py), so it cannot collide with the session's Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from boom_ray.config import BoomConfig
from boom_ray.train.export import read_export_manifest
from boom_ray.train.launch import train_bags
from tests.train.bagtools import learnable_rows, run_config, write_bag
from tests.train.runtools import in_thread, result

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _autoscaling_config(gcs_address: str) -> dict:
    """What ray.cluster_utils.AutoscalingCluster generates (its start() runs `ray stop --force`,
    which would kill every other Ray on this shared machine, so it is not used as is)."""
    return {
        "cluster_name": "boom-fake", "max_workers": 5, "idle_timeout_minutes": 0.2, "upscaling_speed": 5.0,
        # the fake nodes share one IP and have nothing to set up: no node updaters
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "auth": {"ssh_user": "ubuntu"}, "use_internal_ips": True,
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu1": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 5},
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@pytest.fixture
def autoscaling_head(tmp_path):
    import ray._private.services

    ip = ray._private.services.get_node_ip_address()
    port = _free_port()
    config = tmp_path / "autoscaler.json"
    config.write_text(json.dumps(_autoscaling_config(f"{ip}:{port}")))
    temp_dir = tempfile.mkdtemp(prefix="rayas-", dir="/tmp")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_AUTH_MODE": "token",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(HERE.parents[1])}
    env.pop("RAY_ADDRESS", None)
    ports = [f"--{flag}={_free_port()}" for flag in (
        "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    log = (tmp_path / "head.log").open("a")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=0",
         f"--autoscaling-config={config}", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp_dir}", *ports],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield f"{ip}:{port}", env, tmp_path / "head.log"
    os.killpg(head.pid, signal.SIGTERM)  # the head and every node its autoscaler started
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.heavy
def test_five_bags_train_at_once_on_nodes_the_autoscaler_adds(autoscaling_head, tiny_qwen3_path, tmp_path):
    address, env, head_log = autoscaling_head
    out = tmp_path / "report.json"
    time.sleep(5)  # the head's GCS accepts drivers a few seconds after `ray start`
    proc = subprocess.run([sys.executable, str(HERE / "autoscale_driver.py"), address, str(tmp_path / "work"),
                           str(tiny_qwen3_path), str(out)], env=env, capture_output=True, text=True, timeout=720)
    assert proc.returncode == 0, proc.stderr[-3000:] + head_log.read_text()[-2000:]
    report = json.loads(out.read_text())
    # the cluster started with the 0-CPU head only
    assert [n["cpus"] for n in report["nodes_before"] if n["alive"]] == [0.0]
    # on failure, the driver's output names the cause (Ray's controller errors are one line in a result)
    assert [r["status"] for r in report["results"]] == ["trained"] * 5, (report["results"], proc.stderr[-4000:])
    m = report["manifests"]
    # every bag trained on its own node, none of them the head: nodes the autoscaler added
    nodes = {b: x["node_id"] for b, x in m.items()}
    assert len(set(nodes.values())) == 5 and report["head"] not in nodes.values()
    added = {n["id"] for n in report["nodes_after"] if n["cpus"] == 1.0}
    assert set(nodes.values()) <= added | {n["id"] for n in report["nodes_after"] if not n["alive"]}
    # all five ran at the same time: the last worker to start its bag started before the first
    # bag finished (worker start, not the first step: on this 2-core box the five model loads
    # and DeepSpeed set-ups take minutes and finish at different times)
    last_start = max(x["worker_started"] for x in m.values())
    first_end = min(x["finished"] for x in m.values())
    assert last_start < first_end, m
    steps_overlap = min(x["finished"] for x in m.values()) - max(x["train_started"] for x in m.values())
    print(f"autoscaler: stage {report['stage_s']:.0f} s; all five running together for {first_end - last_start:.1f} s "
          f"(step loops overlapping {steps_overlap:.1f} s)")


def test_bags_queue_on_a_cluster_too_small_for_two_and_ray_data_keeps_running(ray_session, tiny_qwen3_path,
                                                                             tmp_path):
    """The session's 2-CPU Ray: each bag takes 1.5 CPUs, so two never fit at once; both trainers
    is submitted at once and waits for its placement group (Ray Train retries the start-up
    timeout), while a Ray Data job in the 0.5 CPU left finishes during training."""
    import ray.data

    bags = ["bag20", "bag40"]  # two are enough to queue; each more costs a Ray Train start-up retry
    for i, bag in enumerate(bags):
        write_bag(tmp_path, bag, {"words": learnable_rows(16, 200 + i)})
    cfg = BoomConfig.model_validate(run_config(tmp_path, tiny_qwen3_path, bags, max_steps=2, log_every=1,
                                              num_workers=1, cpus_per_worker=1.5, zero_stage=0))
    thread, box = in_thread(train_bags, cfg)
    time.sleep(2)
    total = ray.data.range(1000, override_num_blocks=4).map_batches(
        lambda b: {"id": b["id"] * 2}, num_cpus=0.25).sum("id")
    data_done = time.time()
    results = result(thread, box, timeout=600)
    assert [r.status for r in results] == ["trained"] * 2, [r.error for r in results]
    assert total == 2 * sum(range(1000))
    m = sorted((read_export_manifest(str(tmp_path), b) for b in bags), key=lambda x: x["train_started"])
    for earlier, later in zip(m, m[1:]):
        assert earlier["finished"] <= later["train_started"], "two 1.5-CPU bags overlapped on 2 CPUs"
    assert data_done < m[-1]["finished"], "Ray Data waited for every bag"
