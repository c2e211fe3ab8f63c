"""Resumable training state.

A snapshot (:class:`dard.run_dir.Snapshot`) holds the student weights (safetensors), the optimizer, scheduler and
RNG states (``torch.save`` of tensors and plain containers, read back with ``weights_only=True``) and the
:class:`~dard.run_dir.Progress`. The resume pointer is replaced atomically only after a snapshot is complete, so
a kill at any moment leaves a usable previous snapshot.
"""

from __future__ import annotations

import shutil
from typing import Any

import torch

from dard.errors import DardError
from dard.io import save_tensors, torch_save
from dard.run_dir import Progress, RunDir, Snapshot


def save_state(
    folder: RunDir, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, progress: Progress
) -> Snapshot:
    """Write a complete snapshot, then point the resume pointer at it and drop older snapshots."""
    snap = folder.snapshot(progress.global_step)
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
    for old in folder.snapshots():
        if old != snap:
            shutil.rmtree(old.path, ignore_errors=True)
    return snap


def load_state(folder: RunDir, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> Progress:
    """Restore the snapshot the resume pointer points at; returns its progress."""
    from safetensors.torch import load_file

    snap = folder.resume_snapshot()
    try:
        model.load_state_dict(load_file(str(snap.weights)))
        blob = torch.load(snap.optimizer, map_location="cpu", weights_only=True)
        progress = snap.read_progress()
    except DardError:
        raise
    except Exception as e:  # a damaged snapshot must not crash with a traceback
        raise DardError(
            f"cannot resume from {snap.path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["rng_cpu"])
    if blob["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng_cuda"])
    return progress
