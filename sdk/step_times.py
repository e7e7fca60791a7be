"""Where a job's seconds went: named steps on one clock, and what no step covers as "other".

A deploy starts the clock when it is called and each step when it begins; a step ends where the next one begins.
`finish()` closes the table: each step's bounds rounded to whole milliseconds from the start, so the rows and
"other" (the time before the first step) add up to the total exactly, and rounding never makes "other" negative.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

OTHER, TOTAL = "other", "total"  # the table's last two rows


@dataclass
class StepTable:
    """The steps in the order they ran (a name may recur), "other" (time in no step) and the total, in seconds."""

    steps: list[tuple[str, float]]
    other: float
    total: float

    def rows(self) -> list[list]:
        """The rows of report.md's table: each step, then other and total."""
        return [[name, seconds] for name, seconds in self.steps] + [[OTHER, self.other], [TOTAL, self.total]]

    def to_list(self) -> list[dict]:
        """The steps as report.json lists them (data.deploy_steps)."""
        return [{"step": name, "seconds": seconds} for name, seconds in self.steps]


@dataclass
class StepClock:
    """A job's clock: `start(name)` begins a step (ending the one under way), `finish()` ends the job."""

    began: float = field(default_factory=time.perf_counter)
    _spans: list[tuple[str, float, float]] = field(default_factory=list)
    _open: tuple[str, float] | None = None

    def start(self, name: str) -> None:
        now = time.perf_counter()
        self._close(now)
        self._open = (name, now)

    def _close(self, now: float) -> None:
        if self._open is not None:
            self._spans.append((*self._open, now))
            self._open = None

    def finish(self) -> StepTable:
        """The table up to now (the step under way ends here): whole milliseconds since the start, so rounding
        never makes the steps add up to more than the total."""
        now = time.perf_counter()
        self._close(now)

        def ms(moment: float) -> int:
            return round((moment - self.began) * 1000)

        steps = [(name, (ms(end) - ms(start)) / 1000) for name, start, end in self._spans]
        total = ms(now)
        other = total - sum(ms(end) - ms(start) for _, start, end in self._spans)
        return StepTable(steps, other / 1000, total / 1000)
