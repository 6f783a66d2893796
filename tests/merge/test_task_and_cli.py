"""The Ray task (file:// URIs) and both forms of `boom merge`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from boom_ray.cli import main as boom
from boom_ray.config import MergeConfig
from boom_ray.merge.request import MANIFEST, MergeRequest, MergeRequestError, ModelInput, from_mergekit
from boom_ray.merge.task import merge, submit_merge, task_memory

from .conftest import load_dir, make_model


def test_ray_task_with_file_uris(ray_session, models, tmp_path):
    req = MergeRequest("multislerp", [ModelInput(m.as_uri(), {"weight": w}) for m, w in zip(models[:3], [1, 2, 3])])
    cfg = MergeConfig(memory_budget="4MB", num_cpus=0.5, memory="64MB")
    manifest = ray_session.get(submit_merge(req, (tmp_path / "out").as_uri(), cfg))
    assert manifest["models"][0]["path"].startswith("file://")
    local = MergeRequest("multislerp", [ModelInput(str(m), {"weight": w}) for m, w in zip(models[:3], [1, 2, 3])])
    merge(local, str(tmp_path / "local"), cfg, progress=False)
    remote, here = load_dir(tmp_path / "out"), load_dir(tmp_path / "local")
    assert remote.keys() == here.keys() and all(torch.equal(remote[k], here[k]) for k in here)
    assert (tmp_path / "out" / "1_Pooling" / "config.json").is_file()


def test_task_memory_defaults_to_twice_the_budget():
    assert task_memory(MergeConfig(memory_budget="4MB")) == 8 * 10**6
    assert task_memory(MergeConfig(memory_budget="4MB", memory="64MB")) == 64 * 10**6


def _mergekit_yaml(tmp_path: Path, models: list[Path], extra: dict | None = None) -> Path:
    cfg = {"merge_method": "ties", "base_model": str(models[3]), "dtype": "bfloat16",
           "parameters": {"normalize": True, "lambda": 0.9},
           "models": [{"model": str(models[3])}] + [{"model": str(m), "parameters": {"weight": w, "density": 0.5}}
                                                     for m, w in zip(models[:3], [0.3, 0.5, 0.7])]} | (extra or {})
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_runs_a_mergekit_yaml_unchanged(models, tmp_path, capsys):
    path = _mergekit_yaml(tmp_path, models)
    out = tmp_path / "merged"
    assert boom(["merge", str(path), "--out", str(out), "--set", "memory_budget=2MB"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["method"] == "ties" and manifest["base_model"]["path"] == str(models[3])
    assert [m["parameters"] for m in manifest["models"]] == [{"weight": w, "density": 0.5} for w in (0.3, 0.5, 0.7)]
    assert {t.dtype for t in load_dir(out).values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["seed"] == 99  # files from the base model
    assert boom(["merge", str(path), "--out", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert boom(["merge", str(path), "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize("extra,message", [
    ({"slices": []}, "`slices` configs are not supported"),
    ({"models": [{"model": "/nonexistent/model"}]}, "model '/nonexistent/model' not found"),
    ({"merge_method": "nearswap"}, "unknown merge method 'nearswap'"),
    ({"dtype": "int8"}, "dtype 'int8' is not supported"),
])
def test_cli_mergekit_errors(models, tmp_path, capsys, extra, message):
    path = _mergekit_yaml(tmp_path, models, extra)
    assert boom(["merge", str(path), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_mergekit_base_listed_in_models_is_the_base(models):
    req = from_mergekit({"merge_method": "slerp", "base_model": str(models[0]), "parameters": {"t": 0.5},
                         "models": [{"model": str(models[0])}, {"model": str(models[1])}]})
    assert req.base_model == str(models[0]) and [m.path for m in req.models] == [str(models[1])]
    with pytest.raises(MergeRequestError, match="linear has no base model"):
        from_mergekit({"merge_method": "linear", "base_model": str(models[0]),
                       "models": [{"model": str(models[1]), "parameters": {"weight": 1}}]})


def test_cli_merges_a_runs_bags_and_skips_finished_merges(ray_session, tmp_path, capsys):
    work = tmp_path / "work"
    for seed, bag in enumerate(["bag50", "bag100"]):
        make_model(work / "models" / bag, seed)
    run = {"workdir": str(work), "corpus": {"path": str(tmp_path / "corpus")},
           "bagging": {"ratios": [0.5, 1.0]},
           "merge": {"memory_budget": "4MB", "num_cpus": 0.5, "memory": "64MB",
                     "merges": [{"name": "boom"},
                                {"name": "lin", "method": "linear", "weights": {"bag50": 1, "bag100": 3},
                                 "dtype": "float16"}]}}
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(run))
    assert boom(["merge", "--config", str(cfg)]) == 0
    manifest = json.loads((work / "merges" / "boom" / MANIFEST).read_text())
    assert manifest["method"] == "multislerp"
    assert [(Path(m["path"]).name, m["parameters"]["weight"]) for m in manifest["models"]] == [("bag50", 0.5), ("bag100", 1.0)]
    assert {t.dtype for t in load_dir(work / "merges" / "lin").values()} == {torch.float16}
    capsys.readouterr()
    assert boom(["merge", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out.count("up to date") == 2
    make_model(work / "models" / "bag50", 7)  # retrained bag: same shapes, new values
    assert boom(["merge", "--config", str(cfg)]) == 0  # our own stale merge is redone
    assert "stale" in capsys.readouterr().out
    again = json.loads((work / "merges" / "boom" / MANIFEST).read_text())
    assert again["models"][0]["fingerprint"] != manifest["models"][0]["fingerprint"]
    (work / "merges" / "boom" / MANIFEST).unlink()  # not ours any more: never overwritten silently
    assert boom(["merge", "--config", str(cfg)]) == 2
    assert "is not a boom-ray merge" in capsys.readouterr().err
    assert boom(["merge", "--config", str(cfg), "--force"]) == 0
