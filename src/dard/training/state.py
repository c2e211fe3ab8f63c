"""Resumable training state.

A snapshot (:class:`dard.run_dir.Snapshot`) holds the student weights (safetensors), the optimizer, scheduler and
RNG states (``torch.save`` of tensors and plain containers, read back with ``weights_only=True``) and the
:class:`~dard.run_dir.Progress`. The resume pointer is replaced atomically only after a snapshot is complete, so
a kill at any moment leaves a usable previous snapshot; a snapshot that fails to write (a full disk) is removed
whole, and the pointer keeps naming the previous one.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import torch

from dard.errors import DardError, one_line, shown
from dard.io import check_target, save_tensors, torch_save, write_error
from dard.model_checks import check_finite
from dard.run_dir import CHECKPOINTS, Progress, RunDir, Snapshot
from dard.run_dir.carried import set_aside_by_resume
from dard.run_dir.layout import kept_epoch
from dard.run_dir.pair import saved_epoch
from dard.weights import read_state_dict

_OPTIM_KEYS = ("optimizer", "scheduler", "rng_cpu", "rng_cuda")


@dataclass
class SavedState:
    """A snapshot read back and checked: every file present, of the right shape, with finite weights."""

    snapshot: Snapshot
    weights: dict[str, torch.Tensor]
    optim: dict[str, Any]
    progress: Progress


def save_state(
    folder: RunDir, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, progress: Progress
) -> Snapshot:
    """Write a complete snapshot, then point the resume pointer at it and drop older snapshots."""
    snap = folder.snapshot(progress.global_step)
    check_target(snap.weights, folder.path)  # state-N/ a link: refused, never removed or written through
    try:
        if snap.path.exists():
            shutil.rmtree(snap.path)
        snap.path.mkdir(parents=True)
        save_tensors(snap.weights, model.state_dict())  # state-N/ was checked above: a real folder in the run
        torch_save(
            snap.optimizer,
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            root=folder.path,
        )
        snap.write_progress(progress)
        folder.point_at(snap)
    except BaseException as e:
        shutil.rmtree(snap.path, ignore_errors=True)  # no partial state-N/; resume.json still names the last one
        if isinstance(e, OSError):
            raise write_error(snap.path, e) from None
        raise
    for old in folder.snapshots():
        if old != snap:
            shutil.rmtree(old.path, ignore_errors=True)
    return snap


def _read_optim(path: Path) -> dict[str, Any]:
    """``optim.pt``, tensors only, with its four entries; DardError naming the file otherwise."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DardError(f"resume state file not found: {path}") from None
    except Exception as e:  # a damaged or foreign file must not crash with a traceback
        raise DardError(f"{path} is not a readable resume state ({type(e).__name__}: {one_line(e, 160)})") from None
    missing = [k for k in _OPTIM_KEYS if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise DardError(f"{path}: not a dard resume state (missing {', '.join(missing)})")
    if not (
        isinstance(blob["optimizer"], dict)
        and {"state", "param_groups"} <= set(blob["optimizer"])
        and isinstance(blob["scheduler"], dict)
        and isinstance(blob["rng_cpu"], torch.Tensor)
        and blob["rng_cpu"].dtype == torch.uint8
        and isinstance(blob["rng_cuda"], list)
    ):
        raise DardError(f"{path}: not a dard resume state (an entry has the wrong type)")
    return blob


def _tensor_problem(t: Any, like: torch.Tensor) -> str | None:
    """Why ``t`` cannot stand for ``like`` exactly (a tensor of the same dtype and shape, finite), or None."""
    if not isinstance(t, torch.Tensor):
        return f"is {type(t).__name__}, not a tensor"
    if t.dtype != like.dtype or tuple(t.shape) != tuple(like.shape):
        return f"is {t.dtype} {tuple(t.shape)}, the model needs {like.dtype} {tuple(like.shape)}"
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        return "holds NaN or infinite values"
    return None


def _real(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_state(state: SavedState, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """A snapshot fits ``model`` and a fresh ``optimizer``/``scheduler`` exactly, or a one-line DardError naming the
    file and the entry: weights of the same names, dtypes and shapes; an SGD state of the same parameter groups
    and hyper-parameters, with a momentum buffer of each parameter's dtype and shape once a step was taken; a
    scheduler state with a non-negative step; finite numbers throughout. Loading casts silently, so a snapshot
    that passes only after a cast would resume as another run."""
    snap = state.snapshot
    want = model.state_dict()
    extra, missing = sorted(set(state.weights) - set(want)), sorted(set(want) - set(state.weights))
    if extra or missing:
        which = f"unknown tensor {extra[0]!r}" if extra else f"no tensor {missing[0]!r}"
        raise DardError(f"cannot resume from {snap.weights}: {which} for this model")
    for name, like in want.items():
        if (why := _tensor_problem(state.weights[name], like)) is not None:
            raise DardError(f"cannot resume from {snap.weights}: tensor {name!r} {why}")

    def bad(what: str) -> DardError:
        return DardError(f"cannot resume from {snap.optimizer}: {what}")

    saved, fresh = state.optim["optimizer"], optimizer.state_dict()
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]):
        raise bad("the optimizer's parameter groups differ from this run's")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for g, f in zip(groups, fresh["param_groups"]):
        if not isinstance(g, dict) or set(g) - set(f) or g.get("params") != f["params"]:
            raise bad("the optimizer's parameter groups differ from this run's")
        for key in ("lr", "initial_lr"):
            if not _real(g.get(key)) or g[key] < 0:
                raise bad(f"{key} {shown(g.get(key), 40)} is not a finite non-negative number")
        for key, value in f.items():  # the hyper-parameters the recorded config sets
            if key not in ("params", "lr", "initial_lr") and key in g and g[key] != value:
                raise bad(f"{key} {shown(g[key], 40)} differs from the recorded config's {shown(value, 40)}")
    per_param = saved["state"]
    if not isinstance(per_param, dict) or set(per_param) - set(range(len(params))):
        raise bad("its per-parameter state names unknown parameters")
    momentum = optimizer.param_groups[0].get("momentum", 0)
    for i, param in enumerate(params):
        entry = per_param.get(i, {})
        if not isinstance(entry, dict) or set(entry) - {"momentum_buffer"}:
            raise bad(f"the state of parameter {i} holds unknown entries")
        buf = entry.get("momentum_buffer")
        if buf is None and momentum and state.progress.global_step > 0 and param.requires_grad:
            raise bad(f"parameter {i} has no momentum buffer after {state.progress.global_step} steps")
        if buf is not None and (why := _tensor_problem(buf, param.detach())) is not None:
            raise bad(f"the momentum buffer of parameter {i} {why}")
    sched, fresh_sched = state.optim["scheduler"], scheduler.state_dict()
    if set(sched) - set(fresh_sched) or not {"last_epoch", "base_lrs"} <= set(sched):
        raise bad("the scheduler's state has other entries than this run's")
    last = sched["last_epoch"]
    if not isinstance(last, int) or isinstance(last, bool) or last < 0:
        raise bad(f"the scheduler's step {shown(last, 40)} is not a non-negative integer")
    lrs = [*sched["base_lrs"], *sched.get("_last_lr", [])] if isinstance(sched["base_lrs"], list) else [None]
    if not all(_real(v) and v >= 0 for v in lrs):
        raise bad("the scheduler's learning rates are not finite non-negative numbers")
    rng = state.optim["rng_cpu"]
    if rng.ndim != 1 or rng.numel() != torch.get_rng_state().numel():
        raise bad("the random-number state has the wrong size")


def read_state(folder: RunDir) -> SavedState:
    """The snapshot the resume pointer names, every file read and checked (one-line DardError naming the file
    otherwise); nothing is loaded into a model yet, so a bad snapshot changes nothing."""
    snap = folder.resume_snapshot()
    progress = snap.read_progress()
    weights = read_state_dict(snap.weights)
    check_finite(weights, str(snap.weights))
    return SavedState(snap, weights, _read_optim(snap.optimizer), progress)


def load_state(folder: RunDir, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> Progress:
    """Restore the snapshot the resume pointer points at; returns its progress."""
    state = read_state(folder)
    check_state(state, model, optimizer, scheduler)
    snap = state.snapshot
    try:
        model.load_state_dict(state.weights)
    except RuntimeError as e:
        raise DardError(f"cannot resume from {snap.weights}: {one_line(e, 200)}") from None
    try:
        optimizer.load_state_dict(state.optim["optimizer"])
        scheduler.load_state_dict(state.optim["scheduler"])
        torch.set_rng_state(state.optim["rng_cpu"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise DardError(f"cannot resume from {snap.optimizer}: {type(e).__name__}: {one_line(e, 160)}") from None
    if state.optim["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state.optim["rng_cuda"])
    progress = state.progress
    if progress.train_seconds is None:  # snapshots of older versions did not count it
        progress.train_seconds = 0.0
    return progress


def unrecorded_checkpoints(folder: RunDir, progress: Progress) -> list[tuple[str, int | None, list[Path]]]:
    """The ``best`` and ``last`` checkpoints the resume snapshot ``progress`` does not record, and those kept by
    ``keep_epochs`` (``epoch-005``) of an epoch it has not finished, each as (which, the epoch the snapshot records
    for it or None, its files present). A checkpoint's files are written before the snapshot that records its epoch
    (weights, then metadata, then the snapshot), so a run killed between them left ``best.*`` or ``epoch-005.*`` of
    an epoch its records do not know, or new weights beside the metadata of the save before
    (:mod:`dard.run_dir.pair`)."""
    out = []
    for which, epoch in (("best", progress.best_epoch), ("last", progress.epoch or None)):
        weights, meta = folder.weights(which), folder.checkpoint_meta(which)
        paths = [p for p in (weights, meta) if os.path.lexists(p)]
        if (paths or epoch is not None) and (epoch is None or saved_epoch(weights, meta) != epoch):
            out.append((which, epoch, paths))
    for name in folder.kept_checkpoints():  # keep_epochs' copy of an epoch the snapshot has not finished
        paths = [p for p in (folder.weights(name), folder.checkpoint_meta(name)) if os.path.lexists(p)]
        if set_aside_by_resume(name, progress):
            out.append((name, None, paths))
    return out


def before_first_snapshot(folder: RunDir) -> bool:
    """Whether ``folder``, which has no resume pointer, holds no more than a run killed before its first snapshot
    leaves (nothing trained, or the first epoch's metrics row and checkpoints, written before that epoch's snapshot;
    no evaluation): a resume starts it over, its checkpoints set aside (:func:`settle_checkpoints`). A Ctrl-C or
    SIGKILL there left a folder no resume took, and an experiment's campaign stopped on it until it was moved away.
    More than that (a finished run, later epochs) is a run whose pointer was lost: no exact resume."""
    epochs = [row.epoch for row in folder.read_metrics()] + [kept_epoch(n) or 0 for n in folder.kept_checkpoints()]
    return all(e <= 1 for e in epochs) and not folder.read_evals()


def check_checkpoints_recorded(folder: RunDir, progress: Progress) -> None:
    """For a resume with no epoch left to train, before anything changes: a DardError if a checkpoint is not the one
    its snapshot records (:func:`unrecorded_checkpoints`). Nothing would write it again, and the final evaluation
    measured the ghost as the run's best. Weights that are missing are no ghost (they are written first): left to
    their readers (a finished run's may have stayed behind)."""
    ghosts = [(w, e) for w, e, paths in unrecorded_checkpoints(folder, progress) if folder.weights(w) in paths]
    for which, epoch in ghosts[:1]:
        raise DardError(
            f"{folder.path}: checkpoint {which} is not the one its resume snapshot records "
            f"({_recorded(which, epoch, progress)}), as a run killed between writing it and the "
            f"snapshot leaves it, and no epoch is left to train it again; resume with --epochs above {progress.epoch}"
        )


def settle_checkpoints(folder: RunDir, progress: Progress) -> list[str]:
    """For a resume with epochs to train (which write the checkpoints again): set aside each checkpoint the snapshot
    ``progress`` does not record (:func:`unrecorded_checkpoints`), as ``best.superseded-<k>.*``, never read as the
    run's (it was kept as the run's where the resumed epoch was not chosen again); returns what was done, to say. A
    best set aside or missing had overwritten the one the snapshot's score belongs to, so the best is chosen again
    from the epochs still to train."""
    said = [] if folder.has_snapshot() else ["no resume snapshot (killed before its first one): the run starts over"]
    for which, epoch, paths in unrecorded_checkpoints(folder, progress):
        recorded = _recorded(which, epoch, progress)
        if paths:
            kept = ", ".join(p.name for p in _set_aside_together(folder, paths))
            line = f"checkpoint {which} is not the one the resume snapshot records ({recorded}), as a run killed "
            line += f"between writing it and the snapshot leaves it; kept aside as {kept}"
        else:
            line = f"checkpoint {which} of the resume snapshot ({recorded}) is missing"
        if which == "best" and epoch is not None:
            progress.best_score = progress.best_epoch = None
            line += "; the best checkpoint is chosen again from the epochs still to train"
        said.append(line)
    return said


def _recorded(which: str, epoch: int | None, progress: Progress) -> str:
    """What the snapshot ``progress`` records of the checkpoint ``which``, to say."""
    if which not in CHECKPOINTS:  # a kept epoch's: the snapshot records how far the run got
        return f"it has finished epoch {progress.epoch}"
    return f"epoch {epoch}" if epoch is not None else "none yet"


def _set_aside_together(folder: RunDir, paths: list[Path]) -> list[Path]:
    """Rename ``paths`` (one checkpoint's files) to ``<stem>.superseded-<k><suffix>``, one ``k`` free for all."""
    k = 1
    while any(os.path.lexists(p.with_name(f"{p.stem}.superseded-{k}{p.suffix}")) for p in paths):
        k += 1
    kept = []
    for path in paths:
        new = path.with_name(f"{path.stem}.superseded-{k}{path.suffix}")
        check_target(path, folder.path)
        check_target(new, folder.path)
        try:
            path.rename(new)
        except OSError as e:
            raise write_error(new, e) from None
        kept.append(new)
    return kept
