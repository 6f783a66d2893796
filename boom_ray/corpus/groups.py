"""Which tasks a run trains on, and how they are grouped into models (bagging.strategy).

The BOOM paper compares its random bags with models trained per dataset (one per task), per
task type and per cluster of tasks; this module decides those groupings, as pure functions of
task names and a few query samples, so the bag stage, training, merging and the report agree.

* Task filters (`corpus.include` / `corpus.exclude`): fnmatch globs on task names (the file's
  relative path without extension), case-sensitive. A task is kept when it matches an include
  glob (or no include list is given) and no exclude glob. Left-out tasks are never read; the
  bag manifests list each with its reason.
* `task` strategy: one model per task, or one per named group of `bagging.groups` (group name ->
  task globs). A task may belong to several groups; a task in no group is left out (and listed).
* `cluster` strategy: the groups of `bagging.groups` when given, else `num_clusters` clusters
  computed by :func:`cluster_tasks` from text statistics of each task's queries.

Why text statistics rather than embeddings of the base model: the bag stage is a CPU-only Ray
Data job that never loads a model; embedding samples with a 4B decoder there would need a GPU
(or minutes of CPU per task) for a grouping of a few dozen tasks, and it would make the bags
depend on the model. A task's instruction (`prompt`) and query vocabulary already separate the
task families (retrieval, STS, classification, clustering, code, ...) the paper clusters by.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from boom_ray.errors import BoomError

FEATURE_BUCKETS = 4096
_WORD_RE = re.compile(r"\w+", re.UNICODE)


class GroupError(BoomError):
    """A grouping that cannot be made (a group that matches no task, two tasks with one bag name)."""


def _matches(task: str, globs: Iterable[str]) -> str | None:
    return next((g for g in globs if fnmatch.fnmatchcase(task, g)), None)


def filter_tasks(tasks: Sequence[str], include: Sequence[str] | None, exclude: Sequence[str]
                 ) -> tuple[list[str], dict[str, str]]:
    """(kept tasks in input order, {left-out task: reason})."""
    kept, left_out = [], {}
    for task in tasks:
        if include is not None and _matches(task, include) is None:
            left_out[task] = "not in corpus.include"
        elif (glob := _matches(task, exclude)) is not None:
            left_out[task] = f"corpus.exclude {glob!r}"
        else:
            kept.append(task)
    return kept, left_out


def task_bag_name(task: str) -> str:
    """A per-task bag's folder name: the task with anything but letters, digits, '_', '.', '-'
    (folder separators included) replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task).strip("_") or "task"


def per_task_groups(tasks: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for task in sorted(tasks):
        name = task_bag_name(task)
        if name in groups:
            raise GroupError(f"tasks {groups[name][0]!r} and {task!r} both make bag name {name!r}; "
                             f"name groups in bagging.groups instead")
        groups[name] = [task]
    return groups


def match_groups(tasks: Sequence[str], groups: Mapping[str, Sequence[str]]
                 ) -> tuple[dict[str, list[str]], list[str]]:
    """({group: its tasks, sorted}, tasks in no group). A group that matches no task is an error:
    it would be a model trained on nothing, most likely a typo in the glob."""
    out = {}
    for name, globs in groups.items():
        members = sorted(t for t in tasks if _matches(t, globs) is not None)
        if not members:
            raise GroupError(f"bagging.groups.{name}: {list(globs)} matches no task of the corpus "
                             f"(tasks: {sorted(tasks)[:20]})")
        out[name] = members
    grouped = {t for members in out.values() for t in members}
    return out, sorted(t for t in tasks if t not in grouped)


def text_features(texts: Iterable[str]) -> np.ndarray:
    """A task's profile: the L2-normalised mean of its texts' hashed word counts (log-scaled,
    each text normalised first, so long texts do not dominate)."""
    total = np.zeros(FEATURE_BUCKETS, dtype=np.float64)
    for text in texts:
        vec = np.zeros(FEATURE_BUCKETS, dtype=np.float64)
        for word in _WORD_RE.findall(text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
            vec[h % FEATURE_BUCKETS] += 1.0
        vec = np.log1p(vec)
        norm = np.linalg.norm(vec)
        if norm:
            total += vec / norm
    norm = np.linalg.norm(total)
    return total / norm if norm else total


def cluster_tasks(profiles: Mapping[str, np.ndarray], k: int) -> dict[str, list[str]]:
    """Average-linkage agglomerative clustering of task profiles on cosine similarity, merged down
    to min(k, tasks) clusters. Deterministic (no random init; ties go to the lowest pair), and
    cheap: a corpus has tens of tasks, not thousands. Clusters are named cluster0, cluster1, ...
    in the order of their first task name."""
    tasks = sorted(profiles)
    if not tasks:
        return {}
    clusters = [[t] for t in tasks]
    x = np.stack([profiles[t] for t in tasks])
    sim = x @ x.T
    while len(clusters) > max(1, k):
        best, pair = -np.inf, (0, 1)
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                rows = [tasks.index(t) for t in clusters[i]]
                cols = [tasks.index(t) for t in clusters[j]]
                s = float(sim[np.ix_(rows, cols)].mean())
                if s > best + 1e-12:
                    best, pair = s, (i, j)
        i, j = pair
        clusters[i] = sorted(clusters[i] + clusters[j])
        del clusters[j]
    clusters.sort(key=lambda c: c[0])
    return {f"cluster{n}": c for n, c in enumerate(clusters)}
