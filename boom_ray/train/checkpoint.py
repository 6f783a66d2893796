"""What a training checkpoint holds, how it is written and read, and how it reaches Ray Train.

A checkpoint holds everything needed to continue as if nothing had happened: the DeepSpeed
engine state under the tag :data:`DS_TAG` (weights, optimizer, lr schedule; one shard per rank
under ZeRO), rank 0's :class:`TrainState` (the step fixes the position in the batch plan, see
:mod:`boom_ray.train.feed`) and every rank's RNG states (:mod:`boom_ray.train.rng`).

Why a module of its own: the training loop writes and loads checkpoints of its own run, and
:mod:`boom_ray.train.relayout` loads those of a run with another layout; both read the same
files, and neither should import the other.

``ray.train.report`` is both Ray Train's metrics sink and its checkpoint channel, so
:class:`RayReport`, the sink, is here too: a record whose step is due a checkpoint carries one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import ray.train

from boom_ray.train.metrics import MetricsSink, Record
from boom_ray.train.rng import load_rng_states, save_rng_states
from boom_ray.train.runs import STATE_FILE

DS_TAG = "ds"
"""DeepSpeed's tag (sub-folder) of the engine state in a checkpoint folder."""


@dataclass
class TrainState:
    """Progress that survives a restart (saved in every checkpoint, written by rank 0)."""

    step: int = 0
    """Optimizer steps done."""
    tokens: int = 0
    """Real tokens seen, summed over ranks."""
    elapsed_s: float = 0.0
    """Training time before the current attempt."""
    restarts: int = 0
    started_at: float = 0.0
    """Wall-clock time the first attempt began training (after setup)."""
    loop_s: float = 0.0
    """Seconds spent in the step loop (data, forward, backward, optimizer), all attempts."""
    loop_cpu_s: float = 0.0
    """CPU seconds of this process (all threads) in the step loop: unlike wall time, barely
    moved by other processes competing for the cores."""
    resumed_from: list[int] = field(default_factory=list)
    loss_history: list[list[float]] = field(default_factory=list)
    """[step, mean loss over ranks and the last log window]."""


def save_checkpoint(engine, state: TrainState, folder: str) -> None:
    """This rank's part of a checkpoint into `folder`: its engine shard and RNG states, and on
    rank 0 the TrainState. Collective under ZeRO: every rank calls it."""
    rank = ray.train.get_context().get_world_rank()
    engine.save_checkpoint(folder, tag=DS_TAG)
    save_rng_states(folder, rank)
    if rank == 0:
        with open(os.path.join(folder, STATE_FILE), "w") as f:
            json.dump(asdict(state), f)


def read_state_and_rng(path: str, rank: int) -> tuple[TrainState, bool]:
    """(the TrainState of a checkpoint folder, whether this rank's RNG states were in it and are
    now restored)."""
    with open(os.path.join(path, STATE_FILE)) as f:
        state = TrainState(**json.load(f))
    return state, load_rng_states(path, rank)


def load_checkpoint(engine, checkpoint: ray.train.Checkpoint) -> TrainState:
    """Restore engine state, progress and this rank's RNG states from a Ray Train checkpoint of
    this run (a restarted worker group, or a re-run of the same request)."""
    rank = ray.train.get_context().get_world_rank()
    with checkpoint.as_directory() as path:
        load_path, _ = engine.load_checkpoint(path, tag=DS_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if load_path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {path}")
        state, _ = read_state_and_rng(path, rank)
    state.restarts += 1
    state.resumed_from.append(state.step)
    return state


class RayReport(MetricsSink):
    """Sink: ``ray.train.report`` from every rank (Ray Train waits for every worker's report) of
    the records whose step is `due` a checkpoint, each with the checkpoint that `save(folder)`
    writes (every rank its shard, in a folder of its own that Ray Train uploads).

    Why not every record: Ray Train (V2) keeps a report's metrics only with its checkpoint, and a
    report blocks until the controller has taken the previous one (a result queue of one, polled
    every 2 s), so reporting each logged step would stall fast steps for seconds to be discarded.
    A checkpoint's report carries the whole record of its step: every metric, old or new."""

    def __init__(self, due: Callable[[int], bool], save: Callable[[str], None] | None = None,
                 report: Callable[..., Any] | None = None):
        """`save`: None reports the due records without a checkpoint; `report`: what to call
        instead of ray.train.report (a test's recorder)."""
        self.due, self.save, self._report = due, save, report

    def log(self, record: Record) -> None:
        if not self.due(record["step"]):
            return
        report = self._report or ray.train.report
        if self.save is None:
            report(dict(record))
            return
        with tempfile.TemporaryDirectory(prefix="boom-ckpt-") as tmp:
            self.save(tmp)
            report(dict(record), checkpoint=ray.train.Checkpoint.from_directory(tmp))
