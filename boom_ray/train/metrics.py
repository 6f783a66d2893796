"""One record per logged training step, and the small protocol every consumer of it meets.

Why: a metric used to be a word in five places (an f-string in the loop, the console's
BagProgress fields, a key list in the progress actor, the console renderer and the dict sent to
ray.train.report). Now the loop builds one record, a dict of named numbers, and hands it to one
sink that fans it out; a new metric is one key where it is computed, and it reaches every sink.

The sinks, as torchtune's metric loggers have them (one ``log`` call, many back ends behind one
protocol): the console's live line (:class:`~boom_ray.train.progress.ConsoleBoard`), the bag's
log file (:class:`~boom_ray.train.progress.LogLines`) and Ray Train
(:class:`~boom_ray.train.checkpoint.RayReport`, which passes on the records that carry a
checkpoint: the only ones Ray Train keeps). An experiment tracker (MLflow, TensorBoard, W&B) is
one more class with ``log`` and ``close``, added to the fan-out on rank 0
(:func:`~boom_ray.train.progress.worker_sink`).

The record's keys (``None`` values are dropped before any sink sees them):

=================  ==========================================================================
step               optimizer steps done (every record has it)
total_steps        optimizer steps the bag will run
loss               mean training loss over the ranks and the steps since the last record
lr                 learning rate of the first parameter group
tokens             real (non-padding) tokens seen, summed over ranks and attempts
tokens_per_s       ``tokens`` per second spent in the step loop
grad_norm          2-norm of the gradients of the last optimizer step, before clipping
skipped_steps      optimizer steps DeepSpeed skipped (inf/NaN gradients; 0 when it keeps none)
peak_memory_gib    peak memory of this rank: GPU memory allocated by torch, else peak RSS
=================  ==========================================================================

How a key reads is a line in :data:`CONSOLE` or :data:`LOG`; a key in neither still reaches the
log file (as ``name value``), Ray Train and the console's state.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Protocol

Number = int | float
Record = Mapping[str, Number]
"""A record: metric name -> number."""

STEP_KEYS = ("step", "total_steps")
"""Keys every view shows as one `step <step>/<total_steps>` piece, not through a format table."""

CONSOLE = {
    "loss": "loss {:.4f}",
    "tokens_per_s": "{:,.0f} tok/s",
    "skipped_steps": "{:,} steps skipped",
}
"""What the live line shows after `step n/N`, in this order: one line per bag, so only a few."""

CONSOLE_ALERTS = frozenset({"skipped_steps"})
"""CONSOLE keys shown only when non-zero: alarms, not readings (every bag would say `0 steps skipped`)."""

LOG = {
    "loss": "loss {:.4f}",
    "lr": "lr {:.3g}",
    "tokens": "tokens {:,}",
    "tokens_per_s": "({:,.0f} tok/s in the loop)",
    "grad_norm": "grad norm {:.3g}",
    "skipped_steps": "skipped steps {:,}",
    "peak_memory_gib": "peak memory {:.2f} GiB",
}
"""The log file's step line after `step n/N`, in this order; keys not listed follow it."""


class MetricsSink(Protocol):
    """Where records go. A sink that subclasses this inherits the no-op ``close``."""

    def log(self, record: Record) -> None:
        """Take one record (plain Python numbers, no ``None``)."""

    def close(self) -> None:
        """Flush and let go of whatever the sink holds (a tracker's run); called once, at the end."""


class FanOut(MetricsSink):
    """The one sink the training loop talks to: every record to every sink, in order."""

    def __init__(self, sinks: Iterable[MetricsSink]):
        self.sinks = list(sinks)

    def log(self, record: Mapping[str, Number | None]) -> None:
        clean = {k: v for k, v in record.items() if v is not None}
        for sink in self.sinks:
            sink.log(clean)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def render(record: Record, table: Mapping[str, str], rest: bool = False) -> list[str]:
    """The pieces of `record` that `table` knows, in the table's order; `rest`: then every other
    key (but the step keys) as `name value`, so a metric nobody formatted yet is still seen."""
    parts = [fmt.format(record[key]) for key, fmt in table.items() if key in record]
    if rest:
        parts += [f"{key} {_number(value)}" for key, value in record.items()
                  if key not in table and key not in STEP_KEYS]
    return parts


def console_pieces(record: Record) -> list[str]:
    """The live line's pieces after `step n/N`: :data:`CONSOLE`, less the alerts that are 0."""
    return render({k: v for k, v in record.items() if v or k not in CONSOLE_ALERTS}, CONSOLE)


def step_piece(record: Mapping[str, Number]) -> str:
    """`step 3/10`; `?` for a total not known yet."""
    return f"step {record.get('step', 0)}/{record.get('total_steps', '?')}"


def log_line(bag: str, record: Record) -> str:
    """The step line of the bag's log file (and of stdout under --verbose)."""
    return " ".join([f"[{bag}] {step_piece(record)}", *render(record, LOG, rest=True)])


def _number(value: Number) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else f"{value:.4g}"
