"""Everything a run will need, checked before it starts (:func:`open_run`): a typo fails in the first second with
one line instead of after hours of training, and a failed check leaves nothing on disk.

In order, cheapest first: every object the config names is built (the method with its training attack, the
validation attack, the final evaluation suite, the AutoAttack subset and eps sweep), the run folder can be
written, the folder's exclusive lock is taken, the folder is in the state the command needs (empty for a new
run; for ``--resume``, a readable config, resume snapshot and evaluation records, and only changes a resume may
make), the data loads, and the student and the teacher take the dataset's images and return one logit per
class. Under ``torchrun`` every rank checks and all stop together with the same line if one fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

from dard.checkpoint import build_model, model_spec
from dard.config import RunConfig
from dard.errors import DardError
from dard.evaluation.suite import AUTOATTACK_SUBSET_SUITE, attack_from_spec, build_suite
from dard.io import check_writable
from dard.methods import Method
from dard.model_checks import check_input
from dard.models import model_factory
from dard.run_dir import RunDir
from dard.training import distributed as dist
from dard.training.final_eval import SWEEP_ATTACK
from dard.training.resume import ResumeChanges, record_resume_changes, resume_changes
from dard.training.setup import Data, build_method, build_optimizer, float_tensors, load_teacher, prepare_data
from dard.training.state import check_state, read_state

T = TypeVar("T")

TEACHER_HINT = (
    "pass --teacher RUN (a dard run folder or checkpoint, or robustbench:NAME), or set teacher.arch + "
    "teacher.weights for external weights"
)


def _at(key: str, build: Callable[[], T]) -> T:
    """``build()``, its DardError prefixed with the config key it came from."""
    try:
        return build()
    except DardError as e:
        raise DardError(f"{key}: {e}") from None


def check_config(cfg: RunConfig, world_size: int = 1) -> Method:
    """Build every object the config names (no data, no files); returns the method."""
    _at("model.arch", lambda: model_factory(cfg.model.arch))
    method = _at("method", lambda: build_method(cfg))
    if method.needs_teacher and not cfg.teacher.given:
        raise DardError(f"method '{cfg.method.name}' needs a teacher: {TEACHER_HINT}")
    if cfg.teacher.given and not method.needs_teacher:
        given = cfg.teacher.checkpoint or cfg.teacher.weights
        raise DardError(
            f"method '{cfg.method.name}' takes no teacher, but one is given ({given}); drop --teacher / teacher.*"
        )
    _at("val.attack", lambda: attack_from_spec(cfg.val.attack, cfg.eps, cfg.seed, cfg.norm))
    _at("eval.attacks", lambda: build_suite(cfg.eval.attacks, cfg.eps, seed=cfg.seed, norm=cfg.norm))
    if cfg.eval.autoattack_subset:
        subset = AUTOATTACK_SUBSET_SUITE
        _at("eval.autoattack_subset", lambda: build_suite(subset, cfg.eps, seed=cfg.seed, norm=cfg.norm))
    for eps in cfg.eval.eps_sweep:
        _at("eval.eps_sweep", lambda eps=eps: build_suite([SWEEP_ATTACK], eps, seed=cfg.seed, norm=cfg.norm))
    if cfg.optim.batch_size % world_size:
        raise DardError(
            f"optim.batch_size {cfg.optim.batch_size} (the global batch) must be divisible by the "
            f"{world_size} processes"
        )
    return method


def check_folder(cfg: RunConfig, folder: RunDir, resume: bool) -> ResumeChanges:
    """The run folder is what the command needs (read only; under the folder's lock): empty for a new run, or for a
    resume a run whose config, snapshot and evaluation records read back and whose changes are allowed."""
    if not resume:
        if not folder.is_empty():
            raise DardError(
                f"run folder {folder.path} already exists and is not empty; use --resume {folder.path} or another --out"
            )
        return ResumeChanges()
    folder.require_run()
    folder.check_config_unchanged()
    if not folder.has_snapshot() and (folder.is_trained() or folder.read_metrics() or folder.read_evals()):
        raise DardError(
            f"{folder.path} holds a trained run but no {folder.pointer.name}, so it cannot be continued exactly "
            f"(it would train again over its weights); start over with `dard train --config {folder.config} "
            "--out NEW_FOLDER`, or move the folder away to train it again"
        )
    epochs_done = read_state(folder).progress.epoch if folder.has_snapshot() else 0
    folder.read_evals()  # a damaged record would be kept as if the run were evaluated
    return resume_changes(folder, cfg, epochs_done)


def check_models(cfg: RunConfig, method: Method, device: torch.device, resume_from: RunDir | None = None) -> Data:
    """Load the data; the student and the teacher must take its images and give one logit per class; the snapshot
    of ``resume_from`` (if any) must fit the student and its optimizer exactly."""
    data = prepare_data(cfg)
    probe, _ = float_tensors(data.val.subset(range(min(2, len(data.val)))), device)
    student = build_model(model_spec(cfg.model.arch, data.bundle, cfg.model.normalize, cfg.model.kwargs)).to(device)
    if resume_from is not None and resume_from.has_snapshot():
        check_state(read_state(resume_from), student, *build_optimizer(cfg, student, 1))
    check_input(student, probe, data.bundle.num_classes, f"model '{cfg.model.arch}'")
    if method.needs_teacher:
        load_teacher(cfg.teacher, data.bundle, device)  # its classes, channels, image size and finite weights
    return data


def _agreed(step: Callable[[], T], dist_info: dist.DistInfo, device: torch.device) -> T | None:
    """``step()`` on every rank; if it fails on any, every rank stops with a DardError (the failing rank's own)."""
    result, error = None, None
    try:
        result = step()
    except DardError as e:
        error = str(e)
    dist.agree(error is None, error or "another process of this job failed its checks", dist_info, device)
    return result


@contextmanager
def open_run(
    cfg: RunConfig, folder: RunDir, *, resume: bool, device: torch.device, dist_info: dist.DistInfo
) -> Iterator[Data]:
    """Check everything, hold the run folder's lock (rank 0) while the body trains and evaluates, and give the
    data. A new folder the checks created is removed again if they fail."""
    lock = folder.lock() if dist_info.is_main else None

    def first() -> Method:
        method = check_config(cfg, dist_info.world_size)
        if resume:
            folder.require_run()
            folder.check_files()  # links, FIFOs or devices where the run's files belong: refused before the lock
        else:
            check_writable(folder.path, folder=True, what="run folder")
        if lock is not None:
            lock.acquire(create=not resume)
        return method

    try:
        method = _agreed(first, dist_info, device)
        changes = _agreed(lambda: check_folder(cfg, folder, resume), dist_info, device)
        data = _agreed(lambda: check_models(cfg, method, device, folder if resume else None), dist_info, device)
        if lock is not None and changes is not None and changes.changed:
            record_resume_changes(folder, cfg, changes)
        yield data
    finally:
        if lock is not None:
            lock.release()
