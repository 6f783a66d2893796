"""The work directory on any pyarrow filesystem (local path, file://, s3://, gs://): paths,
the identities of what stages read and write, and atomic outputs.

Identities: `stable_hash` of a JSON-able request, `file_sha256` of a small file,
`sampled_digest` of a big file (its head plus evenly spread pieces: a corpus or a checkpoint
copied to another node keeps its identity, an edited one changes it, at a few reads per file) and
`tree_digest` of a folder. Every "is this output still up to date" check is built from these.

Atomic outputs: stages never leave a partial output where a finished one is expected; they write
under a temporary sibling name and rename it into place on success (`staged_dir`, `write_bytes`,
`write_json`).

Nothing is left behind by a crash either. A staging folder `.tmp-<name>-<hex>` has an owner
file beside it (`.tmp-<name>-<hex>.owner`: host, pid, heartbeat every HEARTBEAT_S seconds), and
whoever stages the same target later removes the siblings whose writer is gone: a process of
this host that no longer runs, or one elsewhere silent for LEASE_S; a folder without an owner
file (older versions) goes once nothing in it changed for LEASE_S, a `write_json` temporary once
older than TEMP_FILE_GRACE_S (boom_ray/runtime/leftovers.py, which also lists what is left under a work dir).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import tempfile
import uuid
from typing import Any, Iterator

import pyarrow.fs as pafs

# the filesystem basics live one level down (leftovers.py needs them too); re-exported here, so
# `storage.resolve`, `storage.StorageError`, ... keep working for every caller
from boom_ray.runtime.filesystem import (StorageError, exists, is_dir, join, read_json, read_json_or_none,  # noqa: F401
                                         remove, resolve)
from boom_ray.runtime.leftovers import Heartbeat, clean_stale_siblings, owner_record


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write a file atomically: a reader sees the old file or the whole new one, never half."""
    fs.create_dir(posixpath.dirname(path), recursive=True)
    clean_stale_siblings(fs, path)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, path)
    except BaseException:
        remove(fs, tmp)
        raise


def write_json(fs: pafs.FileSystem, path: str, obj: Any) -> None:
    """Write JSON atomically (see `write_bytes`)."""
    write_bytes(fs, path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


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
    with staging(fs, final) as tmp:
        yield tmp
        if exists(fs, final):
            if not replace:
                raise FileExistsError(final)
            remove(fs, final)
        move_dir(fs, tmp, final)


@contextlib.contextmanager
def staging(fs: pafs.FileSystem, final: str) -> Iterator[str]:
    """A new staging folder for `final` (`temp_name`), owned by this process while the block runs:
    stale staging leftovers of `final` are removed first, the owner file is kept fresh, and the
    folder (unless moved into place) and its owner file are deleted when the block ends."""
    fs.create_dir(posixpath.dirname(final), recursive=True)
    clean_stale_siblings(fs, final)
    tmp = temp_name(final)
    heartbeat = Heartbeat(fs, tmp + ".owner", owner_record(final))  # owner file first: the folder is never unowned
    try:
        fs.create_dir(tmp, recursive=True)
        yield tmp
    finally:
        heartbeat.stop()
        remove(fs, tmp)
        remove(fs, tmp + ".owner")


def _listing(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


def stable_hash(obj: Any, length: int | None = None) -> str:
    """sha256 of `obj` as sorted JSON (anything non-JSON as its str): the same request on any
    machine, in any key order, hashes the same."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:length] if length else digest


def file_sha256(path: str) -> str:
    """sha256 of a whole (local or URI) file, read in 1 MiB pieces."""
    fs, p = resolve(path)
    digest = hashlib.sha256()
    with fs.open_input_stream(p) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sampled_digest(fs: pafs.FileSystem, path: str, *, head: int = 0, pieces: int = 16,
                   piece: int = 64 << 10) -> str:
    """Digest of a file's first `head` bytes plus `pieces` evenly spread pieces of `piece` bytes
    (the whole file when it is that small): content rather than modification times, at a few
    reads per file where hashing every byte of a multi-GB file would cost a pass of its own."""
    digest = hashlib.blake2b(digest_size=16)
    with fs.open_input_file(path) as f:
        size = f.size()
        if head:
            digest.update(f.read_at(min(head, size), 0))
        if size - head <= piece * pieces:
            digest.update(f.read_at(size - head, head) if size > head else b"")
        else:
            for i in range(pieces):
                digest.update(f.read_at(piece, head + (size - head - piece) * i // (pieces - 1)))
    return digest.hexdigest()


def tree_digest(uri: str, content: bool = False) -> str:
    """Identity of a folder on any filesystem: relative names and sizes, plus modification times
    (cheap; for our own outputs) or the bytes themselves (`content=True`; for small inputs such
    as eval suites, which a job upload unpacks with new modification times)."""
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
