"""The training stage's live view: the renderer as a pure function, and a real ProgressBoard
actor on the session Ray fed by a Ray task and drawn by the driver-side view."""

from __future__ import annotations

import io
import os

from boom_ray.train.progress import (EXPORTED, FAILED, TRAINING, WAITING, BagProgress, LiveView, apply,
                                     create_board, eta_s, render_lines)


def test_lines_show_state_step_loss_rate_and_eta_aligned():
    t0 = 1000.0
    a = apply(BagProgress("bag20"), {"total_steps": 100}, t0)
    assert a.state == TRAINING  # a worker's first report: no longer waiting for resources
    a = apply(a, {"step": 10, "loss": 2.5, "tokens_per_s": 1234.4}, t0 + 1)
    a = apply(a, {"step": 30, "loss": 1.25, "tokens_per_s": 1500.0, "lr": 1e-4}, t0 + 21)  # 20 steps in 20 s
    assert eta_s(a, t0 + 21) == 70.0
    waiting = BagProgress("bag100")
    lines = render_lines([a, waiting], now=t0 + 21)
    assert lines[0] == "bag20   training   step 30/100  loss 1.2500  1,500 tok/s  ETA 1:10"
    assert lines[1] == "bag100  waiting for resources"


def test_finished_bags_keep_their_state_and_lose_the_eta():
    p = apply(BagProgress("bag20", state=TRAINING, metrics={"step": 5, "total_steps": 10}, first=(0.0, 0)),
              {"state": EXPORTED}, 5.0)
    assert apply(p, {"step": 6}, 6.0).state == EXPORTED  # a late step report does not reopen it
    assert eta_s(p, 6.0) is None
    assert render_lines([p], 6.0) == ["bag20  exported   step 5/10"]
    assert render_lines([BagProgress("b", state=FAILED)], 0.0) == ["b  failed"]


def test_a_restart_measures_the_rate_from_its_own_first_step():
    p = apply(BagProgress("b"), {"step": 40, "total_steps": 100}, 0.0)
    p = apply(p, {"step": 50}, 10.0)
    p = apply(p, {"step": 20}, 100.0)  # restarted from an older checkpoint
    assert p.first == (100.0, 20) and eta_s(p, 100.0) is None
    p = apply(p, {"step": 30}, 110.0)
    assert eta_s(p, 110.0) == 70.0


def _train_like(board_name: str, bag: str, steps: int) -> int:
    """What a bag's rank-0 worker does: connect by name, emit at each log step."""
    from boom_ray.train import progress

    progress.connect(board_name, bag)
    progress.emit(f"[{bag}] 1,000 parameters", total_steps=steps)
    sink = progress.worker_sink(0)  # rank 0: the console and the log file
    for step in range(1, steps + 1):
        sink.log({"step": step, "total_steps": steps, "loss": 1 / step, "tokens_per_s": 100.0 * step})
    progress.emit(f"[{bag}] resumed from step 2 (restart 1)", notice=True)
    progress.flush()
    return steps


def test_a_board_fed_by_a_ray_task_is_drawn_by_the_view(ray_session, tmp_path):
    board, name = create_board(["bag20", "bag100"])
    out = io.StringIO()
    view = LiveView(board, str(tmp_path / "logs"), stream=out, tty=False, board_name=name)
    try:
        view.refresh()
        assert out.getvalue().splitlines() == ["bag20   waiting for resources", "bag100  waiting for resources"]
        task = ray_session.remote(num_cpus=0)(_train_like)
        assert ray_session.get(task.remote(name, "bag20", 4)) == 4
        view.set_state("bag20", EXPORTED)
        view.refresh(final=True)
    finally:
        ray_session.kill(board)
    lines = out.getvalue().splitlines()
    assert lines[2] == "[bag20] resumed from step 2 (restart 1)"  # a notice: one line
    assert lines[3] == "bag20   exported   step 4/4  loss 0.2500  400 tok/s"
    assert len(lines) == 4  # bag100 did not change: not printed again
    log = (tmp_path / "logs" / "train-bag20.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in log][:3] == [
        "[bag20] 1,000 parameters", "[bag20] step 1/4 loss 1.0000 (100 tok/s in the loop)",
        "[bag20] step 2/4 loss 0.5000 (200 tok/s in the loop)"]
    assert len(log) == 6 and not os.path.exists(tmp_path / "logs" / "train-bag100.log")


