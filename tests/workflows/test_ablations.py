"""Ablation grids: validation that names the cell, and the smoke grid end to end on the 2-CPU Ray
(a grouped-bag cell merged with data-size weights, a two-stage cell; Matryoshka training,
truncated evaluation and task filters on)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from boom_ray.workflows.ablations import grid_table, load_grid
from boom_ray.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "jobs" / "configs" / "paper-ablations-smoke.yaml"


def test_cells_derive_from_the_base_run_in_their_own_workdirs(tmp_path):
    grid = load_grid(REPO / "jobs" / "configs" / "paper-ablations.yaml", overrides={"workdir": str(tmp_path)})
    assert list(grid.cells) == ["boom", "per_task", "per_type", "per_cluster", "sequential", "two_stage"]
    assert grid.cells["boom"].workdir == str(tmp_path / "boom")
    assert grid.cells["sequential"].train.schedule == "sequential" and grid.cells["sequential"].merge.merges == []
    assert grid.cells["per_type"].bagging.groups["paraphrase"] == ["synonym_paraphrase"]
    assert grid.cells["per_task"].train.learning_rate == grid.run.train.learning_rate == 3e-5
    assert list(load_grid(SMOKE, ["two_stage"]).cells) == ["two_stage"]


@pytest.mark.parametrize("text,message", [
    ("run: {workdir: w, corpus: {path: c}}\ncells: {a: {train.schedul: x}}\n", r"(?s)cells\.a\).*train\.schedul: unknown key"),
    ("run: {workdir: w, corpus: {path: c}}\ncells: {a: {workdir: x}}\n", "do not set it"),
    ("run: {workdir: w, corpus: {path: c}}\ncells: {a/b: {}}\n", "cell name"),
    ("run: {workdir: w, corpus: {path: c}}\n", "exactly `run`"),
    ("run: {workdir: w, corpus: {path: c}}\ncells: {a: {repeats: 2}}\n", r"cells\.a: repeats 2: a grid runs each cell once"),
])
def test_bad_grids_name_the_problem(tmp_path, text, message):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_grid(path)


def test_unknown_cells_are_refused():
    with pytest.raises(ConfigError, match="unknown cell"):
        load_grid(SMOKE, ["nope"])


def test_grid_table_lists_every_model_of_every_cell():
    table = grid_table({"a": {"bag100": {"id_mean": 0.5, "ood_mean": None}}, "b": {"merge-m": {"id_mean": 0.25}}})
    assert table.splitlines()[2:] == ["| a | bag100 | 0.5000 | - |", "| b | merge-m | 0.2500 | - |"]


@pytest.mark.slow
@pytest.mark.heavy
def test_smoke_grid_runs_end_to_end(ray_session, tmp_path):
    from boom_ray.workflows.ablations import run_grid

    start = time.monotonic()
    out = run_grid(load_grid(SMOKE, overrides={"workdir": str(tmp_path)}))
    elapsed = time.monotonic() - start
    per_type = tmp_path / "per_type"
    plan = json.loads((per_type / "bags" / "plan.json").read_text())
    assert plan["bags"] == {"retrieval": ["definition_retrieval"],
                            "other": ["lexname_classification", "synonym_paraphrase"]}
    manifest = json.loads((per_type / "bags" / "other" / "manifest.json").read_text())
    assert manifest["left_out"] == {"reverse_dictionary": "corpus.exclude 'reverse_dictionary'"}
    merge = json.loads((per_type / "merges" / "multislerp" / "boom_merge.json").read_text())
    assert sorted(m["parameters"]["weight"] for m in merge["models"]) == pytest.approx([1 / 3, 2 / 3])
    st_cfg = json.loads((per_type / "models" / "other" / "config_sentence_transformers.json").read_text())
    assert st_cfg["matryoshka_dims"] == [128, 384]
    cached = json.loads((tmp_path / "two_stage" / "eval" / "bag100.json").read_text())["results"]
    assert set(cached["by_dim"]) == {"128"} and cached["suites"][0]["dims"]["128"]["main"] is not None
    table = (tmp_path / "ablations.md").read_text()
    assert "| per_type | merge-multislerp |" in table and "| two_stage | bag100 |" in table
    print(f"smoke grid: {elapsed:.0f} s")
