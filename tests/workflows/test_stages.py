"""The stage contract: one status rule, one result type, and the pipeline as a loop over stages
that records each result in run.json. Fake stages, no Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from boom_ray.config import STAGES, validate_config
from boom_ray.train.launch import TrainingFailed
from boom_ray.workflows.pipeline import run_stages
from boom_ray.workflows.stages import (BOOM_STAGES, DONE, FAILED, SKIPPED, Stage, StageFailed, TrainStage, Work,
                                       stage_status)
from boom_ray.workflows.status import run_status


@pytest.mark.parametrize("units,status", [
    ([], SKIPPED),  # nothing to do: nothing was redone
    ([SKIPPED, SKIPPED], SKIPPED),
    ([SKIPPED, DONE], DONE),
    ([DONE, DONE], DONE),
    ([DONE, FAILED, SKIPPED], FAILED),
    ([SKIPPED, FAILED], FAILED),
])
def test_one_rule_decides_a_stages_status(units, status):
    assert stage_status(units) == status


def test_an_unknown_unit_state_is_refused():
    with pytest.raises(ValueError, match="trained"):
        stage_status([DONE, "trained"])


def test_the_pipelines_stages_are_the_configs():
    assert tuple(stage.name for stage in BOOM_STAGES) == tuple(STAGES)  # what `boom run --from` accepts


class Fake(Stage):
    """A stage whose work reports the given units, or raises `crash`; it records what it saw."""

    def __init__(self, name: str, units: dict[str, str] | None = None, crash: BaseException | None = None,
                 seen: list | None = None):
        self.name, self.units, self.crash, self.seen = name, units or {"x": DONE}, crash, seen

    def work(self, cfg, force: bool) -> Work:
        if self.seen is not None:  # run.json as the previous stages left it, and whether forced
            path = _run_json(cfg)
            self.seen.append((self.name, force, json.loads(path.read_text()) if path.exists() else None))
        if self.crash is not None:
            raise self.crash
        return Work(dict(self.units), {"units": sorted(self.units)})


def _run_json(cfg) -> Path:
    return Path(cfg.workdir) / "run.json"


@pytest.fixture
def cfg(tmp_path):
    return validate_config({"workdir": str(tmp_path / "work"), "corpus": {"path": str(tmp_path / "corpus")},
                            "bagging": {"ratios": [0.5, 1.0]}})


def test_a_stage_result_names_failed_units_and_carries_the_error(cfg):
    result = Fake("merge", {"a": DONE, "b": FAILED, "c": FAILED}).run(cfg)
    assert result.status == FAILED and result.seconds >= 0
    assert result.detail == {"units": ["a", "b", "c"], "failed": ["b", "c"]}
    assert isinstance(result.error, StageFailed) and str(result.error) == "stage merge failed for b, c"
    skipped = Fake("merge", {"a": SKIPPED}).run(cfg)
    assert (skipped.status, skipped.detail, skipped.error) == (SKIPPED, {"units": ["a"]}, None)
    # the train stage keeps its own error and message: `boom run` prints it and exits 2, as always
    error = TrainStage().failure(["bag20"])
    assert isinstance(error, TrainingFailed) and str(error).startswith("training failed for bag20; the other bags")


def test_a_crash_is_a_failed_result_and_an_interrupt_passes_through(cfg):
    crash = RuntimeError("disk full\nmore")
    result = Fake("bag", crash=crash).run(cfg)
    assert (result.status, result.detail, result.error) == (FAILED, {"error": "RuntimeError: disk full"}, crash)
    with pytest.raises(KeyboardInterrupt):
        Fake("bag", crash=KeyboardInterrupt()).run(cfg)


def test_the_pipeline_runs_its_stages_in_order_and_writes_run_json_after_each(cfg, capsys):
    seen: list = []
    stages = [Fake("one", {"a": SKIPPED}, seen=seen), Fake("two", seen=seen), Fake("three", seen=seen)]
    manifest = run_stages(cfg, stages, from_stage="two")
    assert [(name, force) for name, force, _ in seen] == [("one", False), ("two", True), ("three", True)]
    assert seen[0][2] is None  # nothing written before the first stage ends
    assert seen[1][2]["stages"]["one"]["status"] == "skipped" and seen[1][2]["stages"]["two"]["status"] == "pending"
    assert seen[2][2]["stages"]["two"]["status"] == "done"
    run = json.loads(_run_json(cfg).read_text())
    assert run == json.loads(json.dumps(manifest)) and run["from_stage"] == "two" and run["finished"]
    assert run["config"]["workdir"] == cfg.workdir and run["versions"]["python"]
    assert [(s["name"], s["status"], s["detail"]) for s in run["stages"].values()] == [
        ("one", "skipped", {"units": ["a"]}), ("two", "done", {"units": ["x"]}), ("three", "done", {"units": ["x"]})]
    assert all(isinstance(s["seconds"], float) and s["started"] for s in run["stages"].values())
    assert "one: skipped 0s | two: done 0s | three: done 0s" in capsys.readouterr().out


def test_a_failed_stage_is_recorded_and_stops_the_pipeline(cfg):
    seen: list = []
    stages = [Fake("bag", seen=seen), Fake("train", {"bag50": FAILED, "bag100": DONE}, seen=seen),
              Fake("merge", seen=seen)]
    with pytest.raises(StageFailed, match="stage train failed for bag50"):
        run_stages(cfg, stages)
    assert [name for name, _, _ in seen] == ["bag", "train"]  # merge never ran
    run = json.loads(_run_json(cfg).read_text())
    assert {name: s["status"] for name, s in run["stages"].items()} == {
        "bag": "done", "train": "failed", "merge": "pending"}
    assert run["stages"]["train"]["detail"]["failed"] == ["bag50"] and run["finished"]
    # `boom status` reads the failed units from run.json
    bags = {b["bag"]: b["state"] for b in run_status(cfg)["bags"]}
    assert bags == {"bag50": "failed", "bag100": "not started"}


@pytest.mark.parametrize("crash", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_crash_or_an_interrupt_is_recorded_as_failed_and_raised(cfg, crash):
    with pytest.raises(type(crash)) as raised:
        run_stages(cfg, [Fake("bag"), Fake("train", crash=crash), Fake("merge")])
    assert raised.value is crash  # the stage's own exception: its traceback and message, not a wrapper
    stages = json.loads(_run_json(cfg).read_text())["stages"]
    assert [s["status"] for s in stages.values()] == ["done", "failed", "pending"]
    assert isinstance(stages["train"]["seconds"], float)


def test_an_unknown_from_stage_is_refused_before_anything_runs(cfg):
    seen: list = []
    with pytest.raises(ValueError, match="unknown stage 'nope'; stages are one, two"):
        run_stages(cfg, [Fake("one", seen=seen), Fake("two", seen=seen)], from_stage="nope")
    assert seen == [] and not _run_json(cfg).exists()
