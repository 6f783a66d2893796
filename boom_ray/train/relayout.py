"""Resume a bag from the checkpoint of a run with another layout (world size / ZeRO stage).

Why: ZeRO checkpoints are partitioned for the world size that wrote them; loading them under
another one is what failed on every retry before. :mod:`boom_ray.train.runs` decides on the
driver, once, whether the old checkpoint can be carried over; here the workers do it:

- ``universal``: the local rank 0 of every node converts the old DeepSpeed checkpoint to a
  universal one (DeepSpeed's ``ds_to_universal``; world-size independent fp32 weights and
  optimizer moments per parameter) in a node-local folder, the others wait at a barrier, and
  every rank loads it with ``checkpoint.load_universal``;
- ``direct``: ZeRO-0 checkpoints are not partitioned and load as they are.

The progress (step, tokens, loss history) comes from the old checkpoint; a rank that did not
exist before gets a fresh RNG seed derived from the step.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import tempfile
from typing import Any

import ray.train
import torch.distributed as dist

from boom_ray.runtime import storage
from boom_ray.train.checkpoint import DS_TAG, TrainState, read_state_and_rng
from boom_ray.train.rng import rank_seed, seed_everything


def convert_to_universal(ds_dir: str, out_dir: str) -> None:
    """DeepSpeed checkpoint folder (one tag) -> universal checkpoint folder, atomically."""
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal  # lazy: deepspeed, conversions only

    if os.path.isdir(out_dir):
        return
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    args = argparse.Namespace(input_folder=ds_dir, output_folder=tmp, num_extract_workers=1, num_merge_workers=1,
                              keep_temp_folder=False, strict=True, inject_missing_state=False)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every step of the conversion
        ds_to_universal(args)
    os.replace(tmp, out_dir)


def load_other_layout(engine, other: dict[str, Any], seed: int) -> TrainState:
    """Load `other` (job["resume_from"]: uri, universal, run) into `engine`; returns the TrainState."""
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    with ray.train.Checkpoint(other["uri"]).as_directory() as path:
        load_dir, tag = path, DS_TAG
        if other["universal"]:
            key = storage.stable_hash(other["uri"], 16)
            load_dir, tag = os.path.join(tempfile.gettempdir(), f"boom-universal-{key}"), "universal"
            if ctx.get_local_rank() == 0:
                os.makedirs(load_dir, exist_ok=True)
                convert_to_universal(os.path.join(path, DS_TAG), os.path.join(load_dir, tag))
            if dist.is_initialized():
                dist.barrier()
        loaded, _ = engine.load_checkpoint(load_dir, tag=tag, load_optimizer_states=True,
                                           load_lr_scheduler_states=True)
        if loaded is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {load_dir}/{tag}")
        state, restored = read_state_and_rng(path, rank)
        if not restored:
            seed_everything(rank_seed(seed, rank) + state.step)
    if other["universal"]:
        # the universal copy (fp32 weights and both Adam moments: 12 bytes a parameter) is only
        # needed until every rank of the node has loaded it
        if dist.is_initialized():
            dist.barrier()
        if ctx.get_local_rank() == 0:
            shutil.rmtree(load_dir, ignore_errors=True)
    schedule = engine.lr_scheduler
    if schedule is not None and getattr(schedule, "last_epoch", state.step) != state.step:
        # the schedule is a pure function of the step: put it where the old run left it
        schedule.last_epoch = state.step - 1
        schedule.step()
    state.restarts += 1
    state.resumed_from.append(state.step)
    return state
