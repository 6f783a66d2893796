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


def _listing(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


def tree_digest(uri: str, content: bool = False) -> str:
    """Identity of a folder on any filesystem: relative names and sizes, plus modification times
    (cheap; for our own outputs) or the bytes themselves (`content=True`; for small inputs such
    as eval suites, which a job upload unpacks with new modification times)."""
    import hashlib

    fs, root = resolve(uri)
    digest = hashlib.sha256()
    for info in _listing(fs, root):
        rel = posixpath.relpath(info.path, root)
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        digest.update(f"{rel}\0{info.size}\0".encode())
        if content:
            with fs.open_input_stream(info.path) as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        else:
            digest.update(f"{info.mtime_ns}\n".encode())
    return digest.hexdigest()


def local_dir(uri: str) -> str:
    """A local folder holding `uri`'s files: the folder itself on a local filesystem, else a copy
    in a per-machine cache keyed by the remote listing (so a changed model is fetched again)."""
    import tempfile

    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        return path
    if not is_dir(fs, path):
        raise FileNotFoundError(f"{uri}: no such directory")
    cache = os.path.join(tempfile.gettempdir(), "boom-ray-cache", tree_digest(uri)[:24])
    if not os.path.isdir(cache):
        local = pafs.LocalFileSystem()
        try:
            with staged_dir(local, cache, replace=False) as tmp:
                pafs.copy_files(path, tmp, source_filesystem=fs, destination_filesystem=local)
        except OSError:  # FileExistsError among them: another process here finished the same copy first
            if not os.path.isdir(cache):
                raise
    return cache
