"""Stopping training at a wall-clock deadline.

``train(..., stop_at=T)`` stops at the first step boundary after the time ``T`` (``time.time()``), writes a resume
snapshot and raises :class:`TrainingStopped`; ``dard train --resume`` or a later ``dard experiment`` continues
from the snapshot. Its test evaluation then runs attack by attack, each only when its estimate
(:mod:`dard.training.cost`) fits before ``T``, each kept as it finishes; what does not fit is left "trained; test
evaluation pending", and a resume continues it.

A worker of ``dard experiment`` also stops this way, at its next step or before its next attack, when another
run of the experiment fails (:func:`watch_stop_event`, set by :func:`dard.experiment.pool.pool_map`), so that the
command ends with its error soon, every run resumable, instead of hours later.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import dard.training.distributed as dist


class _Event(Protocol):
    def is_set(self) -> bool: ...

    def set(self) -> None: ...


_stop_event: _Event | None = None  # this process's: set when its experiment stops (a failure, an interrupt)


def watch_stop_event(event: _Event | None) -> None:
    """From now on, a set ``event`` stops training and evaluation in this process as a passed deadline does."""
    global _stop_event
    _stop_event = event


def watching_stop_event() -> bool:
    """Whether this process watches a stop event (a worker of ``dard experiment``)."""
    return _stop_event is not None


def request_stop() -> None:
    """Set the watched stop event (if any): every process watching it stops as at a passed deadline."""
    if _stop_event is not None:
        _stop_event.set()


def stop_requested() -> bool:
    """Whether the watched stop event is set (this process's experiment is stopping: a run failed, or the command
    was interrupted)."""
    return _stop_event is not None and _stop_event.is_set()


class TrainingStopped(Exception):
    """Training stopped at its deadline (or at a stop request: :func:`stop_requested`) with a resume snapshot (or,
    trained, before its test evaluation). ``epoch``: epochs finished; ``batch``: steps of the next one done."""

    def __init__(self, run_dir: Path, epoch: int, batch: int, *, evaluation_pending: bool = False) -> None:
        self.run_dir, self.epoch, self.batch, self.evaluation_pending = Path(run_dir), epoch, batch, evaluation_pending
        where = f"in epoch {epoch + 1} after step {batch}" if batch else f"after epoch {epoch}"
        where = "trained; test evaluation pending" if evaluation_pending else where
        why = "because its experiment is stopping (another run failed, or it was interrupted)"
        why = why if stop_requested() else "at its time budget"
        super().__init__(f"{self.run_dir}: stopped {why} ({where})")


def past_deadline(stop_at: float | None, info: dist.DistInfo, device: Any, at_read_back: bool) -> bool:
    """Whether the deadline has passed (or a stop is requested), agreed by every rank. Under torchrun only at the
    loop's read-backs (the same steps on every rank; agreeing takes a collective); a single process checks the host
    clock at every step."""
    if (stop_at is None and not watching_stop_event()) or (info.enabled and not at_read_back):
        return False
    return dist.any_rank(stop_requested() or (stop_at is not None and time.time() >= stop_at), info, device)
