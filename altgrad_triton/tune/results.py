"""What a sweep found: each candidate config's timing (or why it failed) and the winner, per
job. Apart from the sweeping (``sweeping.py``) and its tables (``tables.py``), which both
read it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .jobs import Job

Timing = tuple[float, float, float]  # median, p20, p80 in ms


@dataclass
class Trial:
    meta: dict[str, int]
    timing: Timing | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.timing is not None


@dataclass
class SweepResult:
    job: Job
    trials: list[Trial] = field(default_factory=list)
    aborted: str | None = None

    @property
    def winner(self) -> Trial | None:
        ok = [t for t in self.trials if t.ok]
        return min(ok, key=lambda t: t.timing[0]) if ok else None
