"""Staging leftovers: who owns a staging folder, whether its writer is gone, and what a crash left
under a work dir (`boom status` lists them; the next writer of a target and `boom run` remove the
stale ones). See storage.py for the staging scheme itself; this module sits below it (it needs
only runtime/filesystem.py), so storage.py can import it at the top."""

from __future__ import annotations

import json
import os
import posixpath
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from boom_ray.runtime.filesystem import read_json_or_none, remove, resolve

HEARTBEAT_S = 30.0
LEASE_S = 600.0
"""A staging folder whose writer runs on another host is stale after this long without a heartbeat."""
TEMP_FILE_GRACE_S = 120.0
"""A `write_json` temporary (written and renamed within milliseconds) is stale after this long."""
_HEX = r"[0-9a-f]{8}"
_STAGING_DIR = re.compile(rf"^\.tmp-(?P<target>.+)-{_HEX}$")
_OWNER_FILE = re.compile(rf"^(?P<dir>\.tmp-.+-{_HEX})\.owner$")
_TEMP_FILE = re.compile(rf"^(?P<target>.+)\.tmp-{_HEX}$")


def owner_record(final: str) -> dict[str, Any]:
    """What the owner file of a staging folder for `final` says about this process."""
    return {"host": socket.gethostname(), "machine": _machine(), "pid": os.getpid(),
            "pid_started": _process_start(os.getpid()), "target": posixpath.basename(final), "started": time.time()}


def _machine() -> str:
    """Where this process's pids mean something: the boot and the pid namespace (two containers
    may share a hostname, never a pid namespace)."""
    parts = []
    for path, read in (("/proc/sys/kernel/random/boot_id", lambda p: open(p).read().strip()),
                       ("/proc/self/ns/pid", os.readlink)):
        try:
            parts.append(read(path))
        except OSError:
            parts.append("?")
    return " ".join(parts)


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), to tell a reused pid from
    the original; None where /proc is not available."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


class Heartbeat:
    """Writes the owner file now and every HEARTBEAT_S seconds until stopped (a daemon thread)."""

    def __init__(self, fs: pafs.FileSystem, path: str, owner: dict[str, Any]):
        self.fs, self.path, self.owner = fs, path, owner
        self._stopped = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._run, name="boom-staging-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        data = json.dumps({**self.owner, "heartbeat": time.time()}).encode()
        with self.fs.open_output_stream(self.path) as f:  # one PUT on object stores
            f.write(data)

    def _run(self) -> None:
        while not self._stopped.wait(HEARTBEAT_S):
            try:
                self._beat()
            except OSError:  # a transient store error; the next beat retries
                pass

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def _writer_alive(owner: dict[str, Any]) -> bool | None:
    """Whether the owner's process still runs: True/False when it ran on this host, None else."""
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or owner.get("machine") != _machine() or not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    started = _process_start(pid)
    if owner.get("pid_started") and started and started != owner["pid_started"]:
        return False  # the pid was reused by another process
    return _process_state(pid) != "Z"  # a killed process not yet reaped is gone too


@dataclass(frozen=True)
class Leftover:
    """A staging folder or temporary file not (yet) renamed into place."""

    path: str
    target: str
    """The output it was written for (a sibling path)."""
    kind: str
    """"dir" (a staging folder) or "file" (a write_json temporary)."""
    bytes: int
    stale: bool
    """Its writer is gone: removable. False while a writer may still be working on it."""
    reason: str


def _mtime(info: pafs.FileInfo) -> float | None:
    return info.mtime_ns / 1e9 if info.mtime_ns is not None else None


def _judge_dir(fs: pafs.FileSystem, path: str, contents: list[pafs.FileInfo], owner_info: pafs.FileInfo | None,
               now: float) -> tuple[bool, str]:
    if owner_info is not None:
        owner = read_json_or_none(fs, owner_info.path)
        if isinstance(owner, dict):
            where = f"pid {owner.get('pid')} on {owner.get('host')}"
            alive = _writer_alive(owner)
            if alive is not None:
                return (not alive), f"writer {where} {'is running' if alive else 'is gone'}"
            beat = owner.get("heartbeat") if isinstance(owner.get("heartbeat"), (int, float)) else 0.0
        else:  # being rewritten right now, or cut short: its own time is the last sign of life
            where, beat = "unknown", _mtime(owner_info) or 0.0
        silent = now - beat
        return silent > LEASE_S, f"writer {where}: last heartbeat {silent:.0f}s ago"
    times = [t for t in map(_mtime, contents) if t is not None]
    if not times:
        return False, "no owner file and no modification time"
    quiet = now - max(times)
    return quiet > LEASE_S, f"no owner file; last change {quiet:.0f}s ago"


