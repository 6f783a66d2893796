"""What one training rank feeds its model: its slice of every global batch of the bag's plan.

Every rank reads the whole bag memory-mapped (the page cache is shared between the workers of a
node, so N workers do not hold N copies), computes the same batch plan from the seed and the
epoch, and takes its contiguous slice of each global batch. Micro step ``m`` (counted over the
whole run, across epochs) is always the same rows with the same sampled negatives, whatever
happened before: the passage sampling is seeded by (seed, m, rank). So a run resumed from a
checkpoint at micro step ``m`` sees exactly what an uninterrupted run would have seen.

Tokenisation runs one or two batches ahead in a background thread (the fast tokenizers release
the GIL), off the critical path of the forward/backward pass.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from boom_ray.corpus.bags import read_bag, task_index
from boom_ray.errors import BoomError
from boom_ray.train.batch_plan import BatchPlan, plan_batches, rank_rows
from boom_ray.train.collate import collate

COLUMNS = ["task", "query", "pos", "neg", "prompt", "type", "pos_scores", "neg_scores"]


class BagTooSmallError(BoomError):
    """A bag without a single full global batch for this world size."""


@dataclass
class MicroBatch:
    step: int
    """Micro step index over the whole run."""
    task: str
    query_features: dict[str, torch.Tensor]
    passage_features: dict[str, torch.Tensor]
    in_batch: torch.Tensor
    tokens: int
    """Real (non-padding) tokens of the queries and passages of this rank."""
    passage_ids: torch.Tensor | None = None
    """[B*group] int64 text hashes of the passages (false-negative masking)."""
    teacher_scores: torch.Tensor | None = None
    """[B, group] teacher scores of the sampled passages (distillation only)."""


class BagFeed:
    """Micro batches of one rank over a bag table (rows in the bag's fixed order)."""

    def __init__(self, table, embedder, *, global_batch_size: int, group_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, name: str = "bag", schedule: str = "shuffled",
                 teacher_scores: bool = False):
        self.table = table
        self.embedder = embedder
        self.group_size = group_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.global_batch_size = global_batch_size
        self.schedule = schedule
        self.teacher_scores = teacher_scores
        self.task_rows, self.task_types = task_index(table)
        try:
            first = self.plan(0)
        except ValueError as exc:
            raise BoomError(f"{name}: {exc}") from None
        self.batches_per_epoch = len(first.batches)
        if self.batches_per_epoch == 0:
            raise BagTooSmallError(
                f"{name}: no task has enough rows for one global batch of {global_batch_size} "
                f"(rows per task: { {t: len(r) for t, r in self.task_rows.items()} }); "
                "lower train.global_batch_size")

    @classmethod
    def from_uri(cls, bag_uri: str, embedder, **kwargs) -> "BagFeed":
        return cls(read_bag(bag_uri, columns=COLUMNS), embedder, name=kwargs.pop("name", bag_uri), **kwargs)

    def plan(self, epoch: int) -> BatchPlan:
        return _cached_plan(self, epoch)

    def micro_batch(self, m: int) -> MicroBatch:
        """Features of micro step `m` for this rank (deterministic in seed, m and rank)."""
        epoch, index = divmod(m, self.batches_per_epoch)
        batch = self.plan(epoch).batches[index]
        rows = self.table.take(rank_rows(batch, self.rank, self.world_size)).to_pylist()
        rng = np.random.default_rng([self.seed, m, self.rank])
        c = collate(rows, self.embedder, self.group_size, rng, teacher_scores=self.teacher_scores)
        q, p = c.query_features, c.passage_features
        tokens = int(q["attention_mask"].sum()) + int(p["attention_mask"].sum())
        return MicroBatch(m, batch.task, q, p, c.in_batch, tokens, c.passage_ids, c.teacher_scores)

    def iterate(self, start: int, stop: int, prefetch: int = 2) -> Iterator[MicroBatch]:
        """Micro batches start .. stop-1, built `prefetch` ahead in a background thread."""
        if prefetch <= 0:
            for m in range(start, stop):
                yield self.micro_batch(m)
            return
        yield from _prefetched((self.micro_batch(m) for m in range(start, stop)), prefetch)


def _cached_plan(feed: BagFeed, epoch: int) -> BatchPlan:
    cache = feed.__dict__.setdefault("_plans", {})
    if epoch not in cache:
        cache.clear()  # one epoch at a time is all a run needs
        cache[epoch] = plan_batches(feed.task_rows, feed.task_types, feed.global_batch_size, feed.seed,
                                    epoch=epoch, world_size=feed.world_size, schedule=feed.schedule)
    return cache[epoch]


_DONE = object()


def _prefetched(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """Iterate `items` in a daemon thread, at most `depth` ahead; errors surface in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="boom-feed", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
