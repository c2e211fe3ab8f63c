"""An experiment's per-run extras, computed once its runs are trained: the attack comparison
(``compare_attacks``: a run's checkpoint under several attacks), the teacher's soft-label gap (``label_gap``,
distilled runs) and the teacher on its own (``teacher_quality``, distilled runs: the teacher-quality ladder), each
cached in the run folder and recomputed when its spec (or teacher) changes. (``plot_param`` needs no computation:
the report draws it from the runs' records.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

from pydantic import BaseModel

from dard.attacks.threat import NORM_NAMES
from dard.config import RunConfig
from dard.config.read import build_method
from dard.experiment.left_out import compare_skip, gap_measures, label_gap_skip, measured_teacher, teacher_quality_skip
from dard.experiment.plan import PlannedRun
from dard.experiment.pool import pool_map
from dard.experiment.spec import CompareAttacksSpec, ExperimentSpec, LabelGapSpec, TeacherQualitySpec
from dard.methods.base import training_attack_passes
from dard.models import library_prefix
from dard.run_dir import CompareFile, LabelGapFile, RunDir, TeacherQualityFile
from dard.training.cost import DataSizes, arch_macs, attack_passes, recorded_teacher_kwargs, teacher_arch

_Cached = TypeVar("_Cached", CompareFile, LabelGapFile)


def _fresh(cached: _Cached | None, spec: BaseModel) -> TypeGuard[_Cached]:
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


def label_gap(
    run_dir: Path, cfg: RunConfig, spec: LabelGapSpec, *, threads: int | None = None, device: str = "auto"
) -> LabelGapFile:
    """The teacher's soft-label gap for a distilled run (:func:`dard.evaluation.soft_labels.teacher_label_gap`):
    its own training attack and temperature on the first ``spec.n`` test images, crafted against the model its
    training attacked (the ``spec.checkpoint`` student, or the teacher under DARD's ``attack_target: teacher``;
    ``attack["against"]`` says which). ``cfg`` is the run's planned config (its teacher entry points at this
    invocation's teacher). Cached in ``eval/label-gap-<checkpoint>.json``."""
    from dard.attacks import create_attack
    from dard.attacks.steps import resolve_step
    from dard.checkpoint import load_checkpoint
    from dard.evaluation.soft_labels import teacher_label_gap
    from dard.training.setup import load_teacher

    folder = RunDir(run_dir)
    method = folder.read_info().method
    against = str(method.get("attack_target", "student"))
    cached = folder.read_label_gap(spec.checkpoint)
    if _fresh(cached, spec) and cached.attack.get("against", "student") == against:  # older files: the student
        return cached
    params, _ = resolve_step(method["attack"])  # the run's own training attack, as recorded
    attack = create_attack(**params)
    data, x, y, dev = _first_test_images(cfg, spec.n, device, threads)
    student, _ = load_checkpoint(folder.weights(spec.checkpoint), dev, arch=cfg.model.arch)
    # the experiment's teacher (or one checked with its plan): its own run's extras may hold its folder's lock
    teacher, _ = load_teacher(cfg.teacher, data.bundle, dev, NORM_NAMES[cfg.norm], in_use_ok=True)
    target = teacher if against == "teacher" else student
    gap = teacher_label_gap(teacher, target, x, y, attack, tau=float(method.get("tau", 1.0)))
    result = LabelGapFile(spec=spec.model_dump(), attack={**attack.config(), "against": against}, gap=gap)
    with folder.lock():
        folder.write_label_gap(spec.checkpoint, result)
    return result


#: the attack a teacher is measured with (a suite label), beside its clean accuracy
TEACHER_ATTACK = "pgd20"


def teacher_quality(
    run_dir: Path, cfg: RunConfig, spec: TeacherQualitySpec, *, threads: int | None = None, device: str = "auto"
) -> TeacherQualityFile:
    """A distilled run's teacher on its own: the one ``cfg`` names (the run's planned config: a dard checkpoint,
    external weights or a zoo model), clean and under PGD-20 on the first ``spec.n`` test images. Cached in
    ``eval/teacher.json``; measured again when the spec or the teacher changes (:func:`_teacher_key`)."""
    from dard.checkpoint import checkpoint_meta
    from dard.evaluation.suite import build_suite, evaluate
    from dard.runtime import environment
    from dard.training.setup import load_teacher

    folder, key = RunDir(run_dir), _teacher_key(cfg)
    cached = folder.read_teacher_quality()
    if (
        cached is not None
        and cached.spec == spec.model_dump()
        and all(cached.teacher.get(k) == v for k, v in key.items())
    ):
        return cached
    data, x, y, dev = _first_test_images(cfg, spec.n, device, threads)
    # the experiment's teacher (or one checked with its plan): its own run's extras may hold its folder's lock
    teacher, info = load_teacher(cfg.teacher, data.bundle, dev, NORM_NAMES[cfg.norm], in_use_ok=True)
    about = {**info, **key}
    if "weights_digest" in key:  # a dard checkpoint: the file and its epoch, for the report's column
        checkpoint = Path(str(cfg.teacher.checkpoint))
        about.update(checkpoint=checkpoint.as_posix(), epoch=checkpoint_meta(checkpoint)[1].get("epoch"))
    rec = evaluate(
        teacher,
        x,
        y,
        build_suite([TEACHER_ATTACK], cfg.eps, seed=cfg.seed, norm=cfg.norm),
        batch_size=cfg.eval.batch_size,
        device=dev,
        progress=False,
        model_info=about,
        data_info={"name": data.bundle.name, "split": "test", "n": int(x.shape[0]), "first_n": int(x.shape[0])},
        seed=cfg.seed,
        environment=environment(dev),
    )
    result = TeacherQualityFile(spec=spec.model_dump(), teacher=about, record=rec)
    with folder.lock():
        folder.write_teacher_quality(result)
    return result


