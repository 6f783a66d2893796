"""Nothing left behind: staging folders and temporary files of dead writers are removed by the
next writer of the same target (local and on a real S3 endpoint), live writers' are kept, and
`list_leftovers` reports what remains under a work dir."""

from __future__ import annotations

import json
import os
import posixpath
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from boom_ray.runtime import leftovers, storage

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from boom_ray.runtime import storage
fs, final = storage.resolve(sys.argv[1])
with storage.staged_dir(fs, final) as tmp:
    with fs.open_output_stream(tmp + "/part.bin") as f:
        f.write(b"x" * 1000)
    print(tmp, flush=True)
    time.sleep(600)
"""


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    """A work dir on the local filesystem or in a fresh bucket of the loopback S3 server."""
    if request.param == "local":
        return str(tmp_path / "work")
    uri, _ = request.getfixturevalue("s3_bucket")
    return f"{uri}/work"


def _names(fs: pafs.FileSystem, path: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(posixpath.basename(i.path) for i in infos)


def _holder(final: str) -> tuple[subprocess.Popen, str]:
    """A process writing into a staging folder of `final`; returns it and the folder."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, final], env=env, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_a_live_writers_folder_is_kept_and_a_dead_ones_removed_by_the_next_writer(root):
    fs, path = storage.resolve(root)
    final = posixpath.join(path, "merges", "m")
    proc, tmp = _holder(f"{root}/merges/m")
    try:
        assert tmp and storage.is_dir(fs, tmp)
        assert leftovers.clean_stale_siblings(fs, final) == []  # its writer is running: kept
        [live] = leftovers.list_leftovers(root)
        assert (live.path, live.kind, live.stale, live.bytes) == (tmp, "dir", False, 1000)
        assert "is running" in live.reason and live.target == final
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    [dead] = leftovers.list_leftovers(root)
    assert dead.stale and "is gone" in dead.reason
    with storage.staged_dir(fs, final) as fresh:  # the next writer of the same target
        with fs.open_output_stream(fresh + "/done.txt") as f:
            f.write(b"ok")
    assert _names(fs, posixpath.join(path, "merges")) == ["m"]  # folder and owner file gone
    assert _names(fs, final) == ["done.txt"] and leftovers.list_leftovers(root) == []


def test_writers_on_other_hosts_are_judged_by_their_heartbeat(root):
    fs, path = storage.resolve(root)
    final = posixpath.join(path, "models", "bag20")
    now = time.time()
    # another node, fresh; another node, silent too long; this hostname in another container
    # (another pid namespace: its pid 4194000 says nothing here), fresh
    owners = {"0000aaaa": {"host": "another-node", "pid": 1, "heartbeat": now - 5},
              "0000bbbb": {"host": "another-node", "pid": 1, "heartbeat": now - leftovers.LEASE_S - 60},
              "0000cccc": {"host": socket.gethostname(), "machine": "other pid:[1]", "pid": 4194000,
                           "heartbeat": now - 5}}
    for hexid, owner in owners.items():
        folder = posixpath.join(path, "models", f".tmp-bag20-{hexid}")
        fs.create_dir(folder, recursive=True)
        with fs.open_output_stream(folder + "/model.safetensors") as f:
            f.write(b"w" * 10)
        with fs.open_output_stream(folder + ".owner") as f:
            f.write(json.dumps(owner).encode())
    report = {os.path.basename(x.path): x.stale for x in leftovers.list_leftovers(root)}
    assert report == {".tmp-bag20-0000aaaa": False, ".tmp-bag20-0000bbbb": True, ".tmp-bag20-0000cccc": False}
    removed = leftovers.clean_stale_siblings(fs, final)
    assert [os.path.basename(x.path) for x in removed] == [".tmp-bag20-0000bbbb"]
    assert _names(fs, posixpath.join(path, "models")) == [
        ".tmp-bag20-0000aaaa", ".tmp-bag20-0000aaaa.owner", ".tmp-bag20-0000cccc", ".tmp-bag20-0000cccc.owner"]
    # other targets' folders are not this writer's business
    assert leftovers.clean_stale_siblings(fs, posixpath.join(path, "models", "bag40")) == []


def test_a_reused_pid_does_not_keep_a_dead_writers_folder(tmp_path):
    fs, path = storage.resolve(str(tmp_path))
    folder = posixpath.join(path, ".tmp-out-00c0ffee")
    fs.create_dir(folder)
    owner = {"host": socket.gethostname(), "machine": leftovers._machine(), "pid": os.getpid(), "pid_started": "1",
             "heartbeat": time.time()}
    (tmp_path / ".tmp-out-00c0ffee.owner").write_text(json.dumps(owner))
    [leftover] = leftovers.list_leftovers(str(tmp_path))
    assert leftover.stale, leftover.reason  # this process has our pid but started at another time


