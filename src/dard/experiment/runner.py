"""Running an experiment: train and evaluate every planned run (in parallel on a CPU, also within a time budget:
:mod:`.budget`), add the per-run extras (:mod:`.extras`), then write the report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dard.config import RunConfig
from dard.errors import DardError
from dard.experiment.budget import BudgetOptions, run_within_budget
from dard.experiment.clock import PlanClock, say
from dard.experiment.estimate import estimator_for
from dard.experiment.extras import run_extras
from dard.experiment.plan import check_output_folder, check_resumable, read_plan
from dard.experiment.pool import jobs_for, pool_map, threads_for, with_threads
from dard.experiment.report import write_experiment_report
from dard.experiment.reuse import missing_teacher_weights, run_status
from dard.experiment.spec import Experiment
from dard.experiment.status import check_results_folder
from dard.run_dir import FolderLock, RunDir
from dard.training.announce import duration


def run_experiment(
    exp: Experiment,
    runs_root: Path,
    results_dir: Path,
    *,
    device: str = "auto",
    jobs: int | None = None,
    command: str = "",
    budget: BudgetOptions | None = None,
) -> Path | None:
    """Train (or reuse) every run of ``exp``, evaluate, and write the report; returns the path of report.md.

    On a CPU, runs go ``jobs`` at a time in separate processes with one thread each (small models are bound by
    per-call overhead, so processes beat threads); on a GPU they run one after another. With a ``budget`` too,
    within it, teachers alone (None: nothing finished). The runs folder and the results folder are locked
    for the whole experiment (each run folder too, while it trains or evaluates). ``command``: the invocation, which
    an unbudgeted report names; a budgeted report, made over many invocations, names the experiment's command.
    """
    check_output_folder(runs_root, "runs folder")
    check_results_folder(results_dir)
    with FolderLock(runs_root, "runs folder"), FolderLock(results_dir, "results folder"):
        if budget is not None:
            return run_within_budget(exp, runs_root, results_dir, budget, device=device, jobs=jobs_for(device, jobs))
        return _run_all(exp, runs_root, results_dir, device=device, jobs=jobs, command=command)


@dataclass(frozen=True)
class _TrainTask:
    """One run to train (and, with ``final_eval``, evaluate) in a worker process, with ``threads`` CPU threads."""

    config: RunConfig
    run_dir: Path
    final_eval: bool
    threads: int | None
    own_teacher: bool = False  # the experiment's teacher, trained first (its evaluation may hold its folder's lock)


def _train_task(task: _TrainTask) -> str:
    from dard.training import train

    folder = RunDir(task.run_dir)
    t0 = time.time()
    done = folder.is_evaluated() if task.final_eval else folder.is_trained()
    if (done or folder.is_evaluated()) and not folder.has_snapshot():  # imported (dard import): nothing to resume
        say(f"{folder.path.name}: reused (imported)")
        return str(task.run_dir)
    cfg = with_threads(task.config, task.threads)
    if not done:
        status = run_status(folder.path, cfg.optim.epochs)
        say(f"{folder.path.name}: starting ({status}{'' if task.final_eval else ', training only'})")
    resume, own = folder.is_run(), task.own_teacher
    train(cfg, folder.path, resume=resume, final_eval=task.final_eval, announce=cfg.progress, own_teacher=own)
    if task.final_eval:
        what = "reused" if done else f"done in {duration(time.time() - t0)}"
    else:
        what = "training reused" if done else f"trained in {duration(time.time() - t0)}"
    say(f"{folder.path.name}: {what}")
    return str(task.run_dir)


def _run_all(
    exp: Experiment, runs_root: Path, results_dir: Path, *, device: str, jobs: int | None, command: str
) -> Path:
    t_start = time.time()
    jobs = jobs_for(device, jobs)
    threads = threads_for(jobs)
    runs = read_plan(exp, runs_root, device)
    check_resumable(runs, runs_root, exp.source)
    for run in runs:
        if run.role == "student" and not run.done and (why := missing_teacher_weights(run.config)):
            raise DardError(f"{run.name} cannot be trained: {why}")

    teachers = [r for r in runs if r.role == "teacher"]
    clock = PlanClock(runs, estimator_for(runs_root, device), jobs=jobs)
    say(f"{len(runs)} runs in {runs_root}, {jobs} at a time; {clock.status()}")
    # Teachers first, with every thread; their test evaluation then runs beside the students.
    for run in teachers:
        _train_task(_TrainTask(run.config, runs_root / run.name, False, None))
        say(clock.status())
    tasks = [_TrainTask(r.config, runs_root / r.name, True, threads, r.teacher_arch is not None) for r in runs]
    done = pool_map(_train_task, tasks, jobs, on_done=lambda p: clock.finish(Path(p).name))

    run_extras(exp.spec, runs_root, runs, device=device, jobs=jobs, threads=threads)
    return write_experiment_report(
        exp, [Path(p) for p in done], results_dir, command=command, seconds=time.time() - t_start
    )
