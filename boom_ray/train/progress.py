"""The training stage's console: one live line per bag, fed by a small Ray actor.

Why an actor: Ray forwards every worker's stdout to the driver (twice when a Train controller
relays it too) and mixes it with Ray's own logs, so printing from the workers cannot give one
readable view. Instead each bag's rank-0 worker sends its step, loss and tokens to a named
:class:`ProgressBoard` (0 CPU, fire-and-forget calls at the existing log cadence), the driver
polls it from a thread and draws one line per bag: redrawn in place on a TTY, plain periodic
lines elsewhere (jobs, CI, log files). The messages the board receives are also appended to
``<logs>/train-<bag>.log``, so nothing is lost; `--verbose` skips all this and streams as before.

The renderer (:func:`render_lines`) is a pure function of the bags' states, tested directly.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import IO, Any

NAMESPACE = "boom"
"""Namespace of the board: Train workers find it by name whatever job namespace they run in."""

WAITING, TRAINING, EXPORTED, FAILED, SKIPPED = "waiting", "training", "exported", "failed", "skipped"
LABELS = {WAITING: "waiting for resources", TRAINING: "training", EXPORTED: "exported",
          FAILED: "failed", SKIPPED: "skipped (export up to date)"}


@dataclass
class BagProgress:
    """What the console knows about one bag."""

    bag: str
    state: str = WAITING
    step: int = 0
    total: int | None = None
    loss: float | None = None
    tok_s: float | None = None
    first: tuple[float, int] | None = None
    """(time, step) of this attempt's first step report: the ETA's rate is measured from it, so
    model loading and a restart's catch-up do not count as training speed."""
    updated: float | None = None


def apply(p: BagProgress, fields: dict[str, Any], now: float) -> BagProgress:
    """`p` with an update merged in. A worker's first report moves a waiting bag to training;
    a finished bag (exported, failed, skipped) stays finished whatever arrives late."""
    known = {k: v for k, v in fields.items() if k in {"state", "step", "total", "loss", "tok_s"} and v is not None}
    if p.state in (EXPORTED, FAILED, SKIPPED) and "state" not in known:
        return p
    new = dataclasses.replace(p, **known, updated=now)
    if "state" not in known and new.state == WAITING:
        new.state = TRAINING
    if "step" in known and (p.first is None or known["step"] < p.first[1]):
        new.first = (now, known["step"])
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
    """One bag's line: name, state, step/total, loss, tokens/s, ETA (what is known so far)."""
    parts = [f"{p.bag:<{width}}", f"{LABELS.get(p.state, p.state):<9}"]
    if p.total is not None or p.step:
        parts.append(f"step {p.step}/{p.total if p.total is not None else '?'}")
    if p.loss is not None:
        parts.append(f"loss {p.loss:.4f}")
    if p.tok_s is not None:
        parts.append(f"{p.tok_s:,.0f} tok/s")
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
        now = time.time()
        self.bags[bag] = apply(self.bags.get(bag, BagProgress(bag)), fields, now)
        if message:
            self.messages.append((bag, now, message, notice))

    def poll(self) -> tuple[list[BagProgress], list[tuple[str, float, str, bool]]]:
        messages, self.messages = self.messages, []
        return list(self.bags.values()), messages


def create_board(bags: list[str]):
    """A fresh named board for one training stage; returns (handle, name)."""
    import ray

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
    import ray

    try:
        _board = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:  # the driver (and its board) went away: print rather than fail the bag
        _board = None


def emit(message: str, notice: bool = False, **fields: Any) -> bool:
    """Send this worker's bag a message (and progress fields); False where no board is connected."""
    if _board is None:
        return False
    _board.update.remote(_bag, message, notice, **fields)  # fire and forget: never waits on the driver
    return True


def flush() -> None:
    """Wait until the board has taken every message this worker sent (calls from one caller run
    in order): emit never waits, so a process about to end and hand over to the driver would
    otherwise race its own last messages."""
    if _board is not None:
        import ray

        ray.get(_board.update.remote(_bag))


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
        import ray

        try:
            self.stop()
        finally:
            ray.kill(self.board)

    def set_state(self, bag: str, state: str, **fields: Any) -> None:
        import ray

        try:
            ray.get(self.board.update.remote(bag, None, False, state=state, **fields))  # seen by the next poll
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
        import ray

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
