"""An experiment's plan: every run it makes (teachers, then students), each with its resolved config and, once
read from the runs folder, its status and the cost it still has.

:func:`plan_runs` is the one place an experiment file becomes run configs (the base, the run's overrides, its name
and seed, the planned teacher's checkpoint and the device, merged and validated); everything that trains,
estimates or reports on the runs takes its :class:`PlannedRun` list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dard.config import RunConfig
from dard.errors import DardError
from dard.experiment.estimate import Estimate, Estimator, dataset_bundle, parameter_count
from dard.experiment.reuse import RUN_DONE, RUN_NEW, RUN_UNREADABLE, check_reusable, run_status
from dard.experiment.spec import RUN_SEEDS, Experiment, merge_run, needs_teacher, parse_run_config
from dard.io import check_writable
from dard.names import check_case_distinct
from dard.run_dir import RunDir, enclosing_run
from dard.training.cost import DataSizes

Role = Literal["teacher", "student"]


@dataclass(frozen=True)
class PlannedRun:
    """One run of an experiment: its folder name, role, seed and resolved config; ``status`` (:func:`run_status`:
    what the folder held when the plan was read, "" before) and ``estimate`` (what it still costs; None when it is
    done or not estimated). ``teacher_arch``: a student's planned teacher's architecture (its estimate before the
    teacher exists)."""

    name: str
    role: Role
    seed: int
    config: RunConfig
    status: str = ""
    estimate: Estimate | None = None
    teacher_arch: str | None = None

    @property
    def done(self) -> bool:
        """Whether the run was evaluated when the plan was read."""
        return self.status == RUN_DONE


def plan_runs(exp: Experiment, runs_root: Path, device: str | None = None) -> list[PlannedRun]:
    """Every run of ``exp`` in ``runs_root``: the teachers (one per distinct teacher seed), then the students in file
    order, seeds in the inner loop. ``device`` (when given) goes into every config. Nothing is read from the run
    folders."""
    over = {} if device is None else {"device": device}
    teachers = _teachers(exp, over)
    # a student's estimate before its teacher exists: the planned teacher's architecture, by checkpoint
    archs = {_best(runs_root, t.name): t.config.model.arch for t in teachers.values()}
    students = []
    for key in exp.spec.runs:
        overrides = exp.spec.run_overrides(key)
        _check_own_keys(exp, f"runs.{key}", overrides, f"runs.{key}.{RUN_SEEDS}")
        for seed in exp.spec.run_seeds(key):
            name = f"{key}-s{seed}"
            raw = merge_run(exp.base, {**overrides, "name": name, "seed": seed, **over})
            if needs_teacher(raw) and not (raw.get("teacher") or {}):
                if seed not in teachers:
                    raise DardError(f"{exp.source}: run '{key}' needs a teacher but the experiment has none")
                raw["teacher"] = {"checkpoint": _best(runs_root, teachers[seed].name)}
            config = parse_run_config(raw, f"{exp.source}: run '{name}'")
            students.append(
                PlannedRun(name, "student", seed, config, teacher_arch=archs.get(str(config.teacher.checkpoint)))
            )
    runs = [*{t.name: t for t in teachers.values()}.values(), *students]
    teacher = exp.spec.teacher
    if teacher is not None and teacher.name in exp.spec.runs:
        # at a shared seed both trained, and were taken for each other, in one folder; at another (`seed: 5`) the
        # report had two rows of that name, and a pair naming it compared the teacher
        raise DardError(
            f"{exp.source}: the teacher and run '{teacher.name}' share a name: one report row (which pairs name) "
            f"for two runs, and one run folder at a shared seed; rename teacher.name or the run"
        )
    names = [run.name for run in runs]
    check_case_distinct(names, f"{exp.source}: runs")
    _check_distinct_configs(runs, exp.source)
    return runs


def _check_distinct_configs(runs: Sequence[PlannedRun], source: Path) -> None:
    """No two students are the same run under two names (entries whose overrides come to the same config): both
    trained, the compute spent twice, and the report showed one run as two rows. (A student that is the teacher's
    run again is let be: the teacher is a row of its own that pairs may name.)"""
    from dard.config.identity import NOT_IDENTITY, identity_hash, without_keys

    # what changes a run's numbers: its teacher's checkpoint counts here (a ladder's students differ by it alone)
    drop = [("name",), *(key for key in NOT_IDENTITY if key != ("teacher", "checkpoint"))]
    seen: dict[str, str] = {}
    for run in (r for r in runs if r.role == "student"):
        key = identity_hash(without_keys(run.config.model_dump(mode="json"), drop))
        if key in seen:
            raise DardError(
                f"{source}: runs {seen[key]} and {run.name} have the same config: one run would train twice and "
                "be reported as two; give one entry a setting of its own, or drop it"
            )
        seen[key] = run.name


#: the keys of a run config the experiment sets itself for each run (its folder name, seed and device)
_EXPERIMENTS_KEYS = ("name", "seed", "device")


def _check_own_keys(exp: Experiment, where: str, overrides: dict[str, Any], instead: str) -> None:
    """A run entry (or the teacher's config) that sets ``name``, ``seed`` or ``device`` is refused: the experiment
    sets them for every run, and the value given was dropped in silence (``seed: 5`` trained seeds 0, 1, 2;
    ``device: cpu`` ran on the GPU that `--device auto` took, and `--plan` passed ``device: xla``)."""
    how = {
        "name": "a run is named after its key and seed",
        "seed": f"set the seeds with {instead}",
        "device": "every run takes dard experiment's --device (default auto)",
    }
    for key in _EXPERIMENTS_KEYS:
        if key in overrides:
            raise DardError(f"{exp.source}: {where}.{key}: the experiment sets each run's {key}; {how[key]}")


def check_runs(runs: Sequence[PlannedRun], source: Path) -> None:
    """Every object each run's config names builds, and the teacher rules hold
    (:func:`dard.training.preflight.check_config`: the model's name, the method with its parameters and training
    attack, the validation and evaluation attacks), checked when the experiment is loaded: a run's bad method
    parameter was found by ``--plan``'s estimate after its lines, naming neither the file nor the run, and by a
    campaign only when that run started, hours after its teacher."""
    from dard.training.preflight import check_config

    for run in runs:
        try:
            check_config(run.config)  # its milestones too
            _check_given_teacher(run)
        except DardError as e:
            raise DardError(f"{source}: run '{run.name}': {e}") from None
    _one_table(runs, source)


def _one_table(runs: Sequence[PlannedRun], source: Path) -> None:
    """The runs share one dataset and threat model, as the report's table takes them (``check_one_table``): a run
    with its own ``eps`` (or a teacher's) was refused by the report after every run had trained, at every rerun."""
    seen: dict[str, list[str]] = {}
    for run in runs:
        cfg = run.config
        seen.setdefault(f"{cfg.data.name}, {cfg.norm} eps {cfg.eps:.8g}", []).append(run.name)
    if len(seen) > 1:
        parts = "; ".join(f"{k} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})" for k, v in seen.items())
        raise DardError(
            f"{source}: the runs of an experiment share one report table, of one dataset and threat model; these "
            f"have {parts}: set data.name, norm and eps in the base only, or make two experiments"
        )


def _check_given_teacher(run: PlannedRun) -> None:
    """A teacher the file gives a run (not the one it trains) is there, the checkpoint meant and not in a run that
    is training (:func:`dard.training.teacher_checks.check_teacher`): a missing one stopped a campaign only when that
    run began. A RobustBench name is left to the run (its weights may still be downloaded)."""
    from dard.training.teacher_checks import check_teacher

    teacher = run.config.teacher
    if run.teacher_arch is not None:  # the experiment's own teacher, trained before the run
        return
    check_teacher(run.config)  # check_config let a teacher be given only to a method that distils
    if teacher.weights and not Path(teacher.weights).is_file():
        raise DardError(f"teacher.weights not found: {teacher.weights}")


def _teachers(exp: Experiment, over: dict[str, Any]) -> dict[int, PlannedRun]:
    """Student seed -> its teacher run (one shared teacher serves every seed unless the teacher's seed is null)."""
    t = exp.spec.teacher
    if t is None:
        return {}
    out: dict[int, PlannedRun] = {}
    # the seeds some run takes: with runs' own `seeds` ([1] of [0, 1]), a per-seed teacher trained for seed 0 too
    taken = [s for s in exp.spec.seeds if any(s in exp.spec.run_seeds(key) for key in exp.spec.runs)]
    for seed in taken:
        tseed = seed if t.seed is None else t.seed
        shared = next((run for run in out.values() if run.seed == tseed), None)
        if shared is None:
            _check_own_keys(exp, "teacher.config", t.config, "teacher.seed")
            name = f"{t.name}-s{tseed}"
            raw = merge_run(exp.base, {**t.config, "name": name, "seed": tseed, **over})
            if needs_teacher(raw) and not (raw.get("teacher") or {}):  # the experiment trains no teacher's teacher
                raise DardError(
                    f"{exp.source}: teacher.config: the teacher trains first, so its method must take no teacher "
                    "(sat, trades, natural) unless teacher.config.teacher gives it one"
                )
            shared = PlannedRun(name, "teacher", tseed, parse_run_config(raw, f"{exp.source}: run '{name}'"))
        out[seed] = shared
    return out


def _best(runs_root: Path, name: str) -> str:
    """Where a planned run's best checkpoint will be."""
    return str(RunDir(runs_root / name).weights("best"))


def campaign_order(runs: Sequence[PlannedRun]) -> list[PlannedRun]:
    """The order a budgeted campaign takes the runs: teachers, then the students seed by seed (in file order within
    a seed), so that a budget that runs out leaves whole comparisons."""
    seeds = list(dict.fromkeys(r.seed for r in runs if r.role == "student"))
    teachers = [r for r in runs if r.role == "teacher"]
    return teachers + sorted((r for r in runs if r.role == "student"), key=lambda r: seeds.index(r.seed))


def read_plan(exp: Experiment, runs_root: Path, device: str | None = None, *, data: bool = True) -> list[PlannedRun]:
    """:func:`plan_runs` with each run's status, after every existing run folder has been checked to hold the run
    it plans (:func:`check_reusable`) and, with ``data``, every run still to train its data (:func:`check_data`;
    without: nothing will train, as under ``--time-budget 0``, which rewrites the report from the runs alone)."""
    runs = plan_runs(exp, runs_root, device)
    for run in runs:
        check_reusable(runs_root / run.name, run.config)
    runs = [dataclasses.replace(r, status=run_status(runs_root / r.name, r.config.optim.epochs)) for r in runs]
    if data:
        check_data(runs, runs_root, exp.source)
    return runs


def check_resumable(runs: Sequence[PlannedRun], runs_root: Path, source: Path) -> None:
    """Before a run trains: each run's resume snapshot reads (:data:`RUN_UNREADABLE`: a pointer to a snapshot not
    there, as a copy or ``git add`` of a folder in use can leave), or the one-line DardError saying why. The run
    stopped the stretch with it when its turn came, every run under way with it, hours in; --plan called it a status."""
    for run in (r for r in runs if r.status == RUN_UNREADABLE):
        try:
            RunDir(runs_root / run.name).resume_snapshot().read_progress()
        except DardError as e:
            raise DardError(f"{source}: run '{run.name}' cannot resume: {e}") from None


def check_data(runs: Sequence[PlannedRun], runs_root: Path, source: Path) -> None:
    """Each run still to train fits its data (:func:`dard.training.setup.prepare_data`: the validation split, the
    batch against the training images, a new run's subsets within the images there are), its model builds for it
    (``model.kwargs``) and a student's data is its planned teacher's (classes, channels): found out only when that
    run started, after the teacher and the runs before it had trained for hours, or by the estimate after --plan's
    lines, without the run's name."""
    from dard.training.setup import prepare_data

    sizes: dict[str, DataSizes] = {}
    for run in runs:
        if run.done:
            continue
        data = run.config.data
        try:
            bundle = dataset_bundle(data.name, data.dir, data.download)
            # a run to start refuses a subset larger than its data (prepare_data, as `dard train` does once the
            # data loads): a folder's or CIFAR's was found when the run started, hours into the experiment
            sizes[run.name] = DataSizes.of(prepare_data(run.config, bundle, new_run=run.status == RUN_NEW))
            parameter_count(run.config, sizes[run.name])  # the model builds for the data, with its model.kwargs
        except DardError as e:
            raise DardError(f"{source}: run '{run.name}': {e}") from None
    teachers = {_best(runs_root, r.name): r for r in runs if r.role == "teacher"}
    for run in runs:
        teacher = teachers.get(str(run.config.teacher.checkpoint))
        if teacher is None or run.name not in sizes or teacher.name not in sizes:
            continue
        mine, its = sizes[run.name], sizes[teacher.name]
        if (mine.classes, mine.shape[0]) != (its.classes, its.shape[0]):
            raise DardError(
                f"{source}: run '{run.name}': its teacher {teacher.name} learns {its.classes} classes of "
                f"{its.shape[0]}-channel images ({teacher.config.data.name}), the run {mine.classes} of "
                f"{mine.shape[0]}-channel ones ({run.config.data.name}); give the teacher the run's data"
            )


def with_estimates(runs: Sequence[PlannedRun], estimator: Estimator) -> list[PlannedRun]:
    """The runs with what each unfinished one still costs (re-read from its folder: a run that has finished since
    the plan was read counts as done)."""
    out = []
    for run in runs:
        status = run_status(estimator.runs_root / run.name, run.config.optim.epochs)
        estimate = None if status == RUN_DONE else estimator.estimate(run.name, run.config, run.teacher_arch)
        out.append(dataclasses.replace(run, status=status, estimate=estimate))
    return out


def seconds_left(runs: Sequence[PlannedRun]) -> float:
    """The estimated seconds the runs still need, one at a time."""
    return sum(r.estimate.total for r in runs if r.estimate is not None)


def check_output_folder(folder: Path, what: str) -> None:
    """``folder`` can take an experiment's runs or report: a folder (or none yet) that can be written, and not
    inside a run folder (runs or a report among a run's own files, under its lock file)."""
    check_writable(folder, folder=True, what=what)
    inside = enclosing_run(folder / "x")
    if inside is not None:
        raise DardError(f"{what} {folder} lies inside run folder {inside.path}; choose a folder outside runs")


def plan_experiment(exp: Experiment, runs_root: Path) -> list[PlannedRun]:
    """Check an experiment without training anything: every run's config, the run folders it would reuse and the
    datasets still needed (loaded once each, downloaded if the config allows). Returns every run, teachers first,
    with its status."""
    check_output_folder(runs_root, "runs folder")  # as the experiment itself checks it first
    runs = read_plan(exp, runs_root)  # which loads the data of every run still to train (check_data)
    check_resumable(runs, runs_root, exp.source)
    return runs
