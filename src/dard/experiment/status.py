"""A campaign's status: which runs of an experiment are done, which are left, and the compute they are estimated to
need on this device, teachers alone and students ``jobs`` at a time as a budgeted invocation takes them
(:mod:`dard.experiment.budget`). ``dard experiment --plan`` prints the total; a budgeted invocation writes
``status.md`` into the experiment's results folder, so that the repository says how far a campaign spread over
several machines has got.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from dard.errors import DardError, one_line
from dard.experiment.estimate import estimator_for
from dard.experiment.plan import (
    PlannedRun,
    campaign_order,
    check_output_folder,
    read_plan,
    seconds_left,
    with_estimates,
)
from dard.experiment.pool import threads_for
from dard.experiment.spec import Experiment
from dard.io import atomic_write
from dard.report.out import check_report_out

STATUS_FILE = "status.md"
#: what `dard experiment` writes into its results folder beside a report's files (dard.report.out.REPORT_FILES)
EXPERIMENT_FILES = (STATUS_FILE, "experiment.yaml", "sweep.png", "attack_success.png", "teacher_quality.png")
_STATUS_TITLE = re.compile(rb"# Status: [^\n]+ at the [^\n]+ scale\n")


def check_results_folder(folder: Path) -> None:
    """A one-line DardError unless ``folder`` can take the experiment's report and status: a folder (or none yet)
    that can be written, outside run folders, where none of the files it writes exists or dard wrote them (a report's
    results.json, or the status.md of a campaign with no report yet). A user's status.md or report.md there was
    replaced, the status at the first step of even ``--time-budget 0``."""
    check_output_folder(folder, "results folder")
    check_report_out(folder, flag="--results", more=EXPERIMENT_FILES, ours=_holds_status)


def _holds_status(folder: Path) -> bool:
    """Whether ``folder``'s status.md is one dard wrote (its title line, as :func:`write_status` writes it)."""
    path = folder / STATUS_FILE
    try:
        with open(path, "rb") as fh:  # a regular file by now (check_report_out's write rule)
            return bool(_STATUS_TITLE.match(fh.read(512)))
    except OSError:
        return False


def campaign_status(exp: Experiment, runs_root: Path, device: str, jobs: int = 1) -> list[PlannedRun]:
    """Every run of ``exp`` in the order a budgeted campaign takes them, with its status and, unless it is done,
    what it still needs on ``device``: teachers alone, students ``jobs`` at a time."""
    return role_estimates(campaign_order(read_plan(exp, runs_root, device)), runs_root, device, jobs)


def role_estimates(runs: list[PlannedRun], runs_root: Path, device: str, jobs: int) -> list[PlannedRun]:
    """``runs`` (in their order) with their estimates: teachers on every thread, students on the threads each has
    when ``jobs`` go at once."""
    teachers = estimator_for(runs_root, device)
    students = estimator_for(runs_root, device, threads_for(jobs)) if jobs > 1 else teachers
    return [with_estimates([r], teachers if r.role == "teacher" else students)[0] for r in runs]


def hours_left(rows: list[PlannedRun], jobs: int = 1) -> float:
    """The estimated wall-clock hours left: the teachers' estimates one after another, then the students'
    ``jobs`` at a time."""
    teachers = seconds_left([r for r in rows if r.role == "teacher"])
    return (teachers + seconds_left([r for r in rows if r.role != "teacher"]) / max(jobs, 1)) / 3600


def at_a_time(jobs: int) -> str:
    """How the runs go, in words."""
    return "one run at a time" if jobs <= 1 else f"students {jobs} at a time (one thread each), teachers alone"


def status_markdown(
    exp: Experiment, rows: list[PlannedRun], runs_root: Path, jobs: int = 1, unestimated: str | None = None
) -> str:
    """``status.md``: a summary line and one table row per run; ``unestimated``: why the rows have no estimate."""
    done = sum(r.done for r in rows)
    left = (
        f"no estimate of the compute left ({unestimated})"
        if unestimated
        else f"an estimated **{hours_left(rows, jobs):.1f} h** of compute left on this device, {at_a_time(jobs)} (each "
        "estimate from the run's own measured rate, else an earlier run's, else a conservative default: see the basis)"
    )
    lines = [
        f"# Status: {exp.name} at the {exp.scale} scale",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the runs in `{runs_root}`: "
        f"{done} of {len(rows)} runs done, {len(rows) - done} left, {left}.",
        "",
        "| run | role | status | hours left | basis of the estimate |",
        "|---|---|---|---:|---|",
    ]
    for r in rows:
        left, basis = ("", "") if r.estimate is None else (f"{r.estimate.total / 3600:.2f}", r.estimate.basis)
        lines.append(f"| {r.name} | {r.role} | {r.status} | {left} | {basis} |")
    return "\n".join(lines) + "\n"


def write_status(
    exp: Experiment, runs_root: Path, results_dir: Path, device: str, jobs: int = 1, *, data: bool = True
) -> Path:
    """Write ``status.md`` into ``results_dir`` (atomically) and return its path. Without ``data`` (nothing was to
    train: ``--time-budget 0``), a dataset that does not load leaves the runs without estimates, which need its
    split sizes, instead of stopping a report that needs no data."""
    rows, why = campaign_order(read_plan(exp, runs_root, device, data=data)), None
    try:
        rows = role_estimates(rows, runs_root, device, jobs)
    except DardError as e:
        if data:
            raise
        why = one_line(str(e))
    results_dir.mkdir(parents=True, exist_ok=True)
    text = status_markdown(exp, rows, runs_root, jobs, unestimated=why)
    return atomic_write(results_dir / STATUS_FILE, lambda p: p.write_text(text, encoding="utf-8"))
