"""`dard experiment --time-budget`: the planned runs within a wall-clock budget.

Teachers first, alone with every thread (their students wait for them), then the students seed by seed (every
student of the first seed before any of the second), so that a budget that runs out leaves one whole comparison
rather than three seeds of its first method. On a CPU the students go ``jobs`` at a time, each in its own process
with one thread (:func:`dard.experiment.pool.jobs_for`); each takes the next run in that order as it frees. Before
a run starts, its remaining cost (training, validation, test evaluation and a fixed start-up) is estimated
(:mod:`dard.experiment.estimate`: from the run's own throughput, an earlier run's on the same device, or a
conservative default; scaled to the run's threads), and the basis is printed with the decision. A run that would
not finish is not started, unless its weights and resume state are small enough to travel to the next job
(``partial_under`` MiB): then it trains until the budget ends and stops with a snapshot. A run that fits trains
until the deadline less its evaluation's estimate (on to the deadline itself if its training runs past that). The
test evaluation then runs attack by attack, each only if it fits before the deadline and each kept as it finishes;
the rest is left "trained; test evaluation pending" for a later budget (a trained run may always evaluate
part-way). Each run's records are exported to ``export_dir`` (``<run>.tar.gz``, :mod:`dard.run_dir.archive`) as
soon as it stops or finishes, after the experiment's per-run extras (:mod:`dard.experiment.extras`) while its
weights are there; the report covers the finished runs. A later invocation continues where this one stopped.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from dard.config import RunConfig
from dard.errors import DardError
from dard.experiment.estimate import Estimate, Estimator, estimator_for
from dard.experiment.extras import extras_cached, extras_passes, run_extras
from dard.experiment.plan import PlannedRun, campaign_order, check_resumable, read_plan
from dard.experiment.pool import pool_map, threads_for, with_threads
from dard.experiment.report import write_experiment_report
from dard.experiment.reuse import missing_teacher_weights, run_status
from dard.experiment.spec import Experiment
from dard.experiment.status import role_estimates, write_status
from dard.models import library_prefix
from dard.run_dir import RunDir
from dard.training.cost import arch_macs
from dard.training.deadline import TrainingStopped, stop_requested

MARGIN_S = 15.0  # kept back at the end of a budget by default: the last snapshot and the export


@dataclass
class BudgetOptions:
    """A wall-clock budget (``seconds`` from ``started``) and what to do within it."""

    seconds: float
    partial_under: float | None = None  # MiB: runs whose weights + resume state fit may stop mid-way
    export_dir: Path | None = None  # each run's archive, written as it stops or finishes
    margin_s: float = MARGIN_S  # kept back at the end
    # False: start or continue no training, only the test evaluations and extras of trained runs (a machine
    # where training is slow: a CPU without native bf16 emulates speed.amp bf16, benchmarks/results/cpu-avx2-1thread.md)
    train: bool = True
    started: float = field(default_factory=time.time)

    @property
    def deadline(self) -> float:
        """When work must be done: the budget's end less the margin (``time.time()``)."""
        return self.started + self.seconds - self.margin_s

    def left(self) -> float:
        return self.deadline - time.time()


def plan_budget(exp: Experiment, runs_root: Path, budget: BudgetOptions, device: str, jobs: int = 1) -> list[str]:
    """One line per run: its status, estimate and what a budgeted invocation would do with it, in the order it
    takes the runs (assuming each run that fits finishes in its estimate), students ``jobs`` at a time."""
    total, free = budget.seconds - budget.margin_s, [0.0] * max(jobs, 1)  # when each place frees (s from the start)
    lines = []
    for run in role_estimates(campaign_order(read_plan(exp, runs_root, device)), runs_root, device, jobs):
        if run.estimate is None:
            lines.append(f"{run.name}: {run.status}")
            continue
        teacher = run.role == "teacher"  # alone: after every place frees, and holding them all
        place = free.index(max(free) if teacher else min(free))
        start = free[place]
        what = _decide(run.estimate, total - start, budget)
        end = start + run.estimate.total if what == "fits" else max(total, start) if what == "partial" else start
        free = [end] * len(free) if teacher else [*free[:place], end, *free[place + 1 :]]
        lines.append(f"{run.name} ({run.role}): {run.status}; needs {run.estimate.text()}; {_DECISIONS[what]}")
    return lines


_DECISIONS = {
    "fits": "fits",
    "partial": "would start and stop part-way",
    "no": "would not start",
    "untrained": "would not start: it needs training (--no-training)",
}


def _decide(est: Estimate, left: float, budget: BudgetOptions) -> str:
    """``fits`` (the whole run), ``partial`` (starts, stops at the deadline: its training small enough to travel,
    or its evaluation alone, which keeps each attack as it finishes), ``no``, or ``untrained`` (it needs training
    and the budget trains nothing)."""
    if est.train_s > 0 and not budget.train:
        return "untrained"
    if est.total <= left:
        return "fits"
    if left <= est.startup_s:
        return "no"
    small = budget.partial_under is not None and est.weights_mib <= budget.partial_under
    return "partial" if small or est.train_s == 0 else "no"


