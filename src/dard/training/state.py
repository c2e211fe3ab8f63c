"""Resumable training state.

A snapshot (:class:`dard.run_dir.Snapshot`) holds the student weights (safetensors), the optimizer, scheduler and
RNG states (``torch.save`` of tensors and plain containers, read back with ``weights_only=True``) and the
:class:`~dard.run_dir.Progress`. The resume pointer is replaced atomically only after a snapshot is complete, so
a kill at any moment leaves a usable previous snapshot; a snapshot that fails to write (a full disk) is removed
whole, and the pointer keeps naming the previous one.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dard.errors import DardError, one_line
from dard.io import save_tensors, torch_save, write_error
from dard.model_checks import check_finite
from dard.run_dir import Progress, RunDir, Snapshot
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
    try:
        if snap.path.exists():
            shutil.rmtree(snap.path)
        snap.path.mkdir(parents=True)
        save_tensors(snap.weights, model.state_dict())
        torch_save(
            snap.optimizer,
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
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
    return state.progress
