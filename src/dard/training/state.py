"""Resumable training state.

A snapshot is a folder ``state-<global_step>/`` holding the student weights (safetensors), the optimizer,
scheduler and RNG states (``torch.save`` of tensors and plain containers, read back with
``weights_only=True``) and ``progress.json``. The pointer file ``resume.json`` is replaced atomically only
after a snapshot is complete, so a kill at any moment leaves a usable previous snapshot.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from dard.errors import DardError
from dard.io import read_json, save_tensors, torch_save, write_json

POINTER = "resume.json"


def save_state(
    run_dir: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, progress: dict[str, Any]
) -> Path:
    """Write a complete snapshot, then point ``resume.json`` at it and drop older snapshots."""
    snap = run_dir / f"state-{int(progress['global_step']):09d}"
    if snap.exists():
        shutil.rmtree(snap)
    snap.mkdir(parents=True)
    save_tensors(snap / "student.safetensors", model.state_dict())
    torch_save(
        snap / "optim.pt",
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    )
    write_json(snap / "progress.json", progress)
    write_json(run_dir / POINTER, {"snapshot": snap.name})
    for old in run_dir.glob("state-*"):
        if old != snap:
            shutil.rmtree(old, ignore_errors=True)
    return snap


def read_progress(run_dir: Path) -> dict[str, Any] | None:
    """The progress dict of the snapshot ``resume.json`` points at, or None if there is none or it is unreadable."""
    try:
        return read_json(run_dir / read_json(run_dir / POINTER)["snapshot"] / "progress.json")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_state(
    run_dir: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore the snapshot ``resume.json`` points at; returns its progress dict."""
    from safetensors.torch import load_file

    pointer = run_dir / POINTER
    if not pointer.exists():
        raise DardError(f"{run_dir} has no {POINTER}: nothing to resume (was it started by `dard train`?)")
    snap = run_dir / read_json(pointer)["snapshot"]
    try:
        model.load_state_dict(load_file(str(snap / "student.safetensors")))
        blob = torch.load(snap / "optim.pt", map_location="cpu", weights_only=True)
        progress = read_json(snap / "progress.json")
    except Exception as e:  # a damaged snapshot must not crash with a traceback
        raise DardError(
            f"cannot resume from {snap}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["rng_cpu"])
    if blob["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng_cuda"])
    return progress
