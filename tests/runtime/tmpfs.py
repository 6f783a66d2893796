"""A real small filesystem for the full-disk tests: a tmpfs mounted under the test's tmp_path.

Why a real one: ENOSPC comes from the kernel at the moment a write no longer fits, which no mock
reproduces (sparse files, page-sized blocks, deletions that free space at once)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """`path` as a tmpfs of `size` bytes while the block runs; skips the test if mount is refused
    (not root, or no mount in this container)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs for the full-disk test: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk test (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """small_disk(size) -> a fresh tmpfs of `size` bytes (rounded up to pages), unmounted after."""
    with contextlib.ExitStack() as stack:
        def mount(size: int) -> Path:
            return stack.enter_context(tmpfs(tmp_path / f"disk{len(os.listdir(tmp_path))}", size))
        yield mount


def fill(disk: Path, leave: int) -> None:
    """Write a filler file so that about `leave` bytes stay free on `disk`."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))
