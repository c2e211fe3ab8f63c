"""A campaign's status: which runs of an experiment are done, which are left, and the compute they are estimated to
need on this device. ``dard experiment --plan`` prints the total; a budgeted invocation writes ``status.md`` into the
experiment's results folder, so that the repository says how far a campaign spread over several machines has got.
"""

from __future__ import annotations

import time
from pathlib import Path

from dard.experiment.estimate import estimator_for
from dard.experiment.plan import PlannedRun, campaign_order, read_plan, seconds_left, with_estimates
from dard.experiment.spec import Experiment
from dard.io import atomic_write

STATUS_FILE = "status.md"


def campaign_status(exp: Experiment, runs_root: Path, device: str) -> list[PlannedRun]:
    """Every run of ``exp`` in the order a budgeted campaign takes them, with its status and, unless it is done,
    what it still needs, one run at a time on ``device``."""
    estimator = estimator_for(runs_root, device)
    return with_estimates(campaign_order(read_plan(exp, runs_root, device)), estimator)


def hours_left(rows: list[PlannedRun]) -> float:
    """The estimated compute left, in hours."""
    return seconds_left(rows) / 3600


def status_markdown(exp: Experiment, rows: list[PlannedRun], runs_root: Path) -> str:
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
        left, basis = ("", "") if r.estimate is None else (f"{r.estimate.total / 3600:.2f}", r.estimate.basis)
        lines.append(f"| {r.name} | {r.role} | {r.status} | {left} | {basis} |")
    return "\n".join(lines) + "\n"


def write_status(exp: Experiment, runs_root: Path, results_dir: Path, device: str) -> Path:
    """Write ``status.md`` into ``results_dir`` (atomically) and return its path."""
    rows = campaign_status(exp, runs_root, device)
    results_dir.mkdir(parents=True, exist_ok=True)
    text = status_markdown(exp, rows, runs_root)
    return atomic_write(results_dir / STATUS_FILE, lambda p: p.write_text(text, encoding="utf-8"))
