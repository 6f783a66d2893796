"""The smoke pipeline with its work dir on a real S3 endpoint (moto's server on loopback).

`boom run` runs as a user runs it, a subprocess with AWS_ENDPOINT_URL and credentials in its
environment and a Ray of its own (so every Ray worker inherits that environment, as on a cluster
whose nodes carry the credentials). Its training workers are SIGKILLed once each bag has a
checkpoint on S3, so both bags resume from S3; a second run finds every stage up to date.
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "wordnet-sample" / "suites" / "test"
pytestmark = [pytest.mark.slow, pytest.mark.heavy]


def _tiny_suites(dst: Path) -> list[dict]:
    """A 12-query slice of the sample's retrieval suite and 30 pairs of its STS suite, so the
    five models' evaluation takes seconds."""
    src = SAMPLE / "definition_retrieval"
    queries = [json.loads(line) for line in (src / "queries.jsonl").read_text().splitlines()[:12]]
    wanted = {q["_id"] for q in queries}
    qrels = [line for line in (src / "qrels" / "test.tsv").read_text().splitlines()[1:] if line.split("\t")[0] in wanted]
    needed = {line.split("\t")[1] for line in qrels}
    docs = [json.loads(line) for line in (src / "corpus.jsonl").read_text().splitlines()]
    docs = [d for d in docs if d["_id"] in needed] + [d for d in docs if d["_id"] not in needed][:30]
    retrieval = dst / "definition_retrieval"
    (retrieval / "qrels").mkdir(parents=True)
    (retrieval / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (retrieval / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (retrieval / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    (retrieval / "suite.json").write_text((src / "suite.json").read_text())
    sts = dst / "verb_definition_sts"
    sts.mkdir()
    lines = (SAMPLE / "verb_definition_sts" / "test.jsonl").read_text().splitlines()[:30]
    (sts / "test.jsonl").write_text("\n".join(lines) + "\n")
    (sts / "suite.json").write_text((SAMPLE / "verb_definition_sts" / "suite.json").read_text())
    return [{"path": str(retrieval)}, {"path": str(sts)}]


def _files(fs: pafs.FileSystem, path: str) -> list[str]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError:
        return []
    return sorted(posixpath.relpath(i.path, path) for i in infos if i.type == pafs.FileType.File)


def _checkpointed_runs(fs: pafs.FileSystem, train_runs: str) -> set[str]:
    """Ray Train runs under `train_runs` whose snapshot on S3 names a saved checkpoint."""
    done = set()
    for info in fs.get_file_info(pafs.FileSelector(train_runs, allow_not_found=True)):
        try:
            with fs.open_input_stream(posixpath.join(info.path, "checkpoint_manager_snapshot.json")) as f:
                snapshot = json.loads(f.read())
        except (OSError, ValueError):
            continue
        if snapshot.get("latest_checkpoint_result") is not None:
            done.add(posixpath.basename(info.path))
    return done


def _train_workers(pid: int) -> list:
    import psutil

    workers = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.Error:
            pass
    return workers


def test_smoke_pipeline_on_s3_resumes_killed_training_and_reruns_as_no_op(s3_server, s3_bucket, tiny_qwen3_path,
                                                                         tmp_path):
    """smoke.yaml with the tiny Qwen3 for MiniLM (S3 traffic, not model size, is under test: a
    MiniLM checkpoint is ~270 MB through a Python S3 server) and trimmed eval suites."""
    root, fs = s3_bucket
    workdir = f"{root}/run"
    run_path = workdir.removeprefix("s3://")
    # Ray's memory monitor counts the whole machine: on a shared CI box other jobs' memory made it
    # kill the restarted workers too. The failures under test are the SIGKILLs below.
    env = {**os.environ, **s3_server["env"], "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_memory_monitor_refresh_ms": "0"}
    env.pop("RAY_ADDRESS", None)
    retrieval, sts = _tiny_suites(tmp_path / "suites")
    pafs.copy_files(sts["path"], f"{root.removeprefix('s3://')}/suites/sts", destination_filesystem=fs)
    suites = [retrieval, {"path": f"{root}/suites/sts"}]  # one local, one on S3
    cmd = [sys.executable, "-m", "boom_ray.cli", "run", "--config", "jobs/configs/smoke.yaml",
           "--set", f"workdir={workdir}", "--set", "train.max_steps=6", "--set", "train.checkpoint_every=2",
           "--set", "train.max_failures=2",
           "--set", f"model.name_or_path={tiny_qwen3_path}", "--set", "model.pooling=last",
           "--set", f"eval.suites={json.dumps(suites)}"]
    log = tmp_path / "run1.log"
    t0 = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    killed, checkpoint_files = [], set()
    try:
        while proc.poll() is None and time.time() - t0 < 900:  # minutes more on a loaded machine
            train_runs = f"{run_path}/train_runs"
            checkpoint_files |= {f for f in _files(fs, train_runs) if "/checkpoint_" in f}
            if not killed and len(_checkpointed_runs(fs, train_runs)) == 2:
                for worker in _train_workers(proc.pid):
                    worker.kill()  # SIGKILL, as a lost node would
                    killed.append(worker.pid)
            time.sleep(0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert proc.wait() == 0, output[-5000:]
    first_run_s = time.time() - t0
    assert len(killed) == 2, f"expected one training worker per bag to kill, got {killed}\n{output[-3000:]}"
    assert any(f.endswith(".pt") or "model_states" in f for f in checkpoint_files), checkpoint_files

    files = set(_files(fs, run_path))
    run = json.loads(fs.open_input_stream(f"{run_path}/run.json").read())
    assert {s: r["status"] for s, r in run["stages"].items()} == {
        "bag": "done", "train": "done", "merge": "done", "eval": "done", "report": "done"}
    for bag in ("bag50", "bag100"):
        assert f"bags/{bag}/manifest.json" in files
        manifest = json.loads(fs.open_input_stream(f"{run_path}/models/{bag}/boom_train.json").read())
        assert manifest["steps"] == 6 and manifest["restarts"] >= 1, manifest
        # every restart resumed from a checkpoint on S3, not from scratch
        assert len(manifest["resumed_from"]) == manifest["restarts"], manifest
        assert all(step in (2, 4) for step in manifest["resumed_from"]), manifest
        assert {f"models/{bag}/model.safetensors", f"models/{bag}/config.json"} <= files
    for merge in ("multislerp", "linear"):
        assert f"merges/{merge}/boom_merge.json" in files
    for key in ("base", "bag50", "bag100", "merge-multislerp", "merge-linear"):
        assert f"eval/{key}.json" in files
        results = json.loads(fs.open_input_stream(f"{run_path}/eval/{key}.json").read())["results"]
        assert [x["name"] for x in results["suites"]] == ["definition_retrieval", "sts"]
    assert {"report.md", "report.png", "quarantine/summary.json"} <= files
    assert not any(f.startswith("train_runs/") for f in files), "checkpoints are removed once exported"
    assert not any(".tmp-" in f for f in files), sorted(f for f in files if ".tmp-" in f)
    assert not (REPO / "s3:").exists() and not list(REPO.glob("boom-*"))  # nothing went to a local path
    from boom_ray.runtime import leftovers, storage

    assert leftovers.list_leftovers(workdir) == []

    # What a crashed writer on another node would leave: the rerun skips the bag stage, yet removes it.
    dead = f"{run_path}/bags/.tmp-bag50-0000dead"
    with fs.open_output_stream(f"{dead}/words.parquet") as f:
        f.write(b"p" * 100)
    with fs.open_output_stream(f"{dead}.owner") as f:
        f.write(json.dumps({"host": "lost-node", "pid": 7, "heartbeat": time.time() - 3600}).encode())

    t1 = time.time()
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    assert f"removed {dead}: stale staging dir, 100 bytes" in again.stdout
    assert leftovers.list_leftovers(workdir) == []
    rerun = json.loads(fs.open_input_stream(f"{run_path}/run.json").read())
    assert [rerun["stages"][s]["status"] for s in ("bag", "train", "merge")] == ["skipped"] * 3
    assert "evaluating" not in again.stdout  # every model's results came from the eval cache on S3
    assert set(_files(fs, run_path)) - {"run.json"} <= files
    seconds = {s: (run["stages"][s]["seconds"], rerun["stages"][s]["seconds"]) for s in run["stages"]}
    print(f"first run {first_run_s:.0f}s, rerun {time.time() - t1:.0f}s; stage seconds {seconds}")
