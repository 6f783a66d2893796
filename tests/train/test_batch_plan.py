"""Batch plan properties: one task per global batch on every rank, every kept row used once
per epoch, tails dropped and counted, half batches for symmetric tasks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boom_ray.train.batch_plan import plan_batches, rank_rows, task_batch_size
from boom_ray.corpus.task_types import is_symmetric, uses_in_batch_negatives

TYPES = [None, "retrieval", "symmetric_sts", "symmetric_class", "clustering"]


@st.composite
def corpora(draw):
    n_tasks = draw(st.integers(1, 6))
    sizes = draw(st.lists(st.integers(0, 120), min_size=n_tasks, max_size=n_tasks))
    types = draw(st.lists(st.sampled_from(TYPES), min_size=n_tasks, max_size=n_tasks))
    rows, offset = {}, 0
    for i, size in enumerate(sizes):
        rows[f"task{i}"] = np.arange(offset, offset + size)
        offset += size
    return rows, {f"task{i}": t for i, t in enumerate(types)}


@given(corpus=corpora(), world=st.sampled_from([1, 2, 4]), per_rank=st.integers(1, 8), seed=st.integers(0, 99))
@settings(max_examples=80, deadline=None)
def test_plan_properties(corpus, world, per_rank, seed):
    task_rows, task_types = corpus
    global_batch = 2 * world * per_rank
    plan = plan_batches(task_rows, task_types, global_batch, seed, epoch=0, world_size=world)
    owner = {int(r): t for t, rows in task_rows.items() for r in rows}
    seen = []
    for batch in plan.batches:
        expected = global_batch // 2 if is_symmetric(task_types[batch.task]) else global_batch
        assert len(batch.rows) == expected
        slices = [rank_rows(batch, rank, world) for rank in range(world)]
        for part in slices:
            assert len(part) == expected // world
            assert {owner[int(r)] for r in part} == {batch.task}  # one task on every rank
        assert np.array_equal(np.concatenate(slices), batch.rows)
        seen.extend(batch.rows.tolist())
    assert len(seen) == len(set(seen))  # no row twice in an epoch
    for task, rows in task_rows.items():
        used = sum(1 for r in seen if owner[r] == task)
        assert used + plan.dropped[task] == len(rows)  # every kept row used once, or counted as dropped
        size = task_batch_size(global_batch, task_types[task], world)
        assert plan.dropped[task] < size


def test_plan_is_seeded_and_changes_with_epoch():
    rows = {"a": np.arange(100), "b": np.arange(100, 300)}
    types = {"a": None, "b": "symmetric_sts"}
    one = plan_batches(rows, types, 16, seed=1)
    again = plan_batches(rows, types, 16, seed=1)
    assert [b.rows.tolist() for b in one.batches] == [b.rows.tolist() for b in again.batches]
    other = plan_batches(rows, types, 16, seed=1, epoch=1)
    assert [b.rows.tolist() for b in one.batches] != [b.rows.tolist() for b in other.batches]
    # batches of the two tasks are interleaved, not task after task
    tasks = [b.task for b in one.batches]
    assert tasks != sorted(tasks)


def test_uneven_split_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot be split evenly over 4 ranks"):
        task_batch_size(12, "symmetric_sts", 4)


def test_task_traits():
    assert not uses_in_batch_negatives("symmetric_class")
    assert not uses_in_batch_negatives("clustering")
    assert not uses_in_batch_negatives("retrieval_no_in_batch_neg")
    assert uses_in_batch_negatives("retrieval") and uses_in_batch_negatives(None)
    assert is_symmetric("symmetric_sts") and not is_symmetric("retrieval")


def _key(plan):
    return sorted((b.task, tuple(b.rows)) for b in plan.batches)


@given(corpus=corpora(), per_rank=st.integers(1, 8), seed=st.integers(0, 99))
@settings(max_examples=60, deadline=None)
def test_schedules_order_the_same_batches_differently(corpus, per_rank, seed):
    """sequential and two_stage are permutations of the shuffled plan's batches (same rows, same
    tails dropped); sequential runs task after task in name order; two_stage puts every retrieval
    batch before every other one."""
    from boom_ray.train.batch_plan import is_first_stage

    rows, types = corpus
    size = 2 * per_rank
    plans = {s: plan_batches(rows, types, size, seed, schedule=s) for s in ("shuffled", "sequential", "two_stage")}
    assert _key(plans["sequential"]) == _key(plans["shuffled"]) == _key(plans["two_stage"])
    assert plans["sequential"].dropped == plans["shuffled"].dropped == plans["two_stage"].dropped
    tasks = [b.task for b in plans["sequential"].batches]
    assert tasks == sorted(tasks)
    stages = [is_first_stage(types[b.task]) for b in plans["two_stage"].batches]
    assert stages == sorted(stages, reverse=True)  # all True (stage 1) before all False (stage 2)


def test_first_stage_is_retrieval_and_unknown_schedules_fail():
    from boom_ray.train.batch_plan import is_first_stage

    assert [is_first_stage(t) for t in TYPES] == [True, True, False, False, False]
    with pytest.raises(ValueError, match="unknown schedule"):
        plan_batches({"a": np.arange(4)}, {}, 2, 0, schedule="random")


def test_shuffled_schedule_is_the_default_and_unchanged():
    rows = {"a": np.arange(0, 10), "b": np.arange(10, 30)}
    default = plan_batches(rows, {}, 4, 7)
    assert [(b.task, list(b.rows)) for b in default.batches] == \
        [(b.task, list(b.rows)) for b in plan_batches(rows, {}, 4, 7, schedule="shuffled").batches]
    assert [b.task for b in plan_batches(rows, {}, 4, 7, schedule="sequential").batches] == ["a"] * 2 + ["b"] * 5
