"""Stopping training at a wall-clock deadline.

``train(..., stop_at=T)`` stops at the first step boundary after the time ``T`` (``time.time()``), writes a resume
snapshot and raises :class:`TrainingStopped`; ``dard train --resume`` or a later ``dard experiment`` continues
from the snapshot. Its test evaluation then runs attack by attack, each only when its estimate
(:mod:`dard.training.cost`) fits before ``T``, each kept as it finishes; what does not fit is left "trained; test
evaluation pending", and a resume continues it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dard.training.distributed as dist


class TrainingStopped(Exception):
    """Training stopped at its deadline with a resume snapshot (or, trained, before its test evaluation).
    ``epoch``: epochs finished; ``batch``: steps of the next one done."""

    def __init__(self, run_dir: Path, epoch: int, batch: int, *, evaluation_pending: bool = False) -> None:
        self.run_dir, self.epoch, self.batch, self.evaluation_pending = Path(run_dir), epoch, batch, evaluation_pending
        where = f"in epoch {epoch + 1} after step {batch}" if batch else f"after epoch {epoch}"
        where = "trained; test evaluation pending" if evaluation_pending else where
        super().__init__(f"{self.run_dir}: stopped at its time budget ({where})")


def past_deadline(stop_at: float | None, info: dist.DistInfo, device: Any, at_read_back: bool) -> bool:
    """Whether the deadline has passed, agreed by every rank. Under torchrun only at the loop's read-backs (the same
    steps on every rank; agreeing takes a collective); a single process checks the host clock at every step."""
    if stop_at is None or (info.enabled and not at_read_back):
        return False
    return dist.any_rank(time.time() >= stop_at, info, device)
