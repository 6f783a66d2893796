"""Paths and small reads on any pyarrow filesystem (local path, file://, s3://, gs://).

The bottom of runtime/: storage.py (atomic outputs, identities) and leftovers.py (what a crash
left behind) both build on these, so neither has to import the other's helpers; storage.py
re-exports every name here, and callers keep writing `storage.resolve`, `storage.exists`, ...
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any

import pyarrow.fs as pafs

from boom_ray.errors import BoomError


class StorageError(BoomError, OSError):
    """A store that cannot be reached, or a URI no filesystem takes; the message names the URI.
    An OSError too, so callers that fall back on an unreadable store keep doing so."""


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a local path or a URI such as file:///x or s3://bucket/x."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except (OSError, ValueError) as exc:  # no network or credentials; pyarrow.ArrowInvalid: a bad URI
            raise StorageError(f"{uri}: cannot open its filesystem: {exc}") from exc
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


def remove(fs: pafs.FileSystem, path: str) -> None:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)