def _teacher_key(cfg: RunConfig) -> dict[str, Any]:
    """What makes the teacher the one measured, beside its cached result: a dard checkpoint's tensor digest (what
    the cache has always held), or for external weights and a zoo model the SHA-256 of the files read (run.json's
    ``teacher_sha256``) and how they are built (the architecture, its normalisation and factory arguments; the zoo
    name and threat model)."""
    from dard.checkpoint import weights_digest
    from dard.training.setup import teacher_sha256

    t = cfg.teacher
    if t.weights is None and not library_prefix(t.checkpoint):
        return {"weights_digest": weights_digest(Path(str(t.checkpoint)))}
    sha = teacher_sha256(t, cfg.data.name, NORM_NAMES[cfg.norm])
    if t.weights is not None:
        return {"weights_sha256": sha, "arch": t.arch, "normalize": t.normalize, "kwargs": dict(t.kwargs)}
    return {"weights_sha256": sha, "arch": t.checkpoint, "threat_model": NORM_NAMES[cfg.norm]}


@dataclass(frozen=True)
class _CompareTask:
    run_dir: Path
    spec: CompareAttacksSpec
    threads: int | None
    device: str


@dataclass(frozen=True)
class _LabelGapTask:
    run_dir: Path
    config: RunConfig
    spec: LabelGapSpec
    threads: int | None
    device: str


@dataclass(frozen=True)
class _TeacherQualityTask:
    run_dir: Path
    config: RunConfig
    spec: TeacherQualitySpec
    threads: int | None
    device: str


def _teacher_quality_task(task: _TeacherQualityTask) -> str:
    teacher_quality(task.run_dir, task.config, task.spec, threads=task.threads, device=task.device)
    return str(task.run_dir)


def _compare_task(task: _CompareTask) -> str:
    compare_attacks(task.run_dir, task.spec, threads=task.threads, device=task.device)
    return str(task.run_dir)


def _label_gap_task(task: _LabelGapTask) -> str:
    label_gap(task.run_dir, task.config, task.spec, threads=task.threads, device=task.device)
    return str(task.run_dir)


def run_extras(
    spec: ExperimentSpec,
    runs_root: Path,
    runs: Sequence[PlannedRun],
    *,
    device: str,
    jobs: int = 1,
    threads: int | None = None,
) -> None:
    """The experiment's per-run extras for the finished ``runs`` that hold the weights they need; a run imported
    without them keeps the results it was exported with."""
    compare = spec.compare_attacks
    if compare is not None:
        have = [
            runs_root / r.name for r in runs if compare_skip(RunDir(runs_root / r.name), compare.checkpoint) is None
        ]
        pool_map(_compare_task, [_CompareTask(p, compare, threads, device) for p in have], jobs)
    gap = spec.label_gap
    if gap is not None:
        distilled = [
            _LabelGapTask(runs_root / r.name, r.config, gap, threads, device)
            for r in runs
            if label_gap_skip(r.config, RunDir(runs_root / r.name), gap.checkpoint) is None
        ]
        pool_map(_label_gap_task, distilled, jobs)
    quality = spec.teacher_quality
    if quality is not None:
        tasks = [
            _TeacherQualityTask(runs_root / r.name, r.config, quality, threads, device)
            for r in runs
            if teacher_quality_skip(r.config, RunDir(runs_root / r.name)) is None
        ]
        pool_map(_teacher_quality_task, tasks, jobs)


def extras_passes(spec: ExperimentSpec, cfg: RunConfig, sizes: DataSizes) -> float:
    """Passes of the run's network that its extras take (the budget's estimate of them): every compared attack
    (and its scoring forward) and the label gap's training attack on their first test images, and the teacher's
    own measurement counted in passes of the student (scaled by their multiply-adds)."""
    from dard.evaluation.labels import DEFAULT_SUITE

    passes, test = 0.0, sizes.test
    if spec.compare_attacks is not None:
        attacks = [DEFAULT_SUITE.get(a.get("name", ""), a) | a for a in spec.compare_attacks.attacks.values()]
        passes += min(spec.compare_attacks.n, test) * (1 + sum(attack_passes(a) for a in attacks))
    if spec.label_gap is not None and gap_measures(cfg):  # the runs it leaves out cost nothing
        passes += min(spec.label_gap.n, test) * training_attack_passes(build_method(cfg).config())
    t_arch = teacher_arch(cfg) if spec.teacher_quality is not None and measured_teacher(cfg) else None
    if spec.teacher_quality is not None and t_arch:
        kwargs = recorded_teacher_kwargs(cfg)
        scale = arch_macs(t_arch, sizes.classes, sizes.shape, kwargs) / arch_macs(
            cfg.model.arch, sizes.classes, sizes.shape, cfg.model.kwargs
        )
        passes += min(spec.teacher_quality.n, test) * (1 + attack_passes(DEFAULT_SUITE[TEACHER_ATTACK])) * scale
    return passes


def extras_cached(spec: ExperimentSpec, folder: RunDir) -> bool:
    """Whether every extra of the run has a cached result (checked against the spec when it runs, and cheap)."""
    compare, gap, quality = spec.compare_attacks, spec.label_gap, spec.teacher_quality
    return (
        (compare is None or folder.read_compare(compare.checkpoint) is not None)
        and (gap is None or folder.read_label_gap(gap.checkpoint) is not None)
        and (quality is None or folder.read_teacher_quality() is not None)
    )