def run_within_budget(
    exp: Experiment, runs_root: Path, results_dir: Path, budget: BudgetOptions, *, device: str, jobs: int = 1
) -> Path | None:
    """Run what fits of ``exp`` within ``budget``, students ``jobs`` at a time (module docstring); returns
    report.md (None: nothing finished)."""
    # the report lists them in this order, as without a budget; their data only when one may start (a budget of 0
    # rewrites the report from the runs alone: it stopped on a dataset that is not at hand)
    data = budget.left() > 0
    runs = read_plan(exp, runs_root, device, data=data)
    if data and budget.train:  # (a run to train may start)
        check_resumable(runs, runs_root, exp.source)
    order = campaign_order(runs)
    job = _Job(exp, runs_root, budget, estimator_for(runs_root, device), device)
    for run in (r for r in order if r.role == "teacher"):
        job.run(run)
    students = [r for r in order if r.role != "teacher"]
    if jobs > 1 and len(students) > 1 and budget.left() > 0:  # (no time left: nothing to start, no workers)
        # Each worker decides when it takes a run, from the time left then: the pool hands the runs out in order.
        tasks = [_StudentTask(exp, runs_root, budget, device, r, threads_for(jobs)) for r in students]
        pool_map(_run_student, tasks, jobs)
    else:
        for run in students:
            job.run(run)
    finished = [runs_root / r.name for r in runs if RunDir(runs_root / r.name).is_evaluated()]
    if not finished:
        print("[budget] no run has finished yet: no report", flush=True)
        write_status(exp, runs_root, results_dir, device, jobs, data=data)
        return None
    pending = [f"{r.name}: {run_status(runs_root / r.name, r.config.optim.epochs)}"
               for r in runs if not RunDir(runs_root / r.name).is_evaluated()]  # fmt: skip
    notes = [f"- Not finished yet ({len(pending)}): " + "; ".join(pending) + "."] if pending else []
    # Not this invocation's command line: the report is the runs' alone, whichever stretches made them, so that
    # any later invocation (`--time-budget 0` trains nothing) writes the same report from the same runs.
    command = exp.command()
    notes = [f"- Made in budgeted stretches (`{command} --time-budget T`), each continuing the last; "
             f"`{command} --time-budget 0` rewrites this report from the runs alone.", *notes]  # fmt: skip
    path = write_experiment_report(exp, finished, results_dir, command=command, notes=notes)
    write_status(exp, runs_root, results_dir, device, jobs, data=data)
    return path


def _teacher_not_ready(cfg: RunConfig) -> str | None:
    """Why a student cannot start yet: its teacher's weights are absent, or its teacher run has not finished
    training (a teacher stopped part-way has a best checkpoint already) or its test evaluation, which says
    whether the teacher is robust enough to learn from; None when it can."""
    if not cfg.teacher.checkpoint or library_prefix(cfg.teacher.checkpoint):  # none, or a zoo model by name
        return None
    ckpt = Path(cfg.teacher.checkpoint)
    teacher = RunDir(ckpt.parent)
    if not ckpt.exists():
        return missing_teacher_weights(cfg) or f"its teacher {teacher.path.name} is not trained"
    if teacher.is_run() and not teacher.is_evaluated():
        progress = teacher.read_progress()
        epochs = teacher.read_run_config().optim.epochs
        if progress is None or progress.epoch < epochs:
            return f"its teacher {teacher.path.name} is not trained yet"
        return f"its teacher {teacher.path.name} is not evaluated yet"
    return None


def _say(name: str, text: str) -> None:
    print(f"[budget] {name}: {text}", flush=True)


@dataclass(frozen=True)
class _StudentTask:
    """One student for a worker process: what :class:`_Job` needs, and the run's CPU threads there."""

    exp: Experiment
    runs_root: Path
    budget: BudgetOptions
    device: str
    run: PlannedRun
    threads: int | None


def _run_student(task: _StudentTask) -> str:
    """:meth:`_Job.run` for one student in a worker, on ``task.threads`` threads (its estimate scaled to them)."""
    from dard.runtime import configure_threads

    configure_threads(task.threads)  # its extras run on these threads too
    run = dataclasses.replace(task.run, config=with_threads(task.run.config, task.threads))
    estimator = estimator_for(task.runs_root, task.device, task.threads)
    _Job(task.exp, task.runs_root, task.budget, estimator, task.device).run(run)
    return run.name


