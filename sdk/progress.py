"""Progress of the library's long jobs (a deploy, a training run), reported as events, never drawn.

The library calls `progress(event)` where the caller passed a callback and stays silent otherwise; the screen is
the caller's: `sdk deploy` and `sdk train` draw the events with rich on stderr (sdk.cli.ProgressBars), a build
script may log them, a GUI may show them. A job's events arrive in order: a first one (done=0), one per step,
and a last one with finished=True, also when the job fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sdk.errors import ConfigError


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long job."""

    stage: str  # the job: "deploy" or "train"
    subject: str  # what it works on: the board ("pynq-z2"), the model and its bits ("tfc w2a2")
    step: str  # the step under way: "load model and samples", "streamline", "epoch"; "" once finished
    done: int  # steps finished so far
    total: int | None = None  # steps in all where known in advance (training: epochs), else None
    message: str = ""  # one line for a display: "pynq-z2: streamline"
    metrics: dict[str, float] = field(default_factory=dict)  # training: loss, val (accuracy), best (accuracy)
    finished: bool = False  # the job's last event, after success or failure


ProgressCallback = Callable[[ProgressEvent], None]


def progress_callback(progress: Any, where: str = "progress") -> ProgressCallback | None:
    """The caller's callback, or None for no events (None or False); anything else is a ConfigError naming it."""
    if progress is None or progress is False:
        return None
    if callable(progress) and not isinstance(progress, bool):
        return progress
    raise ConfigError(
        f"{where} must be a callable taking a ProgressEvent (or None), got {progress!r}.",
        where=where,
        fix=f"{where}=sdk.ProgressBars() draws the CLI's progress bars on stderr; or pass your own function",
    )


class JobProgress:
    """The events of one job, sent to a callback (or nowhere): `step(name)` per step, `finish()` at the end."""

    def __init__(self, callback: ProgressCallback | None, stage: str, subject: str, total: int | None = None) -> None:
        self.callback, self.stage, self.subject, self.total = callback, stage, subject, total
        self.done = 0

    def _send(self, step: str, metrics: dict[str, float] | None = None, finished: bool = False) -> None:
        if self.callback is None:
            return
        message = f"{self.subject}: {step}" if step else self.subject
        event = ProgressEvent(
            self.stage, self.subject, step, self.done, self.total, message, dict(metrics or {}), finished
        )
        self.callback(event)

    def start(self, step: str, metrics: dict[str, float] | None = None) -> None:
        """The job's first event (done=0)."""
        self._send(step, metrics)

    def step(self, step: str, metrics: dict[str, float] | None = None) -> None:
        """One more step done; `step` names the one now under way (or the one just done, for counted steps)."""
        self.done += 1
        self._send(step, metrics)

    def finish(self) -> None:
        self._send("", finished=True)
