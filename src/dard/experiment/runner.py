"""Running an experiment: reuse guards, the plan, training and evaluating every run (in parallel on a CPU), the
per-run extras (attack comparison, teacher soft-label gap), then the report."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dard.config import RunConfig
from dard.config.identity import config_diff, config_identity
from dard.errors import DardError
from dard.experiment.clock import PlanClock, say
from dard.experiment.report import write_experiment_report
from dard.experiment.spec import (
    CompareAttacksSpec,
    Experiment,
    LabelGapSpec,
    deep_merge,
    needs_teacher,
    parse_run_config,
    planned_runs,
    teacher_runs,
)
from dard.io import check_writable
from dard.run_dir import CompareFile, FolderLock, LabelGapFile, RunDir
from dard.runtime import die_with_parent
from dard.training.announce import duration


def check_reusable(run_dir: Path, cfg: Mapping[str, Any]) -> None:
    """Raise if ``run_dir`` holds a run made with a different config than ``cfg`` (ignoring device/threads/dir)."""
    folder = RunDir(run_dir)
    if not folder.is_run():
        if not folder.is_empty():
            raise DardError(f"{run_dir} exists but is not a dard run folder; move it away or use another --runs")
        return
    want = config_identity(parse_run_config(dict(cfg), str(run_dir)).model_dump(mode="json"))
    # Parsed again, so options added to dard since the run was made count at their defaults.
    have = config_identity(folder.read_run_config().model_dump(mode="json"))
    diff = config_diff(have, want)
    if diff:
        raise DardError(
            f"{run_dir} was made with a different config ({', '.join(diff[:4])}); delete it or use "
            f"another --runs folder"
        )


def _checked_runs(
    exp: Experiment, runs_root: Path
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, int, dict[str, Any]]]]:
    """(teacher name -> config, student runs) after every config and existing run folder has been checked."""
    unique_teachers = dict(teacher_runs(exp, runs_root).values())  # one shared teacher serves every seed
    students = planned_runs(exp, runs_root)
    for name, cfg in unique_teachers.items():
        check_reusable(runs_root / name, cfg)
    for name, _, cfg in students:
        check_reusable(runs_root / name, cfg)
    return unique_teachers, students


RUN_DONE = "done (reused)"


def run_status(run_dir: Path, epochs: int) -> str:
    """What `dard experiment` would do with this run folder: reuse it, evaluate it, resume it or start it."""
    folder = RunDir(run_dir)
    if folder.is_evaluated():
        return RUN_DONE
    if not folder.has_snapshot():
        return "new"
    progress = folder.read_progress()
    if progress is None:
        return "resume state unreadable: training would stop with an error"
    epoch, batch = progress.epoch, progress.batch
    if epoch >= epochs:
        return "trained; test evaluation pending"
    return f"resumes at epoch {epoch + 1}/{epochs}" + (f", step {batch + 1}" if batch else "")


def plan_experiment(exp: Experiment, runs_root: Path) -> list[dict[str, Any]]:
    """Check an experiment without training anything: every run's config, the run folders it would reuse and the
    datasets still needed (loaded once each, downloaded if the config allows). Returns one row per run, teacher
    first, with its status."""
    from dard.data import load_dataset

    teachers, students = _checked_runs(exp, runs_root)
    planned = [("teacher", n, parse_run_config(c, n)) for n, c in teachers.items()]
    planned += [("student", n, parse_run_config(c, n)) for n, _, c in students]
    rows = [
        {
            "name": name,
            "role": role,
            "method": run.method.name,
            "arch": run.model.arch,
            "epochs": run.optim.epochs,
            "data": run.data.name,
            "status": run_status(runs_root / name, run.optim.epochs),
        }
        for role, name, run in planned
    ]
    needed = {
        (run.data.name, run.data.dir, run.data.download)
        for (_, _, run), row in zip(planned, rows)
        if row["status"] != RUN_DONE
    }
    for name, folder, download in sorted(needed, key=str):
        load_dataset(name, folder, download=download)  # a one-line DardError if missing or corrupt
    return rows


def _train_task(task: tuple) -> str:
    cfg, run_dir, final_eval, threads, device = task
    from dard.training import train

    cfg = deep_merge(cfg, {"speed": {"threads": threads}, "device": device})
    folder = RunDir(run_dir)
    t0 = time.time()
    done = folder.is_evaluated() if final_eval else folder.is_trained()
    if (done or folder.is_evaluated()) and not folder.has_snapshot():  # imported (dard import): nothing to resume
        say(f"{folder.path.name}: reused (imported)")
        return str(run_dir)
    run_cfg = parse_run_config(cfg, str(run_dir))
    if not done:
        status = run_status(folder.path, run_cfg.optim.epochs)
        say(f"{folder.path.name}: starting ({status}{'' if final_eval else ', training only'})")
    train(run_cfg, folder.path, resume=folder.is_run(), final_eval=final_eval, announce=run_cfg.progress)
    if final_eval:
        what = "reused" if done else f"done in {duration(time.time() - t0)}"
    else:
        what = "training reused" if done else f"trained in {duration(time.time() - t0)}"
    say(f"{folder.path.name}: {what}")
    return str(run_dir)


def _fresh(cached: CompareFile | LabelGapFile | None, spec: BaseModel) -> bool:
    """Whether a cached result was computed for this ``spec`` (a changed spec recomputes it)."""
    return cached is not None and cached.spec == spec.model_dump()


def _first_test_images(cfg: RunConfig, n: int, device: str, threads: int | None) -> tuple[Any, Any, Any, Any]:
    """``(data, x, y, device)``: the first ``n`` test images of run config ``cfg`` as float tensors."""
    from dard.runtime import configure_threads, resolve_device
    from dard.training.setup import float_tensors, prepare_data

    dev = resolve_device(device)
    if dev.type == "cpu":
        configure_threads(threads)
    data = prepare_data(cfg)
    x, y = float_tensors(data.test.subset(range(min(n, len(data.test)))), dev)
    return data, x, y, dev


def _compare_task(task: tuple) -> str:
    run_dir, spec, threads, device = task
    compare_attacks(Path(run_dir), CompareAttacksSpec.model_validate(spec), threads=threads, device=device)
    return str(run_dir)


def compare_attacks(
    run_dir: Path, spec: CompareAttacksSpec, *, threads: int | None = None, device: str = "auto"
) -> CompareFile:
    """Evaluate a run's checkpoint with ``spec.attacks`` on its first ``spec.n`` test images (cached in
    ``eval/compare-<checkpoint>.json``; recomputed when the attack set changes)."""
    from dard.checkpoint import load_checkpoint
    from dard.evaluation.suite import attack_from_spec, evaluate
    from dard.runtime import environment

    folder = RunDir(run_dir)
    cached = folder.read_compare(spec.checkpoint)
    if _fresh(cached, spec):
        return cached
    cfg = folder.read_run_config()
    data, x, y, dev = _first_test_images(cfg, spec.n, device, threads)
    model, meta = load_checkpoint(folder.weights(spec.checkpoint), dev, arch=cfg.model.arch)
    attacks = {label: attack_from_spec(a, cfg.eps, cfg.seed, cfg.norm) for label, a in spec.attacks.items()}
    rec = evaluate(
        model,
        x,
        y,
        attacks,
        batch_size=cfg.eval.batch_size,
        device=dev,
        progress=False,
        model_info={**meta["model"], "checkpoint": spec.checkpoint},
        data_info={"name": data.bundle.name, "split": "test", "n": int(x.shape[0])},
        seed=cfg.seed,
        environment=environment(dev),
    )
    result = CompareFile(spec=spec.model_dump(), record=rec)
    with folder.lock():
        folder.write_compare(spec.checkpoint, result)
    return result


def _label_gap_task(task: tuple) -> str:
    run_dir, cfg, spec, threads, device = task
    label_gap(Path(run_dir), cfg, LabelGapSpec.model_validate(spec), threads=threads, device=device)
    return str(run_dir)


def label_gap(
    run_dir: Path, cfg: Mapping[str, Any], spec: LabelGapSpec, *, threads: int | None = None, device: str = "auto"
) -> LabelGapFile:
    """The teacher's soft-label gap for a distilled run (:func:`dard.evaluation.soft_labels.teacher_label_gap`):
    its ``spec.checkpoint`` student attacked with its own training attack and temperature on the first ``spec.n``
    test images. ``cfg`` is the run's planned config (its teacher entry points at this invocation's teacher).
    Cached in ``eval/label-gap-<checkpoint>.json``."""
    from dard.attacks import create_attack
    from dard.attacks.steps import resolve_step
    from dard.checkpoint import load_checkpoint
    from dard.evaluation.soft_labels import teacher_label_gap
    from dard.training.setup import load_teacher

    folder = RunDir(run_dir)
    cached = folder.read_label_gap(spec.checkpoint)
    if _fresh(cached, spec):
        return cached
    run_cfg = parse_run_config(dict(cfg), str(run_dir))
    method = folder.read_info().method
    params, _ = resolve_step(method["attack"])  # the student's own training attack, as recorded
    attack = create_attack(**params)
    data, x, y, dev = _first_test_images(run_cfg, spec.n, device, threads)
    student, _ = load_checkpoint(folder.weights(spec.checkpoint), dev, arch=run_cfg.model.arch)
    teacher, _ = load_teacher(run_cfg.teacher, data.bundle, dev)
    gap = teacher_label_gap(teacher, student, x, y, attack, tau=float(method.get("tau", 1.0)))
    result = LabelGapFile(spec=spec.model_dump(), attack=attack.config(), gap=gap)
    with folder.lock():
        folder.write_label_gap(spec.checkpoint, result)
    return result


def _pool_map(
    fn: Callable[[tuple], str], tasks: list[tuple], jobs: int, on_done: Callable[[str], None] | None = None
) -> list[str]:
    """``fn`` over ``tasks`` (``jobs`` processes at a time), results in task order; ``on_done`` gets each result as
    its task ends."""
    if jobs > 1 and len(tasks) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, context, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(fn, t) for t in tasks]
            for future in as_completed(futures):
                if on_done is not None:
                    on_done(future.result())
            return [f.result() for f in futures]
    results = []
    for t in tasks:
        results.append(fn(t))
        if on_done is not None:
            on_done(results[-1])
    return results


def missing_teacher_weights(cfg: Mapping[str, Any]) -> str | None:
    """Why a planned run cannot train: its teacher's run folder is finished but holds no weights (it was imported
    without them); None when the run can train (or its teacher will be trained first)."""
    ckpt = Path(str((cfg.get("teacher") or {}).get("checkpoint") or ""))
    if not needs_teacher(cfg) or ckpt.exists() or not RunDir(ckpt.parent).is_evaluated():
        return None
    return (
        f"its teacher {ckpt.parent} holds no weights ({ckpt.name}: imported without them?); import the teacher's "
        "archive made with its weights (dard export --weights all)"
    )


def run_experiment(
    exp: Experiment,
    runs_root: Path,
    results_dir: Path,
    *,
    device: str = "auto",
    jobs: int | None = None,
    command: str = "",
    budget: Any = None,
) -> Path | None:
    """Train (or reuse) every run of ``exp``, evaluate, and write the report; returns the path of report.md.

    On a CPU, runs go ``jobs`` at a time in separate processes with one thread each (small models are bound by
    per-call overhead, so processes beat threads); on a GPU they run one after another. With a ``budget``
    (:class:`dard.experiment.budget.BudgetOptions`) the runs go one at a time within it (None: nothing finished).
    The runs folder and the results folder are locked for the whole experiment (each run folder too, while it
    trains or evaluates).
    """
    for folder, what in ((runs_root, "runs folder"), (results_dir, "results folder")):
        check_writable(folder, folder=True, what=what)
    with FolderLock(runs_root, "runs folder"), FolderLock(results_dir, "results folder"):
        if budget is not None:
            from dard.experiment.budget import run_within_budget

            return run_within_budget(exp, runs_root, results_dir, budget, device=device, command=command)
        return _run_experiment(exp, runs_root, results_dir, device=device, jobs=jobs, command=command)


def _run_experiment(
    exp: Experiment, runs_root: Path, results_dir: Path, *, device: str, jobs: int | None, command: str
) -> Path:
    from dard.runtime import resolve_device

    t_start = time.time()
    on_cpu = resolve_device(device).type == "cpu"
    jobs = (jobs or min(2, os.cpu_count() or 1)) if on_cpu else 1
    threads = 1 if jobs > 1 else None
    unique_teachers, students = _checked_runs(exp, runs_root)
    for name, _, cfg in students:
        if not RunDir(runs_root / name).is_evaluated() and (why := missing_teacher_weights(cfg)):
            raise DardError(f"{name} cannot be trained: {why}")

    planned = {**unique_teachers, **{name: cfg for name, _, cfg in students}}
    clock = PlanClock(runs_root, planned, unique_teachers, device=device, jobs=jobs)
    say(f"{len(planned)} runs in {runs_root}, {jobs} at a time; {clock.status()}")
    # Teachers first, with every thread; their test evaluation then runs beside the students.
    for name, cfg in unique_teachers.items():
        _train_task((cfg, str(runs_root / name), False, None, device))
        say(clock.status())
    tasks = [(cfg, str(runs_root / name), True, threads, device) for name, cfg in unique_teachers.items()]
    tasks += [(cfg, str(runs_root / name), True, threads, device) for name, _, cfg in students]
    run_dirs = [Path(p) for p in _pool_map(_train_task, tasks, jobs, on_done=lambda p: clock.finish(Path(p).name))]

    run_extras(exp, runs_root, run_dirs, device=device, jobs=jobs, threads=threads)
    return write_experiment_report(exp, run_dirs, results_dir, command=command, seconds=time.time() - t_start)


def run_extras(
    exp: Experiment, runs_root: Path, run_dirs: list[Path], *, device: str, jobs: int = 1, threads: int | None = None
) -> None:
    """The experiment's per-run extras (attack comparison, label gap) for the finished runs that hold the weights
    they need; a run imported without them keeps the results it was exported with."""
    compare = exp.spec.compare_attacks
    if compare is not None:
        have = [p for p in run_dirs if RunDir(p).weights(compare.checkpoint).exists()]
        _pool_map(_compare_task, [(str(p), compare.model_dump(), threads, device) for p in have], jobs)
    gap = exp.spec.label_gap
    if gap is not None:
        names = {p.name for p in run_dirs if RunDir(p).weights(gap.checkpoint).exists()}
        distilled = [
            (str(runs_root / name), cfg, gap.model_dump(), threads, device)
            for name, _, cfg in planned_runs(exp, runs_root)
            if name in names and needs_teacher(cfg) and missing_teacher_weights(cfg) is None
        ]
        _pool_map(_label_gap_task, distilled, jobs)
