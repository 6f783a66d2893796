"""Bags on a disk that fills while they are written: a bag's size is known only once written
(validation, sampling, compression), so the stage has no check up front, but the ENOSPC of a Ray
task becomes one line naming the bags' folder, the bytes written before the disk filled and the
bytes free, with every staging folder removed."""

from __future__ import annotations

import json
import os
import re

import pytest

from boom_ray.corpus.bag_stage import run_bagging
from boom_ray.errors import BoomError
from boom_ray.runtime.disk_space import DiskFullError
from tests.runtime.tmpfs import small_disk  # noqa: F401 (a fixture)

from .test_bag_stage import cfg_for


def _incompressible_corpus(root):
    """About 2 MB of JSONL that snappy cannot shrink: more than the test's disk holds."""
    root.mkdir()
    with (root / "task.jsonl").open("w") as f:
        for i in range(1000):
            f.write(json.dumps({"query": os.urandom(500).hex(), "pos": [os.urandom(500).hex()], "neg": []}) + "\n")
    return root


def _files(root):
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


def test_a_full_disk_while_bagging_is_one_line_and_leaves_nothing(ray_session, tmp_path, small_disk):
    corpus = _incompressible_corpus(tmp_path / "corpus")
    disk = small_disk(1 << 20)
    cfg = cfg_for(tmp_path, corpus, workdir=str(disk / "work"), ratios=[0.5, 1.0])
    with pytest.raises(DiskFullError) as info:
        run_bagging(cfg, show_progress=False)
    text = str(info.value)
    assert isinstance(info.value, BoomError) and "\n" not in text, text
    found = re.fullmatch(re.escape(str(disk / "work" / "bags")) + r": not enough disk space for the bags: it needs "
                         r"more than (\d+) bytes \(.*\), (\d+) bytes \(.*\) are free", text)
    assert found, text
    assert int(found[1]) > 0 and int(found[2]) > 0
    assert _files(disk) == []  # no partial bag, quarantine or owner file
