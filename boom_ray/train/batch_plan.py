"""Batch-level shuffling: the order in which a bag's rows are seen during training.

Every global batch holds rows of a single task, so in-batch negatives are always of the same
kind as the positive (a paraphrase is never a "negative" of a retrieval query). A task's rows
are shuffled and cut into batches, the partial tail is dropped (and counted), and the batches
of all tasks are shuffled together. Each training rank takes its contiguous slice of every
global batch, so all ranks see the same task at the same step and cross-device negatives stay
within one task.

The BOOM paper's baselines are other orders of the same batches (`train.schedule`):

* ``shuffled`` (default, BOOM's batch-level shuffling): the batches of all tasks shuffled together.
* ``sequential``: task after task in task-name order, each task's batches in its shuffled order,
  so the model sees one task at a time (the baseline that forgets earlier tasks).
* ``two_stage``: stage 1 is the retrieval tasks' batches (asymmetric tasks that use in-batch
  negatives), shuffled together; stage 2 is the remaining tasks' batches (symmetric STS /
  pair tasks, classification, clustering), shuffled together. This follows NV-Embed's two-stage
  instruction tuning (Lee et al. 2024): retrieval with in-batch and hard negatives first, then the
  non-retrieval tasks. NV-Embed also blends retrieval data into its second stage; here every row
  is seen exactly once per epoch, so the three schedules train on the very same batches and
  differ only in their order, which is what the comparison is about.

Pure functions over row indices: no I/O, no Ray; the same plan on every rank from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from boom_ray.corpus.task_types import is_symmetric, uses_in_batch_negatives

SCHEDULES = ("shuffled", "sequential", "two_stage")


def task_batch_size(global_batch_size: int, task_type: str | None, world_size: int = 1) -> int:
    size = global_batch_size // 2 if is_symmetric(task_type) else global_batch_size
    if size < world_size or size % world_size:
        raise ValueError(
            f"a global batch of {size} rows (task type {task_type!r}) cannot be split evenly over "
            f"{world_size} ranks; choose train.global_batch_size as a multiple of "
            f"{2 * world_size} so that half batches split evenly too")
    return size


@dataclass(frozen=True)
class GlobalBatch:
    task: str
    rows: np.ndarray
    """Row indices into the bag (its rows in reading order), one per example."""


@dataclass(frozen=True)
class BatchPlan:
    batches: list[GlobalBatch]
    dropped: dict[str, int] = field(default_factory=dict)
    """Rows of each task left out of this epoch because they did not fill a last batch."""

    @property
    def rows_used(self) -> int:
        return sum(len(b.rows) for b in self.batches)


def is_first_stage(task_type: str | None) -> bool:
    """Whether a task trains in stage 1 of the two_stage schedule: retrieval-like, i.e. asymmetric
    and contrasted with in-batch negatives."""
    return not is_symmetric(task_type) and uses_in_batch_negatives(task_type)


def plan_batches(task_rows: Mapping[str, np.ndarray], task_types: Mapping[str, str | None],
                 global_batch_size: int, seed: int, epoch: int = 0, world_size: int = 1,
                 schedule: str = "shuffled") -> BatchPlan:
    """One epoch of global batches. `task_rows` maps each task to the bag row indices it owns.

    Deterministic in (rows, types, batch size, seed, epoch, schedule): every rank computes the
    same plan. The schedules differ only in the order of the same batches (module docstring).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; schedules are {', '.join(SCHEDULES)}")
    rng = np.random.default_rng([seed, epoch])
    batches: list[GlobalBatch] = []
    dropped: dict[str, int] = {}
    for task in sorted(task_rows):
        rows = np.asarray(task_rows[task], dtype=np.int64)
        size = task_batch_size(global_batch_size, task_types.get(task), world_size)
        shuffled = rows[rng.permutation(len(rows))]
        n_full = len(shuffled) // size
        dropped[task] = len(shuffled) - n_full * size
        batches.extend(GlobalBatch(task, shuffled[i * size:(i + 1) * size]) for i in range(n_full))
    if schedule == "sequential":
        return BatchPlan(batches, dropped)
    if schedule == "two_stage":
        first = [b for b in batches if is_first_stage(task_types.get(b.task))]
        second = [b for b in batches if not is_first_stage(task_types.get(b.task))]
        return BatchPlan([first[i] for i in rng.permutation(len(first))]
                         + [second[i] for i in rng.permutation(len(second))], dropped)
    order = rng.permutation(len(batches))
    return BatchPlan([batches[i] for i in order], dropped)


def rank_rows(batch: GlobalBatch, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous slice of a global batch."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of {world_size}")
    per_rank = len(batch.rows) // world_size
    return batch.rows[rank * per_rank:(rank + 1) * per_rank]
