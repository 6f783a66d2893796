"""`ray job submit` end to end: a real Ray head on loopback runs the demo's smoke twin, with its
work dir given as a pyarrow filesystem URI (file://), as a cluster would use s3://."""

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

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_under(temp_dir: str) -> list[int]:
    """PIDs whose command line names the cluster's temp dir (every Ray process of it does)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and temp_dir.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def _start_head(log_path: Path, env: dict) -> tuple[subprocess.Popen, str, str] | None:
    """One attempt at `ray start --head --block`; None when it exits before taking jobs."""
    port, dashboard = _free_port(), _free_port()
    # Every listening port explicit: other Ray instances on this machine hold the defaults.
    agent_ports = [f"--{flag}={_free_port()}" for flag in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    # Its own short temp dir (unix socket paths are limited to ~107 bytes), away from other Rays.
    temp_dir = tempfile.mkdtemp(prefix="rayjob-", dir="/tmp")
    with log_path.open("a") as log:
        head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
             "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard}", "--disable-usage-stats", f"--temp-dir={temp_dir}", *agent_ports],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 180
    while time.time() < deadline:
        # Ready when the node's job agent takes a job; a job with a working dir submitted before
        # that is refused, and its uploaded package is not reliably reused on the retry.
        probe = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", address, "--", "true"],
                               env=env, capture_output=True, text=True)
        if probe.returncode == 0:
            return head, address, temp_dir
        if head.poll() is not None:
            return None
        time.sleep(2)
    os.killpg(head.pid, signal.SIGKILL)
    pytest.fail(f"the Ray head did not answer within 180 s: {probe.stderr[-1500:]}")


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head on loopback; stopping its `ray start --block` process stops that cluster only.
    Started up to three times: on a loaded machine the dashboard now and then dies at start-up."""
    # Ray 2.60 clusters require a token (~/.ray/auth_token); clients send it in "token" mode.
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    log_path = tmp_path / "head.log"
    for _ in range(3):
        started = _start_head(log_path, env)
        if started:
            break
    else:
        pytest.fail(f"ray start exited three times: {log_path.read_text()[-2000:]}")
    head, address, temp_dir = started
    yield address, env
    # The cluster is thrown away: SIGKILL its whole session at once (a graceful `ray start --block`
    # shutdown took 33 s here), then its temp dir; nothing of it may outlive the test.
    os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=60)
    deadline = time.time() + 30
    while _processes_under(temp_dir) and time.time() < deadline:
        time.sleep(0.5)
    assert not _processes_under(temp_dir), "processes of the job cluster outlived it"
    shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(address: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
         "--runtime-env", str(REPO / "jobs" / "runtime_env.yaml"), "--", "python", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_smoke_pipeline_runs_as_a_submitted_job(ray_head, tmp_path):
    address, env = ray_head
    workdir = tmp_path / "smoke"
    done = _submit(address, env, "jobs/pipeline.py", "--config", "jobs/configs/smoke.yaml",
                   "--set", f"workdir=file://{workdir}")
    assert done.returncode == 0 and "succeeded" in done.stdout, done.stdout[-4000:] + done.stderr[-2000:]
    for noise in ("Starting execution of Dataset", "Progress bars disabled", "Loading weights"):
        assert noise not in done.stdout, noise  # Ray Data's driver lines and transformers' bars stay off

    run = json.loads((workdir / "run.json").read_text())
    assert {name: s["status"] for name, s in run["stages"].items()} == {
        "bag": "done", "train": "done", "merge": "done", "eval": "done", "report": "done"}
    assert run["versions"]["ray"] and run["config"]["workdir"] == f"file://{workdir}"
    for bag in ("bag50", "bag100"):
        assert (workdir / "bags" / bag / "manifest.json").exists()
        export = json.loads((workdir / "models" / bag / "boom_train.json").read_text())
        assert export["steps"] == 3
    for merge in ("multislerp", "linear"):
        assert (workdir / "merges" / merge / "boom_merge.json").exists()
    report = (workdir / "report.md").read_text()
    for model in ("base", "bag50", "bag100", "multislerp", "linear"):
        assert f"| {model} |" in report
    assert (workdir / "report.png").stat().st_size > 1000

    # A second submission finds every output up to date and redoes nothing.
    again = _submit(address, env, "jobs/pipeline.py", "--config", "jobs/configs/smoke.yaml",
                    "--set", f"workdir=file://{workdir}")
    assert again.returncode == 0, again.stdout[-4000:]
    rerun = json.loads((workdir / "run.json").read_text())
    assert [rerun["stages"][s]["status"] for s in ("bag", "train", "merge")] == ["skipped"] * 3
    assert "evaluating" not in again.stdout  # every model's results came from the eval cache
