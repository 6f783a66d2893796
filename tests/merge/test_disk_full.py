"""A merge into a disk too small for it: one line naming the output, the bytes needed and free,
exit 2, nothing left behind; also when the disk fills only after the free-space check passed."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from boom_ray.cli import main as boom
from boom_ray.merge import task
from boom_ray.merge.request import MergeRequest, ModelInput
from boom_ray.runtime import disk_space
from tests.runtime.tmpfs import fill, small_disk  # noqa: F401 (a fixture)

from .conftest import make_model

SHAPES = {"embed.weight": (640, 512), "layer.0.proj.weight": (512, 512), "layer.0.norm.weight": (512,)}
"""About 2.3 MB per float32 model: three fit the test's disk budget in well under a second."""


def _models(root: Path, dense: bool = False) -> list[Path]:
    out = []
    for i in range(3):
        model = make_model(root / f"m{i}", i, shapes=SHAPES)
        if dense:  # a sentence-transformers Dense head, merged too and counted in the size
            (model / "2_Dense").mkdir()
            save_file({"linear.weight": torch.randn(256, 512)}, str(model / "2_Dense" / "model.safetensors"))
            (model / "modules.json").write_text(json.dumps([{"idx": 0, "name": "2", "path": "2_Dense",
                                                             "type": "x.Dense"}]))
        out.append(model)
    return out


def _yaml(root: Path, models: list[Path]) -> Path:
    path = root / "merge.yaml"
    path.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32",
                                    "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in models]}))
    return path


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_output_bytes_are_what_a_merge_writes(tmp_path):
    """The estimate is honest: at least the blocks the finished output takes, and not much more."""
    models = _models(tmp_path, dense=True)
    out = tmp_path / "out"
    seen = {}
    real = disk_space.check_free_space

    def spy(path, needed, what):
        seen["needed"] = needed
        real(path, needed, what)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(disk_space, "check_free_space", spy)
        task.merge(MergeRequest("linear", [ModelInput(str(m), {"weight": 1.0}) for m in models]), str(out),
                   progress=False)
    used = sum(os.stat(p).st_blocks * 512 for p in out.rglob("*") if p.is_file())
    assert (out / "2_Dense" / "model.safetensors").is_file()
    assert used <= seen["needed"] <= used + task.SMALL_FILES + 16 * disk_space.BLOCK


def test_merge_into_a_too_small_disk_fails_before_writing(tmp_path, small_disk, capsys):
    models = _models(tmp_path)
    disk = small_disk(1 << 20)
    out = disk / "merged"
    assert boom(["merge", str(_yaml(tmp_path, models)), "--out", str(out)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"boom merge: error: {out}: not enough disk space for the merge output")
    found = re.search(r"it needs (\d+) bytes \(.*\), (\d+) bytes \(.*\) are free$", line)
    assert found, line
    needed, free = int(found[1]), int(found[2])
    assert needed > 2 << 20 and 0 < free <= 1 << 20
    assert os.listdir(disk) == []  # nothing written, not even the staging folder


def test_a_disk_that_fills_after_the_check_gives_the_same_error(tmp_path, small_disk, capsys, monkeypatch):
    """Someone else writes between the check and the merge: the ENOSPC of the write becomes the
    same one-line error, after the staging folder and its owner file are removed."""
    models = _models(tmp_path)
    disk = small_disk(12 << 20)
    out = disk / "merged"
    real = disk_space.check_free_space

    def check_then_fill(path, needed, what):
        real(path, needed, what)  # passes: 12 MB free
        fill(disk, 1 << 20)  # then the disk fills up, leaving 1 MiB

    monkeypatch.setattr(disk_space, "check_free_space", check_then_fill)
    assert boom(["merge", str(_yaml(tmp_path, models)), "--out", str(out)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"boom merge: error: {out}: not enough disk space for the merge output: it needs ")
    assert os.listdir(disk) == ["filler"]  # the partial output and its owner file are gone


def test_a_runs_merge_on_ray_gives_the_same_line(ray_session, tmp_path, small_disk, capsys):
    """`boom merge --config`: the task's DiskFullError comes back through Ray as its one line."""
    work = tmp_path / "work"
    for seed, bag in enumerate(["bag50", "bag100"]):
        make_model(work / "models" / bag, seed, shapes=SHAPES)
    disk = small_disk(1 << 20)
    (work / "merges").symlink_to(disk)
    run = {"workdir": str(work), "corpus": {"path": str(tmp_path / "corpus")}, "bagging": {"ratios": [0.5, 1.0]},
           "merge": {"num_cpus": 0.5, "memory": "64MB", "merges": [{"name": "lin", "method": "linear"}]}}
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(run))
    assert boom(["merge", "--config", str(cfg)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"boom merge: error: {work / 'merges' / 'lin'}: not enough disk space for the merge output")
    assert os.listdir(disk) == []
