"""The stage contract: every stage of `boom run` has the same life cycle and the same result.

A stage's `work` does its job and reports the state of each unit of work it owns (a bag, a bag's
training, a merge, a model's evaluation, the report) as skipped (already up to date), done or
failed. `stage_status` turns those states into the stage's status by one rule, so no stage decides
"skipped" its own way, and `Stage.run` wraps every stage the same way: timing, that rule, a crash
turned into a failed result. The pipeline (workflows/pipeline.py) is then a loop over a list of
stages. The stage functions themselves (run_bagging, train_bags, run_merges, evaluate_run,
write_report) stay plain functions for notebooks and jobs; the classes here only adapt them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from boom_ray.config import BoomConfig
from boom_ray.corpus.bag_stage import format_summary, run_bagging
from boom_ray.errors import BoomError
from boom_ray.eval.report import evaluate_run, write_report
from boom_ray.merge.stage import describe, run_merges, run_requests
from boom_ray.train.launch import TrainingFailed, summary_table, train_bags

SKIPPED, DONE, FAILED = "skipped", "done", "failed"
UNIT_STATES = (SKIPPED, DONE, FAILED)


def stage_status(units: Iterable[str]) -> str:
    """The one rule: any unit failed -> failed; every unit up to date (or nothing to do) ->
    skipped; else done. Pure."""
    states = list(units)
    unknown = sorted(set(states) - set(UNIT_STATES))
    if unknown:
        raise ValueError(f"a unit's state is one of {', '.join(UNIT_STATES)}, got {', '.join(unknown)}")
    if FAILED in states:
        return FAILED
    return SKIPPED if all(state == SKIPPED for state in states) else DONE


@dataclass(frozen=True)
class Work:
    """What a stage's work reports: each unit's state (SKIPPED / DONE / FAILED) and the detail
    that run.json keeps for the stage."""

    units: dict[str, str]
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageResult:
    """What every stage returns, and what run.json records for it (status, seconds, detail).

    A failed stage's detail names its failed units under "failed" (what `boom status` reads), or
    its crash under "error"; `error` is the exception the pipeline raises once the result is on
    disk, so a failure still stops the run with the message and exit code it always had."""

    status: str
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = field(default=None, repr=False, compare=False)


class StageFailed(BoomError):
    """Units of a stage failed; the message names them."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`TypeName: first line of the message`, at most `limit` characters."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 2)


class Stage:
    """One stage: a subclass sets `name` and writes `work` (and `failure` where its error has a
    better message); `run` is the life cycle every stage shares."""

    name: str = ""

    def work(self, cfg: BoomConfig, force: bool) -> Work:
        raise NotImplementedError

    def failure(self, failed: list[str]) -> BoomError:
        """The error a failed unit ends the run with."""
        return StageFailed(f"stage {self.name} failed for {', '.join(failed)}")

    def run(self, cfg: BoomConfig, force: bool = False) -> StageResult:
        """Do the work (`force`: redo units that are up to date) and decide the status by the
        one rule. An exception becomes a failed result carrying it; an interrupt passes through."""
        start = time.perf_counter()
        try:
            work = self.work(cfg, force)
        except Exception as exc:
            return StageResult(FAILED, _since(start), {"error": one_line(exc)}, exc)
        status, detail, error = stage_status(work.units.values()), dict(work.detail), None
        if status == FAILED:
            detail["failed"] = [unit for unit, state in work.units.items() if state == FAILED]
            error = self.failure(detail["failed"])
        return StageResult(status, _since(start), detail, error)


class BagStage(Stage):
    """Validate the corpus and write the bags; a bag whose manifest matches is up to date."""

    name = "bag"

    def work(self, cfg: BoomConfig, force: bool) -> Work:
        outcome = run_bagging(cfg, force=force)
        print(format_summary(cfg, outcome))
        return Work({bag: SKIPPED if state == "up to date" else DONE for bag, state in outcome.bags.items()},
                    {"bags": outcome.bags, "rows_read": outcome.read, "rows_quarantined": outcome.quarantined})


TRAINED = {"trained": DONE, "skipped": SKIPPED, "failed": FAILED}
"""BagResult.status -> unit state."""


class TrainStage(Stage):
    """Train every bag; a bag whose export matches its request is up to date. A failed bag fails
    the stage, after the other bags are exported."""

    name = "train"

    def work(self, cfg: BoomConfig, force: bool) -> Work:
        results = train_bags(cfg, force=force)
        print(summary_table(results), flush=True)
        return Work({r.bag: TRAINED[r.status] for r in results},
                    {r.bag: {"status": r.status, "steps": r.steps, "tokens": r.tokens, "final_loss": r.final_loss}
                     for r in results})

    def failure(self, failed: list[str]) -> BoomError:
        return TrainingFailed(f"training failed for {', '.join(failed)}; the other bags are exported, "
                              f"rerun `boom run` to retry only the failed ones")


class MergeStage(Stage):
    """Every merge of the run's merge section; one whose manifest matches is up to date."""

    name = "merge"

    def work(self, cfg: BoomConfig, force: bool) -> Work:
        manifests = run_merges(cfg, force=force)
        outs = [out for out, _ in run_requests(cfg)]
        for out, manifest in zip(outs, manifests):
            print(describe(out, manifest))
        return Work({out: SKIPPED if m.get("skipped") else DONE for out, m in zip(outs, manifests)},
                    {out: m.get("method") for out, m in zip(outs, manifests)})


class EvalStage(Stage):
    """Every model of the run on every suite. evaluate_run does not say which results came from
    its cache, so each model counts as done."""

    name = "eval"

    def work(self, cfg: BoomConfig, force: bool) -> Work:
        results = evaluate_run(cfg, force=force)
        return Work({model: DONE for model in results}, {"models": sorted(results)})


class ReportStage(Stage):
    """report.md + report.png from the eval stage's cached results: it only renders."""

    name = "report"

    def work(self, cfg: BoomConfig, force: bool) -> Work:
        out = write_report(cfg)
        print(out["markdown"])
        print(f"report: {out['report_md']} and {out['report_png']}")
        return Work({"report": DONE}, {"report_md": out["report_md"], "report_png": out["report_png"]})


BOOM_STAGES: tuple[Stage, ...] = (BagStage(), TrainStage(), MergeStage(), EvalStage(), ReportStage())
"""`boom run`'s stages, in order; their names are config.STAGES (what `--from` accepts)."""
