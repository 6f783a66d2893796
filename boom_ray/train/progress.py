"""The training stage's console: one live line per bag, fed by a small Ray actor.

Why an actor: Ray forwards every worker's stdout to the driver (twice when a Train controller
relays it too) and mixes it with Ray's own logs, so printing from the workers cannot give one
readable view. Instead each bag's rank-0 worker sends its metrics records (:mod:`boom_ray.train.metrics`,
through the :class:`ConsoleBoard` and :class:`LogLines` sinks) and its messages to a named
:class:`ProgressBoard` (0 CPU, fire-and-forget calls at the existing log cadence), the driver
polls it from a thread and draws one line per bag: redrawn in place on a TTY, plain periodic
lines elsewhere (jobs, CI, log files). The messages the board receives are also appended to
``<logs>/train-<bag>.log``, so nothing is lost; `--verbose` skips all this and streams as before.

The renderer (:func:`render_lines`) is a pure function of the bags' states, tested directly; it
shows the metrics that :data:`boom_ray.train.metrics.CONSOLE` formats, the board keeps them all.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import IO, Any

from boom_ray.train.metrics import FanOut, MetricsSink, Record, console_pieces, log_line, step_piece

NAMESPACE = "boom"
"""Namespace of the board: Train workers find it by name whatever job namespace they run in."""

WAITING, TRAINING, EXPORTED, FAILED, SKIPPED = "waiting", "training", "exported", "failed", "skipped"
FINISHED = (EXPORTED, FAILED, SKIPPED)
LABELS = {WAITING: "waiting for resources", TRAINING: "training", EXPORTED: "exported",
          FAILED: "failed", SKIPPED: "skipped (export up to date)"}


@dataclass
class BagProgress:
    """What the console knows about one bag."""

    bag: str
    state: str = WAITING
    metrics: dict[str, float] = field(default_factory=dict)
    """The latest value of every metric the bag reported (records merged key by key)."""
    first: tuple[float, int] | None = None
    """(time, step) of this attempt's first step report: the ETA's rate is measured from it, so
    model loading and a restart's catch-up do not count as training speed."""
    updated: float | None = None

    @property
    def step(self) -> int:
        return self.metrics.get("step", 0)

    @property
    def total(self) -> int | None:
        return self.metrics.get("total_steps")


def apply(p: BagProgress, fields: dict[str, Any], now: float) -> BagProgress:
    """`p` with an update merged in: `state`, and any metrics (whatever their names). A worker's
    first report moves a waiting bag to training; a finished bag (exported, failed, skipped) stays
    finished whatever arrives late."""
    metrics = {k: v for k, v in fields.items() if v is not None}
    state = metrics.pop("state", None)
    if p.state in FINISHED and state is None:
        return p
    new = dataclasses.replace(p, state=state or (TRAINING if p.state == WAITING else p.state),
                              metrics={**p.metrics, **metrics}, updated=now)
    if "step" in metrics and (p.first is None or metrics["step"] < p.first[1]):
        new.first = (now, metrics["step"])
    return new


def eta_s(p: BagProgress, now: float) -> float | None:
    """Seconds left at the rate since the attempt's first step report; None before a rate exists."""
    if p.state != TRAINING or p.first is None or p.total is None or p.step <= p.first[1]:
        return None
    rate = (p.step - p.first[1]) / max(now - p.first[0], 1e-9)
    return (p.total - p.step) / rate


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def render_line(p: BagProgress, now: float, width: int) -> str:
    """One bag's line: name, state, step/total, the metrics of :data:`~boom_ray.train.metrics.CONSOLE`
    (loss, tokens/s, skipped optimizer steps if any), ETA (what is known so far)."""
    parts = [f"{p.bag:<{width}}", f"{LABELS.get(p.state, p.state):<9}"]
    if p.total is not None or p.step:
        parts.append(step_piece(p.metrics))
    parts += console_pieces(p.metrics)
    eta = eta_s(p, now)
    if eta is not None:
        parts.append(f"ETA {_duration(eta)}")
    return "  ".join(parts).rstrip()


def render_lines(states: list[BagProgress], now: float) -> list[str]:
    """The live view: one line per bag, names aligned."""
    width = max((len(p.bag) for p in states), default=0)
    return [render_line(p, now, width) for p in states]


class ProgressBoard:
    """Ray actor (see :func:`create_board`): the bags' states and the messages not yet polled."""

    def __init__(self, bags: list[str]):
        self.bags = {b: BagProgress(b) for b in bags}
        self.messages: list[tuple[str, float, str, bool]] = []

    def update(self, bag: str, message: str | None = None, notice: bool = False, **fields: Any) -> None:
        """`fields`: `state` and metrics, merged into the bag's state (:func:`apply`); `message`:
        a line for the bag's log file (`notice`: for the console too)."""
        now = time.time()
        self.bags[bag] = apply(self.bags.get(bag, BagProgress(bag)), fields, now)
        if message:
            self.messages.append((bag, now, message, notice))

    def poll(self) -> tuple[list[BagProgress], list[tuple[str, float, str, bool]]]:
        messages, self.messages = self.messages, []
        return list(self.bags.values()), messages


def create_board(bags: list[str]):
    """A fresh named board for one training stage; returns (handle, name)."""
    import ray  # lazy: ray, kept off the import path of boom plan

    name = f"progress-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    actor = ray.remote(num_cpus=0)(ProgressBoard)
    return actor.options(name=name, namespace=NAMESPACE).remote(bags), name


