"""How much of an experiment is left: the lines `dard experiment` and `dard demo` print as runs start and end.

The time left is the sum of the unfinished runs' estimates (:mod:`dard.experiment.estimate`), divided among the
runs that go at once. It is estimated again after every run, so once a run has finished on this device its
measured throughput replaces the conservative default rate of the first estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dard.config import RunConfig
from dard.experiment.estimate import Estimator, estimator_for
from dard.experiment.spec import deep_merge, parse_run_config
from dard.run_dir import RunDir
from dard.training.announce import duration


def teacher_archs(teachers: Mapping[str, Mapping[str, Any]], runs_root: Path) -> dict[str, str]:
    """Planned teacher checkpoint path -> its architecture (a student's estimate before its teacher exists)."""
    return {
        str(RunDir(runs_root / name).weights("best")): str((cfg.get("model") or {}).get("arch"))
        for name, cfg in teachers.items()
    }


def say(text: str) -> None:
    """One experiment line on stdout, flushed (a log shows it at once)."""
    print(f"[experiment] {text}", flush=True)


class PlanClock:
    """The estimated time left of a plan of runs (``runs``: name -> planned config), ``jobs`` at a time."""

    def __init__(
        self,
        runs_root: Path,
        runs: Mapping[str, Mapping[str, Any]],
        teachers: Mapping[str, Mapping[str, Any]],
        *,
        device: str,
        jobs: int,
    ) -> None:
        self.estimator: Estimator
        self.estimator, device = estimator_for(runs_root, device)
        self.configs: dict[str, RunConfig] = {
            name: parse_run_config(deep_merge(dict(cfg), {"device": device}), name) for name, cfg in runs.items()
        }
        self.archs = teacher_archs(teachers, runs_root)
        self.jobs = max(jobs, 1)
        # runs evaluated already need no estimate (nor their data, which a folder of imported runs may lack)
        self.finished: set[str] = {name for name in runs if RunDir(runs_root / name).is_evaluated()}

    def left(self) -> float:
        """Seconds the unfinished runs still need by their estimates, ``jobs`` at a time."""
        pending = [(n, c) for n, c in self.configs.items() if n not in self.finished]
        total = sum(self.estimator.estimate(n, c, self.archs.get(str(c.teacher.checkpoint))).total for n, c in pending)
        return total / self.jobs

    def status(self) -> str:
        """``3/6 runs finished; ~12 min of the plan left (estimate)``."""
        done, runs = len(self.finished), len(self.configs)
        if done == runs:
            return f"{done}/{runs} runs finished"
        return f"{done}/{runs} runs finished; ~{duration(self.left())} of the plan left (estimate)"

    def finish(self, name: str) -> None:
        """Count run ``name`` as finished and say how much is left."""
        self.finished.add(name)
        say(self.status())
