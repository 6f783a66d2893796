"""The free-space helper: measured at the nearest existing parent, nothing for object stores,
ENOSPC found through wrappers, and a too-small disk refused in one line."""

from __future__ import annotations

import errno
import os

import pytest

from boom_ray.errors import BoomError
from boom_ray.runtime import disk_space
from boom_ray.runtime.disk_space import DiskFullError, check_free_space, disk_full_as_error
from tests.runtime.tmpfs import fill, small_disk  # noqa: F401 (a fixture)


def test_free_bytes_of_a_path_not_yet_created_is_its_disks(tmp_path):
    assert disk_space.free_bytes(str(tmp_path / "a" / "b" / "c")) == disk_space.free_bytes(str(tmp_path))
    assert disk_space.free_bytes((tmp_path / "x").as_uri()) == disk_space.free_bytes(str(tmp_path))
    assert disk_space.free_bytes("s3://bucket/run/merges/m") is None
    check_free_space("s3://bucket/run/merges/m", 1 << 60, "the merge output")  # no check, no network


def test_allocated_rounds_every_file_up_to_whole_blocks():
    assert disk_space.allocated([0, 1, 4096, 4097]) == 0 + 4096 + 4096 + 8192


def test_a_too_small_disk_is_refused_in_one_line(small_disk):
    disk = small_disk(1 << 20)
    with pytest.raises(DiskFullError) as info:
        check_free_space(str(disk / "out"), 2 << 20, "the merge output")
    assert isinstance(info.value, BoomError) and not isinstance(info.value, OSError)
    assert str(info.value).startswith(f"{disk / 'out'}: not enough disk space for the merge output: it needs "
                                      f"{2 << 20} bytes (2.0 MiB), ")
    assert str(info.value).endswith("bytes (1.0 MiB) are free") and "\n" not in str(info.value)
    check_free_space(str(disk / "out"), 1 << 19, "the merge output")


def test_enospc_while_writing_becomes_the_same_error(small_disk):
    disk = small_disk(1 << 20)
    fill(disk, 0)
    with pytest.raises(DiskFullError, match=r": it needs 12345 bytes .*, \d+ bytes \(.*\) are free$"):
        with disk_full_as_error(str(disk / "out"), "the merge output", 12345):
            (disk / "out").write_bytes(b"x" * 100_000)
    wrapped = RuntimeError("task failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert disk_space.is_disk_full(wrapped) and not disk_space.is_disk_full(OSError(errno.EACCES, "denied"))
    with pytest.raises(PermissionError):  # any other error passes through unchanged
        with disk_full_as_error(str(disk), "x"):
            raise PermissionError(errno.EACCES, "denied")