# --------------------------------------------------------------------------- worker side
_board: Any = None
_bag: str = ""


def connect(name: str | None, bag: str) -> None:
    """Called once per worker with the board's name from the job dict (None: print instead)."""
    global _board, _bag
    _bag = bag
    if not name:
        _board = None
        return
    import ray  # lazy: ray, kept off the import path of boom plan

    try:
        _board = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:  # the driver (and its board) went away: print rather than fail the bag
        _board = None


def emit(message: str | None, notice: bool = False, **fields: Any) -> bool:
    """Send this worker's bag a message and/or metrics; False where no board is connected."""
    if _board is None:
        return False
    _board.update.remote(_bag, message, notice, **fields)  # fire and forget: never waits on the driver
    return True


def flush() -> None:
    """Wait until the board has taken every message this worker sent (calls from one caller run
    in order): emit never waits, so a process about to end and hand over to the driver would
    otherwise race its own last messages."""
    if _board is not None:
        import ray  # lazy: ray, kept off the import path of boom plan

        ray.get(_board.update.remote(_bag))


class ConsoleBoard(MetricsSink):
    """Sink: a record's metrics to the driver's live line of this worker's bag (nothing without
    a board: --verbose has no live view)."""

    def log(self, record: Record) -> None:
        emit(None, **record)


class LogLines(MetricsSink):
    """Sink: the record as a step line (:func:`~boom_ray.train.metrics.log_line`) in the bag's log
    file, which the driver appends from the board; printed instead where there is no board."""

    def log(self, record: Record) -> None:
        line = log_line(_bag, record)
        if not emit(line):
            print(line, flush=True)


def worker_sink(rank: int, *others: MetricsSink) -> FanOut:
    """The one sink of a training worker: rank 0 feeds the console and the log file, then every
    rank feeds `others` (Ray Train needs every worker's report; a tracker would join rank 0's)."""
    return FanOut([ConsoleBoard(), LogLines(), *others] if rank == 0 else others)


# --------------------------------------------------------------------------- driver side
class LiveView:
    """Polls a board from a thread and draws it: in place on a TTY, else a line per bag every
    `period` seconds and at each state change. Driver-side notices go through :meth:`notice` so
    they print once, above the live block, and land in the bag's log file too."""

    def __init__(self, board, log_dir: str | None, stream: IO[str] | None = None, tty: bool | None = None,
                 interval: float = 0.5, period: float = 30.0, board_name: str | None = None):
        self.board, self.log_dir, self.board_name = board, log_dir, board_name
        self.out = stream or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.interval, self.period = interval, period
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drawn = 0
        self._printed: dict[str, tuple[str, float]] = {}
        self._thread = threading.Thread(target=self._run, daemon=True, name="boom-progress")
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)

    def start(self) -> "LiveView":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.refresh(final=True)

    def close(self) -> None:
        """Stop and draw the last state; the board actor goes with it."""
        import ray  # lazy: ray, kept off the import path of boom plan

        try:
            self.stop()
        finally:
            ray.kill(self.board)

    def set_state(self, bag: str, state: str, **metrics: Any) -> None:
        """Move `bag` to `state` (with the metrics known on the driver: step, total_steps, loss)."""
        import ray  # lazy: ray, kept off the import path of boom plan

        try:
            ray.get(self.board.update.remote(bag, None, False, state=state, **metrics))  # seen by the next poll
        except Exception as exc:  # noqa: BLE001 - the view must never change a bag's outcome
            print(f"progress view: {exc}", file=sys.stderr)

    def notice(self, bag: str, text: str, warn: bool = False) -> None:
        """One line on the console (stderr for warnings), and in the bag's log file."""
        self.log(bag, f"[{bag}] {text}")
        with self._lock:
            self._clear()
            self.out.flush()
            print(f"[{bag}] {text}", file=sys.stderr if warn else self.out, flush=True)

    def refresh(self, final: bool = False) -> None:
        import ray  # lazy: ray, kept off the import path of boom plan

        states, messages = ray.get(self.board.poll.remote())
        for bag, at, text, notice in messages:
            self.log(bag, text, at)
            if notice:
                with self._lock:
                    self._clear()
                    print(text, file=self.out, flush=True)
        now = time.time()
        with self._lock:
            if self.tty:
                self._clear()
                lines = render_lines(states, now)
                self.out.write("".join(line + "\n" for line in lines))
                self._drawn = 0 if final else len(lines)
            else:
                for p, line in zip(states, render_lines(states, now)):
                    last = self._printed.get(p.bag)
                    if last is None or last[0] != p.state or (not final and now - last[1] >= self.period
                                                              and p.state == TRAINING) \
                            or (final and p.state == TRAINING):
                        print(line, file=self.out)
                        self._printed[p.bag] = (p.state, now)
            self.out.flush()

    def _clear(self) -> None:
        """Erase the drawn block (TTY): cursor up to its first line, clear to the end."""
        if self.tty and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def log(self, bag: str, text: str, at: float | None = None) -> None:
        """Append a line to the bag's log file only."""
        if self.log_dir:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if at is None else at))
            with open(os.path.join(self.log_dir, f"train-{bag}.log"), "a") as f:
                f.write(f"{stamp} {text}\n")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the view must never stop the training
                print(f"progress view: {exc}", file=sys.stderr)
                return


def open_view(bags: list[str], log_dir: str | None, stream: IO[str] | None = None) -> LiveView:
    """A board for these bags and a started view of it (the training stage's console)."""
    board, name = create_board(bags)
    return LiveView(board, log_dir, stream, board_name=name).start()
