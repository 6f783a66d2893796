"""A rank's micro batches: its slice of each global batch, the same on every run and resume."""

from __future__ import annotations

import pytest
import torch

from boom_ray.corpus.bags import read_bag
from boom_ray.train.feed import BagFeed, BagTooSmallError
from tests.train.bagtools import learnable_rows, write_bag


@pytest.fixture(scope="module")
def embedder(tiny_qwen3_path):
    from boom_ray.model.embedder import Embedder

    return Embedder.from_pretrained(str(tiny_qwen3_path), pooling="last", max_query_length=32, max_doc_length=32)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    work = tmp_path_factory.mktemp("feed")
    write_bag(work, "bag50", {"a": learnable_rows(20, 1), "nested/b": learnable_rows(13, 2),
                              "sym": [dict(r, type="symmetric") for r in learnable_rows(9, 3)]})
    return read_bag(str(work / "bags" / "bag50"))


def _queries(mb, embedder):
    return embedder.tokenizer.batch_decode(mb.query_features["input_ids"], skip_special_tokens=True)


def test_ranks_split_each_global_batch_and_see_the_same_task(bag, embedder):
    one = BagFeed(bag, embedder, global_batch_size=4, group_size=3, seed=7)
    ranks = [BagFeed(bag, embedder, global_batch_size=4, group_size=3, seed=7, rank=r, world_size=2)
             for r in range(2)]
    # tasks: a 20 rows -> 5 batches, nested/b 13 -> 3, sym 9 rows in half batches of 2 -> 4
    assert one.batches_per_epoch == ranks[0].batches_per_epoch == 12
    for m in range(one.batches_per_epoch):
        whole = one.micro_batch(m)
        parts = [f.micro_batch(m) for f in ranks]
        assert {p.task for p in parts} == {whole.task}
        assert sum(len(p.in_batch) for p in parts) == len(whole.in_batch)
        assert _queries(parts[0], embedder) + _queries(parts[1], embedder) == _queries(whole, embedder)
        assert parts[0].passage_features["input_ids"].shape[0] == 3 * len(parts[0].in_batch)
        assert whole.tokens == int(whole.query_features["attention_mask"].sum()
                                   + whole.passage_features["attention_mask"].sum())


def test_micro_batches_are_deterministic_so_a_resume_sees_the_same_data(bag, embedder):
    feed = BagFeed(bag, embedder, global_batch_size=4, group_size=3, seed=7)
    n = feed.batches_per_epoch
    straight = list(feed.iterate(0, 2 * n + 3))
    fresh = BagFeed(bag, embedder, global_batch_size=4, group_size=3, seed=7)
    resumed = list(fresh.iterate(n + 2, 2 * n + 3))  # a resume in the middle of epoch 1
    assert [m.step for m in resumed] == list(range(n + 2, 2 * n + 3))
    for a, b in zip(straight[n + 2:], resumed):
        assert a.task == b.task
        assert torch.equal(a.passage_features["input_ids"], b.passage_features["input_ids"])
    # a new epoch reshuffles: the epoch-1 order is not the epoch-0 order
    assert [m.task for m in straight[:n]] != [m.task for m in straight[n:2 * n]] or not torch.equal(
        straight[0].query_features["input_ids"], straight[n].query_features["input_ids"])
    other_seed = BagFeed(bag, embedder, global_batch_size=4, group_size=3, seed=8)
    assert [other_seed.micro_batch(m).task for m in range(n)] != [m.task for m in straight[:n]]


def test_prefetch_surfaces_errors_in_the_consumer(bag, embedder):
    feed = BagFeed(bag, embedder, global_batch_size=4, group_size=3, seed=7)
    it = feed.iterate(0, feed.batches_per_epoch * 50 + 1)
    assert next(it).step == 0
    it.close()  # stopping early ends the producer thread
    with pytest.raises(ValueError):
        list(BagFeed(bag, embedder, global_batch_size=4, group_size=3, seed=7).iterate(-10**6, -10**6 + 1))


def test_bag_too_small_for_one_global_batch_is_a_clear_error(bag, embedder):
    with pytest.raises(BagTooSmallError, match="global_batch_size"):
        BagFeed(bag, embedder, global_batch_size=64, group_size=3, seed=7, name="bag50")
    with pytest.raises(Exception, match="split evenly"):
        BagFeed(bag, embedder, global_batch_size=6, group_size=3, seed=7, world_size=4, name="bag50")


def test_schedule_orders_the_micro_batches_and_teacher_scores_come_along(bag, embedder, tmp_path):
    """sequential: task after task in name order; two_stage: the retrieval tasks (a, nested/b)
    before the symmetric one. With teacher scores on, each micro batch carries [B, group]."""
    seq = BagFeed(bag, embedder, global_batch_size=4, group_size=3, seed=7, schedule="sequential")
    assert [seq.micro_batch(m).task for m in range(seq.batches_per_epoch)] == ["a"] * 5 + ["nested/b"] * 3 + ["sym"] * 4
    two = BagFeed(bag, embedder, global_batch_size=4, group_size=3, seed=7, schedule="two_stage")
    tasks = [two.micro_batch(m).task for m in range(two.batches_per_epoch)]
    assert set(tasks[:8]) == {"a", "nested/b"} and tasks[8:] == ["sym"] * 4
    rows = [dict(r, pos_scores=[1.0], neg_scores=[0.5, 0.25, 0.0]) for r in learnable_rows(8, 4)]
    write_bag(tmp_path, "kd", {"t": rows})
    kd = BagFeed(read_bag(str(tmp_path / "bags" / "kd")), embedder, global_batch_size=4, group_size=3, seed=1,
                 teacher_scores=True)
    mb = kd.micro_batch(0)
    assert mb.teacher_scores.shape == (4, 3) and mb.teacher_scores[:, 0].tolist() == [1.0] * 4
    assert mb.passage_ids.shape == (12,)
