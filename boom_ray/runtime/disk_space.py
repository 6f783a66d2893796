"""Free space on the disk an output goes to: checked before writing when the output's size is known,
and a disk that fills anyway (someone else wrote meanwhile) reported the same way.

Why: a full disk otherwise surfaces as a long traceback ending in `OSError: [Errno 28]`, found only
after most of the output was written, and naming neither the output nor the space it needed. Here
it is one line (a BoomError: the CLI prints it and exits 2) with the path, the bytes needed and the
bytes free. Only local disks are checked: an object store (s3://, gs://) has no "free space".
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
from typing import Iterable, Iterator

import pyarrow.fs as pafs

from boom_ray.errors import BoomError
from boom_ray.runtime.filesystem import resolve

BLOCK = 4096
"""Allocation unit assumed per file (ext4, xfs and tmpfs use 4 KiB): a file takes whole blocks."""


class DiskFullError(BoomError):
    """Not enough free space for an output; the message names its path, the bytes needed and free.
    Not an OSError on purpose: callers that fall back on an unreadable store must not swallow it."""


def allocated(sizes: Iterable[int]) -> int:
    """Bytes that files of these sizes take on disk, each rounded up to whole blocks."""
    return sum(-(-max(0, s) // BLOCK) * BLOCK for s in sizes)


def free_bytes(path: str) -> int | None:
    """Free bytes for an unprivileged writer on the local disk that would hold `path` (measured at
    its nearest existing parent); None for an object store or a path that cannot be measured."""
    if "://" in path and not path.startswith("file://"):
        return None  # an object store: nothing to measure, and no network call to find that out
    local = resolve(path)[1]
    probe = local
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def tree_bytes(fs: pafs.FileSystem, path: str) -> int:
    """Bytes of the files under `path` (0 when it is gone): what a stage wrote before it failed."""
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)


@dataclasses.dataclass
class Needed:
    """The bytes an output needs, for the message: exact (`bytes`), or when its size is not known
    up front, at least what was written before the disk filled (`at_least`)."""

    bytes: int | None = None
    at_least: bool = False

    def record(self, exc: BaseException | None, fs: pafs.FileSystem, paths: list[str]) -> None:
        """On a full disk, the bytes under `paths` as the lower bound; call it before they go."""
        if exc is not None and self.bytes is None and is_disk_full(exc):
            self.bytes, self.at_least = sum(tree_bytes(fs, p) for p in paths), True


def message(path: str, what: str, needed: int | None, free: int | None, at_least: bool = False) -> str:
    if needed is None:
        need = "needs more space"
    else:
        need = f"needs {'more than ' if at_least else ''}{needed} bytes ({_human(needed)})"
    have = f"{free} bytes ({_human(free)}) are free" if free is not None else "the free space is unknown"
    return f"{path}: not enough disk space for {what}: it {need}, {have}"


def check_free_space(path: str, needed_bytes: int, what: str) -> None:
    """Raise DiskFullError when the local disk that would hold `path` has fewer than `needed_bytes`
    free; nothing for object stores."""
    free = free_bytes(path)
    if free is not None and needed_bytes > free:
        raise DiskFullError(message(path, what, needed_bytes, free))


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error it wraps (a Ray task's cause among them), is ENOSPC / EDQUOT."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "[Errno 28]" in str(exc) or "No space left on device" in str(exc):  # Ray re-raises causes as text
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def disk_full_as_error(path: str, what: str, needed_bytes: int | None = None) -> Iterator[Needed]:
    """Turn ENOSPC raised in the block into DiskFullError (free space measured after the block's
    own cleanup ran). Put it outside the staging context so the partial output is gone first.
    The block may fill in the yielded `Needed` when the size was not known before it began."""
    needed = Needed(needed_bytes)
    try:
        yield needed
    except DiskFullError:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(message(path, what, needed.bytes, free_bytes(path), needed.at_least)) from None
