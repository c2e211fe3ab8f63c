"""Everything a run will need, checked before it starts (:func:`open_run`): a typo fails in the first second with
one line instead of after hours of training, and a failed check leaves nothing on disk.

In order, cheapest first: every object the config names is built (the method with its training attack, the
validation attack, the final evaluation suite, the AutoAttack subset and eps sweep), the run folder can be
written, the folder's exclusive lock is taken, the folder is in the state the command needs (empty for a new
run; for ``--resume``, a readable config, resume snapshot and evaluation records, and only changes a resume may
make), the data loads, and the student and the teacher take the dataset's images and return one logit per
class. Under ``torchrun`` every rank checks and all stop together with the same line if one fails.

What the checks build is what the run uses (:class:`RunParts`): the loop and the final evaluation build nothing
again. The run's RNG is seeded right before the student, so the student's and the teacher's initialisations are
the first draws of the run's stream, as they have always been.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

import dard.training.distributed as dist
from dard.attacks import Attack
from dard.attacks.threat import NORM_NAMES
from dard.checkpoint import build_model, model_spec
from dard.config import RunConfig
from dard.config.read import build_method, build_val_attack
from dard.data import DATASETS, known_sizes, known_split_sizes
from dard.errors import DardError, shown
from dard.io import check_writable
from dard.methods import Method
from dard.model_checks import check_input
from dard.models import check_factory_kwargs, model_factory
from dard.models.robustbench import check_zoo_normalization
from dard.run_dir import RunDir
from dard.runtime import seed_everything
from dard.training.final_eval import EvalAttacks, eval_attacks
from dard.training.resume import ResumeChanges, record_resume_changes, resume_changes
from dard.training.setup import (
    Data,
    at_key,
    build_optimizer,
    check_subsets,
    float_tensors,
    load_teacher,
    prepare_data,
    teacher_sha256,
)
from dard.training.state import SavedState, before_first_snapshot, check_checkpoints_recorded, check_state, read_state
from dard.training.teacher_checks import check_teacher, check_teacher_config
from dard.user_code import release_warnings

T = TypeVar("T")


@dataclass
class Checked:
    """The loss and the attacks a config names, built (and so checked) before anything else."""

    method: Method  # with its training attack
    val_attack: Attack  # validation's (seeded: the same attack at every validation)
    eval_attacks: EvalAttacks  # the final evaluation's
    teacher_sha256: str | None = None  # of the teacher's weights file (run.json), once the teacher is checked


@dataclass
class RunParts:
    """Everything :func:`open_run` built while checking, handed to the training loop and the final evaluation."""

    data: Data
    spec: dict[str, Any]  # how to rebuild the student (stored in its checkpoints)
    student: nn.Module  # on the device, freshly initialised from the run's seed
    teacher: nn.Module | None  # frozen, in eval mode; None when the method takes none
    teacher_info: dict[str, Any] | None  # the teacher's provenance (run.json)
    teacher_sha256: str | None  # of its weights file (run.json)
    method: Method
    val_attack: Attack
    eval_attacks: EvalAttacks


def check_config(
    cfg: RunConfig,
    world_size: int = 1,
    make_method: Callable[[RunConfig], Method] = build_method,
    *,
    new_run: bool = True,
    teacher: bool = True,
) -> Checked:
    """Build every object the config names (no data, no files, no models): the method (with ``make_method``) and
    every attack. ``new_run``: the config is the user's, not a run folder's record (which states every key), and
    its milestones are checked; ``teacher``: the teacher keys too (`dard config show`'s config may leave it out)."""
    check_names(cfg)
    if new_run and "normalize" in cfg.model.model_fields_set:  # model_spec drops it for a zoo architecture
        stated, instead = "model.normalize: true", "drop model.normalize (or set it false)"
        check_zoo_normalization(cfg.model.arch, cfg.model.normalize, stated, instead)
    subset = any(n is not None for n in (cfg.data.train_subset, cfg.data.test_subset, cfg.eval.autoattack_subset))
    sizes = known_split_sizes(cfg.data.name, cfg.data.val_size, cfg.data.dir) if new_run and subset else None
    if sizes is not None:  # the digits, a folder's files: the subsets are checked before the data loads
        check_subsets(cfg, *sizes)
    method = at_key("method", lambda: make_method(cfg))
    if teacher:
        check_teacher_config(cfg, method.needs_teacher)
    if not method.robust and cfg.val.select_by == "robust":
        raise DardError(
            f"val.select_by: robust picks method '{cfg.method.name}''s best checkpoint by a robust accuracy that is "
            "about 0 at every epoch (an early epoch wins); set val.select_by: clean"
        )
    check_switches_in_use(cfg)
    check_warmup(cfg)
    val_attack = at_key("val.attack", lambda: build_val_attack(cfg))
    final = eval_attacks(cfg)  # after val.attack: the order the checks have always reported in
    if cfg.speed.compile:
        check_compile_backend(cfg.speed.compile_backend)
    if cfg.optim.batch_size % world_size:
        raise DardError(
            f"optim.batch_size {cfg.optim.batch_size} (the global batch) must be divisible by the "
            f"{world_size} processes"
        )
    if new_run:  # a run that resumes keeps those it recorded
        check_milestones(cfg)
    return Checked(method=method, val_attack=val_attack, eval_attacks=final)


def check_names(cfg: RunConfig) -> None:
    """The dataset and the model the config names exist, and the model's factory takes ``model.kwargs`` (also what
    ``dard config show`` checks, which showed ``model.arch: resnet21`` as a valid config)."""
    at_key("data.name", lambda: DATASETS.get(cfg.data.name))  # was found when the data loaded, under the lock
    at_key("model.arch", lambda: model_factory(cfg.model.arch))
    at_key("model.kwargs", lambda: check_factory_kwargs(cfg.model.arch, cfg.model.kwargs))


def check_switches_in_use(cfg: RunConfig) -> None:
    """No setting another one switches off, set away from its default: ``optim.milestones`` and ``optim.gamma`` under
    a schedule other than ``step``, ``speed.compile_backend`` and ``speed.compile_mode`` without ``speed.compile``
    (each was taken, and the run went on without it)."""
    unused = {"milestones": "step", "gamma": "step"} if cfg.optim.schedule != "step" else {}
    for key, schedule in unused.items():
        default = type(cfg.optim).model_fields[key].get_default(call_default_factory=True)
        if getattr(cfg.optim, key) != default:  # an experiment's run under its base's: the default undoes it
            raise DardError(
                f"optim.{key} applies to optim.schedule {schedule} only, and the schedule is {cfg.optim.schedule}: "
                f"drop optim.{key} (or set its default, {default}) or set optim.schedule: {schedule}"
            )
    for key in ("compile_backend", "compile_mode") if not cfg.speed.compile else ():
        if getattr(cfg.speed, key) != type(cfg.speed).model_fields[key].get_default():
            raise DardError(f"speed.{key} applies with speed.compile: true only; set it, or drop speed.{key}")


def check_warmup(cfg: RunConfig) -> None:
    """A warm-up that ends before the run does (checked on the epochs a resume gives, which may add some): one of
    ``optim.epochs`` or more left the learning rate rising to the last step, or below ``optim.lr`` throughout, and
    the schedule never began, in silence (:func:`dard.training.setup.lr_lambda`)."""
    warm, epochs = cfg.optim.warmup_epochs, cfg.optim.epochs
    if warm and warm >= epochs:
        ends = f"end at {epochs}/{warm} of optim.lr, never reaching it" if warm > epochs else "rise until the last step"
        raise DardError(
            f"optim.warmup_epochs {warm} is not below optim.epochs {epochs}: the learning rate would {ends}, and the "
            f"{cfg.optim.schedule} schedule would never begin; set fewer warm-up epochs or more epochs (--epochs)"
        )


def check_milestones(cfg: RunConfig) -> None:
    """A new run's ``optim.milestones`` lie before its last epoch (a run that resumes keeps those it recorded): one at
    or past ``optim.epochs`` never decays the learning rate, and ``--epochs 10`` on a config of 50 epochs at [30, 40]
    trained at the full rate throughout, in silence (unset, the default milestones scale to the epochs: the schema)."""
    late = [m for m in cfg.optim.milestones if m >= cfg.optim.epochs] if cfg.optim.schedule == "step" else []
    if late:
        e = cfg.optim.epochs
        raise DardError(
            f"optim.milestones {late} are not before optim.epochs {e}: the learning rate would never decay there; "
            f"set milestones within the run (the field's 60% and 80%: [{round(0.6 * e)}, {round(0.8 * e)}]), or drop "
            "optim.milestones to have them scaled to the epochs"
        )


def check_compile_backend(name: str) -> None:
    """``name`` is a backend ``torch.compile`` knows (its own, and those installed packages register); torch names
    an unknown one only when it compiles, after the data and the models are loaded."""
    import torch.compiler  # imports torch._dynamo: only for a run that compiles anyway

    if name not in torch.compiler.list_backends(exclude_tags=()):  # the debugging backends (aot_eager) included
        usual = ", ".join(["aot_eager", "eager", *torch.compiler.list_backends()])
        raise DardError(f"speed.compile_backend: torch.compile has no backend {shown(name)}; e.g. {usual}")


def check_folder(cfg: RunConfig, folder: RunDir, resume: bool, teacher_sha256: str | None = None) -> ResumeChanges:
    """The run folder is what the command needs (read only; under the folder's lock): empty for a new run, or for a
    resume a run whose config, snapshot and evaluation records read back, whose changes are allowed, and whose
    teacher's weights (``teacher_sha256``) are the ones it started with, where run.json records them."""
    if not resume:
        if not folder.is_empty():
            raise DardError(
                f"run folder {folder.path} already exists and is not empty; use --resume {folder.path} or another --out"
            )
        return ResumeChanges()
    folder.require_run()
    folder.check_config_unchanged()
    recorded = folder.read_info().teacher_sha256
    if recorded and teacher_sha256 and recorded != teacher_sha256:  # `--set teacher.checkpoint=` of other weights
        raise DardError(
            f"teacher {cfg.teacher.checkpoint or cfg.teacher.weights} is not the one this run started with: its "
            f"weights' SHA-256 is {teacher_sha256[:16]}..., {folder.run_info} records {recorded[:16]}...; give the "
            "run's own teacher where it lies now (--set teacher.checkpoint=...)"
        )
    if not folder.has_snapshot() and not before_first_snapshot(folder):
        raise DardError(
            f"{folder.path} holds a trained run but no {folder.pointer.name}, so it cannot be continued exactly "
            f"(it would train again over its weights); start over with `dard train --config {folder.config} "
            "--out NEW_FOLDER`, or move the folder away to train it again"
        )
    state = read_state(folder) if folder.has_snapshot() else None
    if state is not None:
        _check_snapshot_fits(cfg, state)
        if state.progress.epoch >= cfg.optim.epochs:  # no epoch left to write the checkpoints again
            check_checkpoints_recorded(folder, state.progress)
    folder.read_evals()  # a damaged record would be kept as if the run were evaluated
    return resume_changes(folder, cfg, state.progress.epoch if state is not None else 0)


def _check_snapshot_fits(cfg: RunConfig, state: SavedState) -> None:
    """The resume snapshot fits a student built for the dataset's sizes, where known without loading the data
    (:func:`dard.data.known_sizes`), and its optimizer: a snapshot of other tensors was found after the data had
    loaded. The global RNG is left as it was; :func:`build_models` checks again against the data's student."""
    classes, channels = known_sizes(cfg.data.name, cfg.data.dir)
    if classes is None or channels is None:
        return
    spec = {"arch": cfg.model.arch, "num_classes": classes, "in_channels": channels, "mean": None, "std": None}
    with torch.random.fork_rng(devices=[]):
        student = build_model({**spec, **({"kwargs": dict(cfg.model.kwargs)} if cfg.model.kwargs else {})})
        check_state(state, student, *build_optimizer(cfg, student, 1))


@contextmanager
def _rng_untouched(device: torch.device) -> Iterator[None]:
    """Run the block on a copy of the RNG state: a check between the student and the teacher must not move the
    run's stream on (a model may draw in its forward)."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        yield


def build_models(
    cfg: RunConfig,
    checked: Checked,
    device: torch.device,
    resume_from: RunDir | None = None,
    *,
    own_teacher: bool = False,
) -> RunParts:
    """Load the data, seed the run's RNG, build the student and the teacher; both must take the data's images and
    give one logit per class, and the snapshot of ``resume_from`` (if any) must fit the student and its optimizer
    exactly. ``own_teacher``: the teacher's run folder may be locked (:func:`open_run`)."""
    data = prepare_data(cfg, new_run=resume_from is None)
    probe, _ = float_tensors(data.val.subset(range(min(2, len(data.val)))), device)
    # The run's stream starts here: the student's initialisation, then the teacher's (replaced by its weights, but
    # drawn all the same), are its first draws; a resume replaces the stream with its snapshot's afterwards.
    seed_everything(cfg.seed)
    spec = model_spec(cfg.model.arch, data.bundle, cfg.model.normalize, cfg.model.kwargs)
    student = build_model(spec).to(device)
    with _rng_untouched(device):
        if resume_from is not None and resume_from.has_snapshot():
            check_state(read_state(resume_from), student, *build_optimizer(cfg, student, 1))
        check_input(student, probe, data.bundle.num_classes, f"model '{cfg.model.arch}'", trained=True)
    teacher, teacher_info, sha = None, None, checked.teacher_sha256
    if checked.method.needs_teacher:  # load_teacher checks its classes, channels, image size and finite weights
        threat = NORM_NAMES[cfg.norm]
        teacher, teacher_info = load_teacher(cfg.teacher, data.bundle, device, threat, in_use_ok=own_teacher)
        # a zoo model's, fetched by load_teacher
        sha = sha or teacher_sha256(cfg.teacher, data.bundle.name, threat, in_use_ok=own_teacher)
    return RunParts(
        data=data,
        spec=spec,
        student=student,
        teacher=teacher,
        teacher_info=teacher_info,
        teacher_sha256=sha,
        method=checked.method,
        val_attack=checked.val_attack,
        eval_attacks=checked.eval_attacks,
    )


def _agreed(step: Callable[[], T], dist_info: dist.DistInfo, device: torch.device) -> T | None:
    """``step()`` on every rank; if it fails on any, every rank stops with a DardError (the failing rank's own)."""
    result, error = None, None
    try:
        result = step()
    except DardError as e:
        error = str(e)
    dist.agree(error is None, error or "", dist_info, device)  # every rank raises the first failing rank's error
    return result


@contextmanager
def open_run(
    cfg: RunConfig,
    folder: RunDir,
    *,
    resume: bool,
    device: torch.device,
    dist_info: dist.DistInfo,
    make_method: Callable[[RunConfig], Method] = build_method,
    own_teacher: bool = False,
) -> Iterator[RunParts]:
    """Check everything, hold the run folder's lock (rank 0) while the body trains and evaluates, and give what the
    checks built. A new folder the checks created is removed again if they fail. ``make_method`` builds the loss
    from the config (the loop passes its own, the one a caller may wrap). ``own_teacher``: the teacher is the
    caller's, whose training it finished (an experiment's, whose evaluation may hold its folder's lock meanwhile);
    any other teacher's run must not be in use."""
    lock = folder.lock() if dist_info.is_main else None

    def first() -> Checked:
        checked = check_config(cfg, dist_info.world_size, make_method, new_run=not resume)
        if checked.method.needs_teacher:
            check_teacher(cfg, in_use_ok=own_teacher, student=folder)
            threat = NORM_NAMES[cfg.norm]
            checked.teacher_sha256 = teacher_sha256(cfg.teacher, cfg.data.name, threat, in_use_ok=own_teacher)
        if resume:
            folder.require_run()
            folder.check_files()  # links, FIFOs or devices where the run's files belong: refused before the lock
        else:
            check_writable(folder.path, folder=True, what="run folder")
        if lock is not None:
            lock.acquire(create=not resume)
        return checked

    try:
        checked = _agreed(first, dist_info, device)
        assert checked is not None  # _agreed raised on every rank otherwise
        changes = _agreed(lambda: check_folder(cfg, folder, resume, checked.teacher_sha256), dist_info, device)
        resume_from = folder if resume else None
        parts = _agreed(
            lambda: build_models(cfg, checked, device, resume_from, own_teacher=own_teacher), dist_info, device
        )
        assert parts is not None
        release_warnings()  # the models are loaded and checked: their code's warnings may be shown now
        if lock is not None and changes is not None and changes.changed:
            record_resume_changes(folder, cfg, changes)
        yield parts
    finally:
        if lock is not None:
            lock.release()