@dataclass
class _Job:
    """One budgeted invocation's way with a run (in this process, or in a worker beside another)."""

    exp: Experiment
    runs_root: Path
    budget: BudgetOptions
    estimator: Estimator
    device: str

    def run(self, run: PlannedRun) -> None:
        """Train and evaluate one run as far as the budget allows, add its extras, then export its records."""
        name, cfg = run.name, run.config
        folder = RunDir(self.runs_root / name)
        if folder.is_evaluated():
            _say(name, "done (reused)")
            self.extras(run)
            return
        waits = _teacher_not_ready(cfg)
        if waits:
            return _say(name, f"not started: {waits}")
        left = self.budget.left()
        if left <= 0:  # (a --time-budget 0 report needs no data)
            return _say(name, "not started: no time left")
        est = self.estimate(run)
        what = _decide(est, left, self.budget)
        if what == "no":
            return _say(name, f"not started: needs {est.text()}, {max(left, 0):.0f} s left")
        if what == "untrained":
            return _say(name, "not started: it needs training, and --no-training trains nothing")
        _say(
            name, f"starting{'' if what == 'fits' else ' (will stop part-way)'}: needs {est.text()}, {left:.0f} s left"
        )
        try:
            self.train_and_evaluate(run, est, fits=what == "fits")
            _say(name, f"done; {max(self.budget.left(), 0):.0f} s of the budget left")
            self.extras(run)
        except TrainingStopped as stop:
            _say(name, f"stopped: {run_status(folder.path, cfg.optim.epochs)} ({stop})")
        self.export(folder)

    def estimate(self, run: PlannedRun) -> Estimate:
        """What the run still costs, by what its folder holds now."""
        return self.estimator.estimate(run.name, run.config, run.teacher_arch)

    def train_and_evaluate(self, run: PlannedRun, est: Estimate, fits: bool) -> None:
        """Train until the deadline (less the evaluation's estimate when the whole run fits, unless training runs
        past that), then evaluate attack by attack while each attack fits before the deadline; TrainingStopped
        when the budget ends first."""
        from dard.training import train

        folder, cfg = RunDir(self.runs_root / run.name), run.config
        if est.train_s > 0:
            reserved = est.eval_s if fits else 0.0
            try:
                stop_at = self.budget.deadline - reserved
                train(
                    cfg, folder.path, resume=folder.is_run(), final_eval=False, stop_at=stop_at, announce=cfg.progress
                )
            except TrainingStopped:
                if reserved <= 0 or self.budget.left() <= est.startup_s or stop_requested():  # (the experiment stops)
                    raise
                # Training ran past its estimate, so the evaluation no longer fits. Training on to the deadline
                # leaves one run part-way (this one, further on) rather than two, and the time is not idle when
                # every later run waits for this one (a teacher).
                _say(run.name, "training ran past its estimate: it trains on to the deadline; evaluation later")
                stop_at = self.budget.deadline
                train(cfg, folder.path, resume=True, final_eval=False, stop_at=stop_at, announce=cfg.progress)
        if self.estimate(run).startup_s >= self.budget.left():
            raise TrainingStopped(folder.path, cfg.optim.epochs, 0, evaluation_pending=True)
        # attack by attack while each fits (each kept as it finishes): what does not fit waits for the next budget
        train(cfg, folder.path, resume=True, final_eval=True, stop_at=self.budget.deadline, announce=cfg.progress)

    def extras(self, run: PlannedRun) -> None:
        """The experiment's per-run extras for this run, while its weights are here, when they fit."""
        spec, folder, cfg = self.exp.spec, RunDir(self.runs_root / run.name), run.config
        if not folder.is_trained() or all(
            x is None for x in (spec.compare_attacks, spec.label_gap, spec.teacher_quality)
        ):
            return  # (teacher_quality alone, the ladder's one extra, was never run under a budget)
        if not extras_cached(spec, folder):  # (cached results are checked, and cheap: no estimate, no data)
            if self.budget.left() <= 0:
                return _say(folder.path.name, "extras not run: no time left")
            sizes = self.estimator.sizes(cfg)
            est = self.estimate(run)
            passes = extras_passes(spec, cfg, sizes)
            need = passes * arch_macs(cfg.model.arch, sizes.classes, sizes.shape, cfg.model.kwargs) / est.eval_rate
            if need + est.startup_s > self.budget.left():
                left = self.budget.left()
                return _say(folder.path.name, f"extras not run: need ~{need + est.startup_s:.0f} s, {left:.0f} s left")
        run_extras(spec, self.runs_root, [run], device=self.device)

    def export(self, folder: RunDir) -> None:
        """Write the run's archive to the export folder, if one is given and the run has something to carry."""
        if self.budget.export_dir is None:
            return
        from dard.run_dir.archive import ExportOptions, export_runs

        try:
            path = export_runs([folder.path], self.budget.export_dir / f"{folder.path.name}.tar.gz", ExportOptions())
            _say(folder.path.name, f"exported to {path}")
        except DardError as e:  # e.g. an unfinished run whose resume state is too large to carry
            _say(folder.path.name, f"not exported: {e}")
