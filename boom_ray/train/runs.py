"""Which Ray Train run folder a bag trains in, and what an interrupted run with another layout
leaves for it.

Why the layout is part of a run's identity: DeepSpeed's ZeRO checkpoints are partitioned for
one world size and one ZeRO stage. Before, ``train_runs/<bag>-<request hash>`` left both out, so
re-running an interrupted bag with another ``train.num_workers`` restored shards partitioned for
another world size and failed on every retry. Now the folder name hashes the request *and* the
layout (world size, effective ZeRO stage), and a sibling run of the same request with another
layout is looked at once, before training:

- both layouts use ZeRO 1-3: its last checkpoint is converted to a DeepSpeed *universal*
  checkpoint (world-size independent) and the new run resumes from it;
- both use ZeRO 0 (not partitioned): the new run loads its last checkpoint directly;
- otherwise (ZeRO 0 <-> 1-3 has no conversion): a fresh start, with a one-line warning saying
  why. Never a retry loop.

Each run folder has a small `<run>.boom.json` beside it naming its request and layout.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pyarrow.fs as pafs

from boom_ray.runtime import storage

RUN_INFO_SUFFIX = ".boom.json"
STATE_FILE = "train_state.json"
"""Rank 0's TrainState (step, tokens, ...) in every checkpoint; `boom status` reads it too."""


def run_digest(request_hash: str, layout: dict[str, int]) -> str:
    payload = {"request_hash": request_hash, "world_size": layout["world_size"], "zero_stage": layout["zero_stage"]}
    return storage.stable_hash(payload, 16)


def run_name(bag: str, request_hash: str, layout: dict[str, int]) -> str:
    return f"{bag}-{run_digest(request_hash, layout)}"


def write_run_info(storage_path: str, name: str, bag: str, request_hash: str, layout: dict[str, int]) -> None:
    fs, root = storage.resolve(storage_path)
    storage.write_json(fs, posixpath.join(root, name + RUN_INFO_SUFFIX),
                       {"bag": bag, "request_hash": request_hash, **layout})


def remove_run_info(storage_path: str, name: str) -> None:
    fs, root = storage.resolve(storage_path)
    path = posixpath.join(root, name + RUN_INFO_SUFFIX)
    if storage.exists(fs, path):
        fs.delete_file(path)


def latest_checkpoint(storage_path: str, name: str) -> tuple[str, int] | None:
    """(URI, step) of the run's registered checkpoint with the most steps, or None. Only what Ray
    Train's checkpoint manager recorded counts: a folder still being uploaded when the run died
    is not a checkpoint."""
    fs, root = storage.resolve(storage_path)
    run_dir = posixpath.join(root, name)
    snapshot = storage.read_json_or_none(fs, posixpath.join(run_dir, "checkpoint_manager_snapshot.json")) or {}
    best = None
    for entry in snapshot.get("checkpoint_results") or []:
        step = (entry.get("metrics") or {}).get("step")
        if isinstance(step, int) and entry.get("checkpoint_dir_name") and (best is None or step > best[1]):
            best = (posixpath.join(run_dir, entry["checkpoint_dir_name"]), step)
    if best is None:
        return None
    uri = best[0] if "://" not in storage_path else storage_path.split("://")[0] + "://" + best[0]
    return uri, best[1]


def carry_over(old: dict[str, int], new: dict[str, int]) -> tuple[str, str]:
    """How a checkpoint of layout `old` can seed a run of layout `new`: ("universal" | "direct" |
    "fresh", reason)."""
    if old["zero_stage"] >= 1 and new["zero_stage"] >= 1:
        return "universal", "through a DeepSpeed universal checkpoint"
    if old["zero_stage"] == 0 and new["zero_stage"] == 0:
        return "direct", "ZeRO-0 checkpoints are not partitioned"
    return "fresh", (f"a ZeRO-{old['zero_stage']} checkpoint has no conversion to ZeRO-{new['zero_stage']} "
                     "(a single worker runs ZeRO 1/2 as ZeRO 0)")


def find_other_layout(storage_path: str, bag: str, request_hash: str, layout: dict[str, int],
                      own: str) -> dict[str, Any] | None:
    """The most advanced checkpoint of a run of the same request with another layout:
    {"run", "uri", "step", "layout"}; None when there is none or `own` has a checkpoint itself."""
    if latest_checkpoint(storage_path, own) is not None:
        return None  # Ray Train resumes the run's own checkpoints
    fs, root = storage.resolve(storage_path)
    if not storage.is_dir(fs, root):
        return None
    best = None
    for info in fs.get_file_info(pafs.FileSelector(root)):
        name = info.base_name
        if not (name.startswith(f"{bag}-") and name.endswith(RUN_INFO_SUFFIX)):
            continue
        meta = storage.read_json_or_none(fs, info.path)
        run = name[: -len(RUN_INFO_SUFFIX)]
        if not meta or meta.get("request_hash") != request_hash or run == own:
            continue
        found = latest_checkpoint(storage_path, run)
        if found and (best is None or found[1] > best["step"]):
            best = {"run": run, "uri": found[0], "step": found[1],
                    "layout": {"world_size": meta["world_size"], "zero_stage": meta["zero_stage"]}}
    return best
