"""The metrics record and its sinks: the step line reads as it always did, a metric added to the
record reaches the console's board, the bag's log file and Ray Train without another edit, and a
record due a checkpoint carries one to Ray Train. Skipped optimizer steps show on the console only
when there are some, and a bag none of whose steps applied is refused."""

from __future__ import annotations

import io
import os

import pytest

from boom_ray.errors import BoomError
from boom_ray.train import metrics
from boom_ray.train.checkpoint import RayReport
from boom_ray.train.export import NothingTrainedError, check_steps_applied
from boom_ray.train.launch import BagResult, summary_table
from boom_ray.train.metrics import FanOut, log_line
from boom_ray.train.progress import TRAINING, BagProgress, LiveView, apply, create_board, render_lines

RECORD = {"step": 2, "total_steps": 6, "loss": 1.0, "lr": 5e-5, "tokens": 1234, "tokens_per_s": 567.4}


def test_the_step_line_reads_as_before_and_new_metrics_follow_it():
    assert log_line("bag20", RECORD) == "[bag20] step 2/6 loss 1.0000 lr 5e-05 tokens 1,234 (567 tok/s in the loop)"
    full = {**RECORD, "grad_norm": 0.8123, "skipped_steps": 0, "peak_memory_gib": 1.234, "eval_ndcg": 0.43219}
    assert log_line("bag20", full) == ("[bag20] step 2/6 loss 1.0000 lr 5e-05 tokens 1,234 (567 tok/s in the loop) "
                                       "grad norm 0.812 skipped steps 0 peak memory 1.23 GiB eval_ndcg 0.4322")


def test_the_console_line_shows_what_its_table_formats(monkeypatch):
    p = apply(BagProgress("bag20"), {**RECORD, "grad_norm": 0.5}, 0.0)
    assert p.state == TRAINING and p.metrics["grad_norm"] == 0.5  # the board keeps every metric
    assert render_lines([p], 0.0) == ["bag20  training   step 2/6  loss 1.0000  567 tok/s"]
    monkeypatch.setitem(metrics.CONSOLE, "grad_norm", "|g| {:.2f}")  # showing a metric: one line
    assert render_lines([p], 0.0) == ["bag20  training   step 2/6  loss 1.0000  567 tok/s  |g| 0.50"]


def test_skipped_optimizer_steps_reach_the_console_line_and_the_summary_only_when_there_are_some():
    ok = apply(BagProgress("bag20"), {**RECORD, "skipped_steps": 0}, 0.0)
    assert render_lines([ok], 0.0) == ["bag20  training   step 2/6  loss 1.0000  567 tok/s"]
    bad = apply(ok, {"skipped_steps": 2}, 0.0)
    assert render_lines([bad], 0.0) == ["bag20  training   step 2/6  loss 1.0000  567 tok/s  2 steps skipped"]
    table = summary_table([BagResult("bag20", "trained", 30, 1000, 0.5, 9.0, skipped_steps=3),
                           BagResult("bag40", "trained", 30, 1000, 0.5, 9.0, skipped_steps=0),
                           BagResult("bag60", "skipped", 30, 1000, 0.5, 9.0)])  # an export older than the count
    assert [ln for ln in table.splitlines() if ln.startswith("  ")] == [
        "  bag20: 3 of 30 optimizer steps skipped (inf/NaN gradients)"]


def test_a_bag_whose_every_optimizer_step_was_skipped_fails_in_one_line_naming_it():
    check_steps_applied("bag20", 30, 29)  # one step applied: trained
    check_steps_applied("bag20", 0, 0)  # nothing to do (resumed at its last step): not this error
    with pytest.raises(NothingTrainedError) as err:
        check_steps_applied("bag20", 30, 30)
    assert isinstance(err.value, BoomError) and len(str(err.value).splitlines()) == 1
    assert str(err.value) == "bag20: all 30 optimizer steps were skipped (inf/NaN gradients): nothing trained, " \
                             "no export written"


def test_the_fan_out_drops_missing_values_and_closes_every_sink():
    seen, closed = [], []

    class Recorder(metrics.MetricsSink):
        def log(self, record):
            seen.append(record)

        def close(self):
            closed.append(True)

    sink = FanOut([Recorder(), Recorder()])
    sink.log({"step": 1, "lr": None})
    sink.close()
    assert seen == [{"step": 1}, {"step": 1}] and closed == [True, True]


def test_ray_train_gets_the_records_due_a_checkpoint_with_the_folder_each_saved():
    reports = []

    def report(record, checkpoint=None):  # what ray.train.report receives (the folder lives until it returns)
        files = sorted(os.listdir(checkpoint.path)) if checkpoint else None
        reports.append((record, files))

    def save(folder):
        open(os.path.join(folder, "state.json"), "w").close()

    sink = RayReport(due=lambda step: step % 4 == 0, save=save, report=report)
    for step in (2, 4, 6, 8):
        sink.log({"step": step, "loss": 1 / step})
    assert reports == [({"step": 4, "loss": 0.25}, ["state.json"]), ({"step": 8, "loss": 0.125}, ["state.json"])]
    RayReport(due=lambda step: True, report=report).log({"step": 1})  # no save: metrics alone
    assert reports[-1] == ({"step": 1}, None)


def _rank0_logs(board_name: str, bag: str, record: dict) -> list:
    """What rank 0 of a training worker does with one record: the loop's sink, with Ray Train's
    report recorded instead of sent (there is no Train run here)."""
    from boom_ray.train import progress

    progress.connect(board_name, bag)
    reported = []
    sink = progress.worker_sink(0, RayReport(due=lambda step: True,
                                             report=lambda record, checkpoint=None: reported.append(record)))
    sink.log(record)
    sink.close()
    progress.flush()
    return reported


def test_a_new_metric_reaches_the_board_the_log_file_and_ray_train(ray_session, tmp_path):
    record = {**RECORD, "eval_ndcg": 0.43219}  # a metric no format table knows yet
    board, name = create_board(["bag20"])
    out = io.StringIO()
    view = LiveView(board, str(tmp_path / "logs"), stream=out, tty=False, board_name=name)
    try:
        reported = ray_session.get(ray_session.remote(num_cpus=0)(_rank0_logs).remote(name, "bag20", record))
        view.refresh(final=True)
        [state], _ = ray_session.get(board.poll.remote())
    finally:
        ray_session.kill(board)
    assert reported == [record]  # Ray Train
    assert state.metrics["eval_ndcg"] == 0.43219  # the console's board
    assert out.getvalue().splitlines() == ["bag20  training   step 2/6  loss 1.0000  567 tok/s"]
    [line] = (tmp_path / "logs" / "train-bag20.log").read_text().splitlines()  # the log file
    assert line.split(" ", 2)[2] == log_line("bag20", record) and line.endswith(" eval_ndcg 0.4322")
