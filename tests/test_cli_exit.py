"""The `boom` executable ends without Python's teardown (`cli.entry`): what a command prints,
its exit code and the exit handlers must all survive that."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from boom_ray.cli import main

REPO = Path(__file__).resolve().parents[1]
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}, "PYTHONPATH": str(REPO)}
"""Buffered streams, as a user's shell gives them: what is not flushed before the exit is lost."""


@pytest.fixture
def plan(tmp_path) -> list[str]:
    """`boom plan` of the demo config on a local work dir and corpus: a command that prints a page."""
    cfg = yaml.safe_load((REPO / "jobs" / "configs" / "demo.yaml").read_text())
    cfg["workdir"] = str(tmp_path / "work")
    cfg["corpus"]["path"] = str(REPO / "data" / "wordnet-sample" / "corpus")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    return ["plan", "--config", str(tmp_path / "run.yaml")]


def _boom(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "boom_ray.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV, cwd=REPO)


def test_piped_output_and_exit_code_survive_the_fast_exit(capsys, plan):
    assert main(plan) == 0
    expected = capsys.readouterr().out
    proc = _boom(*plan)  # stdout is a pipe: block-buffered until flushed
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == expected and len(expected) > 500


def test_errors_keep_their_code_and_message():
    proc = _boom("merge", "no-such.yaml", "--out", "unused")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "boom merge: error: no-such.yaml: mergekit config not found"


def test_exit_handlers_run_before_the_process_ends(plan):
    code = ("import atexit, sys\nfrom boom_ray.cli import entry\n"
            "atexit.register(print, 'exit handler ran')\n"
            f"sys.argv = ['boom', *{plan!r}]\nentry()\n")
    proc = _boom(code=code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith("exit handler ran")


def test_a_live_worker_thread_gets_a_normal_exit(plan):
    code = ("import sys, threading, time\nfrom boom_ray.cli import entry\n"
            "def late():  # finishes only once the interpreter is shutting down\n"
            "    while threading.main_thread().is_alive():\n        time.sleep(0.01)\n"
            "    print('worker finished', flush=True)\n"
            "threading.Thread(target=late).start()\n"
            f"sys.argv = ['boom', *{plan!r}]\nentry()\n")
    proc = _boom(code=code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith("worker finished")
