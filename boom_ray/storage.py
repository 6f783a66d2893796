"""The work directory on any pyarrow filesystem (local path, file://, s3://, gs://).

Stages never leave a partial output where a finished one is expected: they write under a
temporary sibling name and rename it into place on success (`staged_dir`, `write_json`).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid
from typing import Any, Iterator

import pyarrow.fs as pafs


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a local path or a URI such as file:///x or s3://bucket/x."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def join(*parts: str) -> str:
    return posixpath.join(*parts)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def read_json_or_none(fs: pafs.FileSystem, path: str) -> Any:
    """The JSON at `path`, or None when it is missing or unreadable (an interrupted stage)."""
    try:
        return read_json(fs, path)
    except (FileNotFoundError, OSError, ValueError):
        return None


def write_json(fs: pafs.FileSystem, path: str, obj: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the whole new one, never half."""
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())
    fs.move(tmp, path)


def remove(fs: pafs.FileSystem, path: str) -> None:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def move_dir(fs: pafs.FileSystem, src: str, dst: str) -> None:
    """Rename a directory; object stores without directory renames get a file-by-file move."""
    try:
        fs.move(src, dst)
        return
    except (OSError, NotImplementedError):
        if isinstance(fs, pafs.LocalFileSystem):
            raise
    for info in fs.get_file_info(pafs.FileSelector(src, recursive=True)):
        if info.type == pafs.FileType.File:
            target = join(dst, posixpath.relpath(info.path, src))
            fs.create_dir(posixpath.dirname(target), recursive=True)
            fs.move(info.path, target)
    fs.delete_dir(src)


def temp_name(final: str) -> str:
    return join(posixpath.dirname(final), f".tmp-{posixpath.basename(final)}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def staged_dir(fs: pafs.FileSystem, final: str, *, replace: bool = True) -> Iterator[str]:
    """Yield a temporary directory next to `final`; on success it replaces `final`, on error it is
    deleted, so `final` only ever holds a finished output."""
    tmp = temp_name(final)
    fs.create_dir(tmp, recursive=True)
    try:
        yield tmp
    except BaseException:
        remove(fs, tmp)
        raise
    if exists(fs, final):
        if not replace:
            remove(fs, tmp)
            raise FileExistsError(final)
        remove(fs, final)
    move_dir(fs, tmp, final)
