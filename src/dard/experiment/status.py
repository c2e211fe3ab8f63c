"""A campaign's status: which runs of an experiment are done, which are left, and the compute they are estimated to
need on this device. ``dard experiment --plan`` prints the total; a budgeted invocation writes ``status.md`` into the
experiment's results folder, so that the repository says how far a campaign spread over several machines has got.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dard.experiment.estimate import estimator_for
from dard.experiment.plan import ordered_runs, rows_teacher_archs
from dard.experiment.runner import RUN_DONE, run_status
from dard.experiment.spec import Experiment, deep_merge, parse_run_config
from dard.io import atomic_write

STATUS_FILE = "status.md"


@dataclass(frozen=True)
class RunStatus:
    """One planned run: its status text and, unless it is done, the seconds it still needs (and their basis)."""

    name: str
    role: str
    status: str
    seconds_left: float | None
    basis: str = ""

    @property
    def done(self) -> bool:
        return self.seconds_left is None


def campaign_status(exp: Experiment, runs_root: Path, device: str) -> list[RunStatus]:
    """Every run of ``exp`` in the order a budgeted campaign takes them, with what it still needs, one run at a
    time on ``device``."""
    estimator, device = estimator_for(runs_root, device)
    rows = ordered_runs(exp, runs_root)
    archs = rows_teacher_archs(rows, runs_root)
    out = []
    for name, role, raw in rows:
        cfg = parse_run_config(deep_merge(raw, {"device": device}), name)
        status = run_status(runs_root / name, cfg.optim.epochs)
        if status == RUN_DONE:  # run_status read the folder already: evaluated
            out.append(RunStatus(name, role, status, None))
            continue
        est = estimator.estimate(name, cfg, archs.get(str(cfg.teacher.checkpoint)))
        out.append(RunStatus(name, role, status, est.total, est.basis))
    return out


def hours_left(rows: list[RunStatus]) -> float:
    """The estimated compute left, in hours."""
    return sum(r.seconds_left or 0.0 for r in rows) / 3600


def status_markdown(exp: Experiment, rows: list[RunStatus], runs_root: Path) -> str:
    """``status.md``: a summary line and one table row per run."""
    done = sum(r.done for r in rows)
    lines = [
        f"# Status: {exp.name} at the {exp.scale} scale",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the runs in `{runs_root}`: "
        f"{done} of {len(rows)} runs done, {len(rows) - done} left, an estimated **{hours_left(rows):.1f} h** of "
        "compute left on this device, one run at a time (each estimate from the run's own measured rate, else an "
        "earlier run's, else a conservative default: see the basis).",
        "",
        "| run | role | status | hours left | basis of the estimate |",
        "|---|---|---|---:|---|",
    ]
    for r in rows:
        left = "" if r.done else f"{r.seconds_left / 3600:.2f}"
        lines.append(f"| {r.name} | {r.role} | {r.status} | {left} | {r.basis} |")
    return "\n".join(lines) + "\n"


def write_status(exp: Experiment, runs_root: Path, results_dir: Path, device: str) -> Path:
    """Write ``status.md`` into ``results_dir`` (atomically) and return its path."""
    rows = campaign_status(exp, runs_root, device)
    results_dir.mkdir(parents=True, exist_ok=True)
    text = status_markdown(exp, rows, runs_root)
    return atomic_write(results_dir / STATUS_FILE, lambda p: p.write_text(text, encoding="utf-8"))