def test_on_a_tty_the_block_is_redrawn_in_place(ray_session):
    board, name = create_board(["b"])
    out = io.StringIO()
    view = LiveView(board, None, stream=out, tty=True, board_name=name)
    try:
        view.refresh()
        view.set_state("b", WAITING, total=9)
        view.refresh()
        view.notice("b", "training (run b-123)")
    finally:
        ray_session.kill(board)
    text = out.getvalue()
    assert text.count("\x1b[1F\x1b[J") == 2  # the one-line block erased before each redraw / notice
    assert text.endswith("\x1b[1F\x1b[J[b] training (run b-123)\n")


def test_a_worker_without_its_board_prints_instead(ray_session):
    from boom_ray.train import progress

    progress.connect("progress-gone", "b")
    assert progress.emit("[b] step 1/2") is False


def test_verbose_flag_of_every_ray_command_sets_ray_verbose(tmp_path):
    from boom_ray.cli import build_parser
    from boom_ray.cli.common import config_from_args, overrides_from_args

    (tmp_path / "run.yaml").write_text(f"workdir: {tmp_path}\ncorpus: {{path: {tmp_path}}}\n")
    for command in ("bag", "train", "merge", "sweep", "report", "run", "update"):
        quiet = build_parser().parse_args([command, "--config", str(tmp_path / "run.yaml")])
        loud = build_parser().parse_args([command, "--config", str(tmp_path / "run.yaml"), "--verbose"])
        assert (config_from_args(quiet).ray.verbose, config_from_args(loud).ray.verbose) == (False, True), command
    grid = build_parser().parse_args(["ablations", "--grid", "g.yaml", "--verbose", "--set", "train.max_steps=2"])
    assert overrides_from_args(grid) == {"train.max_steps": 2, "ray.verbose": True}


def test_ray_data_driver_lines_stay_off_the_console_unless_verbose(monkeypatch):
    import logging

    import ray.data

    from boom_ray.runtime import ray_session as ray_runtime

    ctx = ray.data.DataContext.get_current()
    console = [h for h in logging.getLogger("ray.data").handlers
               if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    assert console, "Ray Data configures a console handler on its logger"
    levels, bars = [h.level for h in console], ctx.enable_progress_bars
    try:
        for h in console:
            h.setLevel(logging.INFO)
        monkeypatch.setitem(ray_runtime._state, "verbose", True)
        ctx.enable_progress_bars = True
        assert ray_runtime.own_progress_only(ctx) is True and ctx.enable_progress_bars is False
        assert [h.level for h in console] == [logging.INFO] * len(console)  # --verbose: as Ray has it
        monkeypatch.setitem(ray_runtime._state, "verbose", False)
        ray_runtime.own_progress_only(ctx)
        assert [h.level for h in console] == [logging.ERROR] * len(console)
    finally:
        for h, level in zip(console, levels):
            h.setLevel(level)
        ctx.enable_progress_bars = bars


def test_a_failing_bag_is_one_line_on_the_console_and_the_whole_error_in_its_log(ray_session, tmp_path, capsys):
    from boom_ray.config import BoomConfig
    from boom_ray.train.launch import train_bags
    from tests.train.bagtools import run_config

    cfg = BoomConfig.model_validate(run_config(tmp_path, tmp_path / "no-model", ["bag60"]))
    [result] = train_bags(cfg)  # the bag was never written: fails before any trainer starts
    out, err = capsys.readouterr()
    assert result.status == "failed"
    assert out.splitlines()[0].startswith(f"logs: {tmp_path / 'logs'} (Ray's own"), out
    # "waiting" only where a poll came before the failure; each state once either way
    assert out.splitlines()[1:] in (["bag60  failed"], ["bag60  waiting for resources", "bag60  failed"]), out
    [failed] = [line for line in err.splitlines() if "FAILED" in line]
    assert failed.startswith("[bag60] FAILED: ") and "boom bag" in failed
    assert failed.endswith(f"(full error: {tmp_path / 'logs'}/train-bag60.log)")
    assert "[bag60] FAILED: " in (tmp_path / "logs" / "train-bag60.log").read_text()
