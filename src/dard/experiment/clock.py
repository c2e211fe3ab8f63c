"""How much of an experiment is left: the lines `dard experiment` and `dard demo` print as runs start and end.

The time left is the sum of the unfinished runs' estimates (:func:`dard.experiment.plan.with_estimates`), divided
among the runs that go at once. It is estimated again after every run, so once a run has finished on this device
its measured throughput replaces the conservative default rate of the first estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

from dard.experiment.estimate import Estimator
from dard.experiment.plan import PlannedRun, seconds_left, with_estimates
from dard.training.announce import duration


def say(text: str) -> None:
    """One experiment line on stdout, flushed (a log shows it at once)."""
    print(f"[experiment] {text}", flush=True)


class PlanClock:
    """The estimated time left of a plan of runs (:func:`dard.experiment.plan.read_plan`), ``jobs`` at a time."""

    def __init__(self, runs: Sequence[PlannedRun], estimator: Estimator, *, jobs: int) -> None:
        self.runs = list(runs)
        self.estimator = estimator
        self.jobs = max(jobs, 1)
        # runs evaluated already need no estimate (nor their data, which a folder of imported runs may lack)
        self.finished: set[str] = {r.name for r in self.runs if r.done}

    def left(self) -> float:
        """Seconds the unfinished runs still need by their estimates, ``jobs`` at a time."""
        pending = [r for r in self.runs if r.name not in self.finished]
        return seconds_left(with_estimates(pending, self.estimator)) / self.jobs

    def status(self) -> str:
        """``3/6 runs finished; ~12 min of the plan left (estimate)``."""
        done, runs = len(self.finished), len(self.runs)
        if done == runs:
            return f"{done}/{runs} runs finished"
        return f"{done}/{runs} runs finished; ~{duration(self.left())} of the plan left (estimate)"

    def finish(self, name: str) -> None:
        """Count run ``name`` as finished and say how much is left."""
        self.finished.add(name)
        say(self.status())
