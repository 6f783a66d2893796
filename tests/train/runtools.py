"""Running training in a background thread and killing a worker once a checkpoint exists."""

from __future__ import annotations

import glob
import json
import os
import signal
import threading
import time


def alive_train_workers() -> list[int]:
    """PIDs of live Ray Train worker actors (from the GCS; the test Ray has no dashboard)."""
    from ray._private import state

    return [a["Pid"] for a in state.actors().values()
            if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE" and a["Pid"]]


def in_thread(fn, *args, **kwargs):
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def result(thread, box, timeout=400):
    thread.join(timeout)
    assert not thread.is_alive(), "training did not finish in time"
    if "error" in box:
        raise box["error"]
    return box["value"]


def checkpoint_steps(workdir) -> list[int]:
    """Steps of the checkpoints Ray Train has registered under `<workdir>/train_runs/`."""
    steps = []
    for snap in glob.glob(os.path.join(str(workdir), "train_runs", "*", "checkpoint_manager_snapshot.json")):
        try:
            steps += [r["metrics"]["step"] for r in json.load(open(snap)).get("checkpoint_results") or []]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return steps


def train_and_kill_after_first_checkpoint(fn, workdir, *args, deadline_s=300, **kwargs):
    """Run `fn(*args)` (a train_bags call) in a thread and SIGKILL a training worker as soon as
    a checkpoint is on disk; returns (result, killed pid or None)."""
    thread, box = in_thread(fn, *args, **kwargs)
    killed = None
    deadline = time.time() + deadline_s
    while killed is None and thread.is_alive() and time.time() < deadline:
        if checkpoint_steps(workdir):
            workers = alive_train_workers()
            if workers:
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    return result(thread, box), killed
