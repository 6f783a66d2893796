"""`boom status`: where a run stands, read from a work dir as the stages leave it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from boom_ray.cli import main as boom


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_status_of_a_run_in_progress(tmp_path, capsys):
    work = tmp_path / "run"
    config = {"workdir": str(work), "corpus": {"path": str(tmp_path / "corpus")},
              "bagging": {"ratios": [0.5, 1.0]},
              "merge": {"merges": [{"name": "ms", "method": "multislerp"}]}}
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    _write(work / "bags" / "bag50" / "manifest.json", {"ratio": 0.5})
    _write(work / "bags" / "bag100" / "manifest.json", {"ratio": 1.0})
    _write(work / "models" / "bag100" / "boom_train.json", {"steps": 30, "final_loss": 0.4321})
    _write(work / "train_runs" / "bag50-0123abcd" / "checkpoint_2026" / "train_state.json", {"step": 12})
    _write(work / "train_runs" / "bag50-0123abcd" / "checkpoint_2025" / "train_state.json", {"step": 6})
    _write(work / "eval" / "bag100.json", {"results": {"id_mean": 0.61, "ood_mean": 0.42}})
    _write(work / "run.json", {"config": config, "stages": {"bag": {"status": "done"}, "train": {"status": "failed"}}})
    stale = work / "merges" / ".tmp-ms-0badf00d"  # a merge killed mid-write: no owner, long untouched
    stale.mkdir(parents=True)
    (stale / "model-00001.safetensors").write_bytes(b"x" * 100)
    import os

    for path in (stale / "model-00001.safetensors", stale):
        os.utime(path, (1, 1))

    assert boom(["status", "--config", str(cfg_file)]) == 0
    out = capsys.readouterr().out
    assert "stages: bag done, train failed, merge not run, eval not run, report not run" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("bag")}
    assert lines["bag50"][1:] == ["yes", "training", "or", "interrupted", "12"]
    assert lines["bag100"][1:] == ["yes", "trained", "30", "0.4321"]
    assert "merge ms (multislerp): not done" in out
    assert "bag100: id_mean 0.6100, ood_mean 0.4200" in out
    assert f"leftover {stale} (100 bytes): stale, removed by the next run" in out

    # the work dir alone: the config comes from its run.json
    assert boom(["status", str(work), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [b["state"] for b in status["bags"]] == ["training or interrupted", "trained"]
    assert status["leftovers"][0]["stale"] is True


def test_status_errors(tmp_path, capsys):
    assert boom(["status", str(tmp_path)]) == 2
    assert "no run.json" in capsys.readouterr().err
    assert boom(["status"]) == 2
    assert "give --config RUN.yaml or a work dir" in capsys.readouterr().err
    # a store no filesystem opens: one line naming the URI, not pyarrow's traceback
    assert boom(["status", "nosuchfs://bucket/run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("boom status: error: nosuchfs://bucket/run: cannot open its filesystem")
