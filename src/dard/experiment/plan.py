"""The order in which a campaign takes an experiment's runs: teachers, then the students seed by seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dard.experiment.clock import teacher_archs
from dard.experiment.runner import _checked_runs
from dard.experiment.spec import Experiment


def ordered_runs(exp: Experiment, runs_root: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, role, config) of every run: teachers, then students seed by seed (in file order within a seed)."""
    teachers, students = _checked_runs(exp, runs_root)
    rows = [(name, "teacher", cfg) for name, cfg in teachers.items()]
    seeds = exp.spec.seeds
    rows += [(name, "student", cfg) for name, _, cfg in sorted(students, key=lambda s: seeds.index(s[1]))]
    return rows


def rows_teacher_archs(rows: list[tuple[str, str, dict[str, Any]]], runs_root: Path) -> dict[str, str]:
    """Planned teacher checkpoint path -> its architecture, for the teachers among :func:`ordered_runs`' rows."""
    return teacher_archs({name: cfg for name, role, cfg in rows if role == "teacher"}, runs_root)