def test_folders_without_owner_and_old_temp_files_go_by_age(tmp_path):
    fs, path = storage.resolve(str(tmp_path))
    old = time.time() - leftovers.LEASE_S - 60
    legacy, fresh = tmp_path / ".tmp-out-0000dead", tmp_path / ".tmp-out-0000beef"
    for folder in (legacy, fresh):
        folder.mkdir()
        (folder / "shard.safetensors").write_bytes(b"s" * 5)
    for p in (legacy / "shard.safetensors", legacy):
        os.utime(p, (old, old))
    stale_json, young_json = tmp_path / "run.json.tmp-0000abcd", tmp_path / "run.json.tmp-0000abce"
    stale_json.write_text("{")
    young_json.write_text("{")
    os.utime(stale_json, (old, old))
    (tmp_path / "model.tmp-notahex").write_text("x")  # not ours
    got = {os.path.basename(x.path): (x.kind, x.stale) for x in leftovers.list_leftovers(str(tmp_path))}
    assert got == {".tmp-out-0000dead": ("dir", True), ".tmp-out-0000beef": ("dir", False),
                   "run.json.tmp-0000abcd": ("file", True), "run.json.tmp-0000abce": ("file", False)}
    storage.write_json(fs, posixpath.join(path, "run.json"), {"ok": True})  # the next write cleans its own
    assert not stale_json.exists() and young_json.exists()
    removed = leftovers.remove_stale_leftovers(str(tmp_path))
    assert [os.path.basename(x.path) for x in removed] == [".tmp-out-0000dead"]
    assert fresh.exists() and (tmp_path / "model.tmp-notahex").exists()


def _tiny_models(root: Path, n_tensors: int = 6, size: int = 1_000_000) -> list[Path]:
    from safetensors.numpy import save_file

    paths = []
    for i in range(3):
        rng = np.random.default_rng(i)
        path = root / f"m{i}"
        path.mkdir(parents=True)
        save_file({f"layer.{k}.weight": rng.standard_normal(size, dtype=np.float32) for k in range(n_tensors)},
                  str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps({"model_type": "toy", "seed": i}))
        paths.append(path)
    return paths


def _multislerp(tensors: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """DESIGN.md's closed form of multislerp (no base), in float64."""
    x = [t.astype(np.float64).ravel() for t in tensors]
    w = np.asarray(weights, dtype=np.float64) / sum(weights)
    norms = np.array([np.linalg.norm(v) for v in x])
    c = w / (norms + 1e-8)
    gram = np.array([[a @ b for b in x] for a in x])
    return sum(ci * xi for ci, xi in zip(c, x)) / np.sqrt(c @ gram @ c) * (w @ norms)


def test_sigkilled_boom_merge_leaves_nothing_after_the_rerun(tmp_path):
    """A real `boom merge` (mergekit form, in its own process) slowed by a small memory budget is
    SIGKILLed while it writes its shards; the rerun removes the dead staging folder and writes the
    whole merge."""
    from safetensors.numpy import load_file

    models = _tiny_models(tmp_path / "in")
    weights = [1.0, 2.0, 3.0]
    config = tmp_path / "merge.yaml"
    config.write_text(json.dumps({"merge_method": "multislerp", "dtype": "float32", "models": [
        {"model": str(m), "parameters": {"weight": w}} for m, w in zip(models, weights)]}))
    out = tmp_path / "out" / "merged"
    cmd = [sys.executable, "-m", "boom_ray.cli", "merge", str(config), "--out", str(out),
           "--set", "memory_budget=16KB", "--set", "max_shard_size=6MB", "--set", "threads=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = tmp_path / "merge.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    staging = None
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        shards = list((tmp_path / "out").glob(".tmp-merged-*/*.safetensors"))
        if shards and any(s.stat().st_size > 0 for s in shards):
            staging = shards[0].parent
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert staging is not None, f"the merge ended before it was killed: {log.read_text()[-2000:]}"
    assert staging.exists() and not out.exists()  # what a crash leaves
    [leftover] = leftovers.list_leftovers(str(tmp_path / "out"))
    assert leftover.stale and leftover.bytes > 0

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["merged"]  # no staging folder left
    manifest = json.loads((out / "boom_merge.json").read_text())
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards == sorted(p.name for p in out.glob("*.safetensors"))
    merged = {}
    for shard in shards:
        merged.update(load_file(str(out / shard)))
    inputs = [load_file(str(m / "model.safetensors")) for m in models]
    assert sorted(merged) == sorted(inputs[0]) and manifest["method"] == "multislerp"
    for name, tensor in merged.items():
        expected = _multislerp([m[name] for m in inputs], weights)
        np.testing.assert_allclose(tensor.astype(np.float64), expected, rtol=2e-5, atol=2e-6)