def _leftovers(fs: pafs.FileSystem, infos: list[pafs.FileInfo], only_target: str | None,
               contents_of=None) -> list[Leftover]:
    """Leftovers among `infos` (entries of one or more folders); `contents_of(path)` lists a staging
    folder's files when they are not among `infos` (a non-recursive listing)."""
    now = time.time()
    by_path = {i.path: i for i in infos}
    out = []
    staging_dirs = sorted(p for p, i in by_path.items() if i.type == pafs.FileType.Directory
                          and (m := _STAGING_DIR.match(posixpath.basename(p)))
                          and (only_target is None or m["target"] == only_target))
    inside = tuple(d + "/" for d in staging_dirs)
    for path in staging_dirs:
        if path.startswith(inside):
            continue  # nested inside another leftover: goes with it
        contents = contents_of(path) if contents_of else [i for p, i in by_path.items() if p.startswith(path + "/")]
        stale, reason = _judge_dir(fs, path, contents + [by_path[path]], by_path.get(path + ".owner"), now)
        size = sum(i.size or 0 for i in contents if i.type == pafs.FileType.File)
        out.append(Leftover(path, posixpath.join(posixpath.dirname(path),
                                                 _STAGING_DIR.match(posixpath.basename(path))["target"]),
                            "dir", size, stale, reason))
    for path, info in sorted(by_path.items()):
        if info.type != pafs.FileType.File or path.startswith(inside):
            continue
        name = posixpath.basename(path)
        if (m := _OWNER_FILE.match(name)) and posixpath.join(posixpath.dirname(path), m["dir"]) not in by_path:
            target = _STAGING_DIR.match(m["dir"])["target"]  # an owner file whose folder is gone
            if only_target is None or target == only_target:
                stale, reason = _judge_dir(fs, path, [], info, now)
                out.append(Leftover(path, posixpath.join(posixpath.dirname(path), target), "file",
                                    info.size or 0, stale, "owner file of a removed folder; " + reason))
        elif (m := _TEMP_FILE.match(name)) and (only_target is None or m["target"] == only_target):
            age = now - (_mtime(info) or now)
            out.append(Leftover(path, posixpath.join(posixpath.dirname(path), m["target"]), "file",
                                info.size or 0, age > TEMP_FILE_GRACE_S, f"temporary file, {age:.0f}s old"))
    return out


def _remove_leftover(fs: pafs.FileSystem, leftover: Leftover) -> None:
    remove(fs, leftover.path)
    if leftover.kind == "dir":
        remove(fs, leftover.path + ".owner")


def clean_stale_siblings(fs: pafs.FileSystem, final: str) -> list[Leftover]:
    """Remove the stale staging folders and temporary files of `final` beside it (left by writers
    that died); returns those removed. Live writers' folders are kept."""
    parent = posixpath.dirname(final)
    try:
        infos = fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
    except (OSError, NotImplementedError):
        return []

    def contents(path: str) -> list[pafs.FileInfo]:
        return fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))

    return _remove_stale(fs, _leftovers(fs, infos, posixpath.basename(final), contents))


def _remove_stale(fs: pafs.FileSystem, found: list[Leftover]) -> list[Leftover]:
    """Remove the stale ones among `found`; returns those removed."""
    removed = []
    for leftover in found:
        if leftover.stale:
            try:
                _remove_leftover(fs, leftover)
                removed.append(leftover)
            except OSError:  # another cleaner got there first, or the store refused: try next time
                pass
    return removed


def list_leftovers(uri: str) -> list[Leftover]:
    """Every staging folder and temporary file under the work dir `uri` (local path or URI),
    live or stale, with its size: what `boom status` shows."""
    fs, root = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return _leftovers(fs, infos, None)


def remove_stale_leftovers(uri: str) -> list[Leftover]:
    """Remove every stale leftover under the work dir `uri`; returns those removed."""
    return _remove_stale(resolve(uri)[0], list_leftovers(uri))
