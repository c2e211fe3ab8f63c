"""An epoch's running training sums (loss, correct, seen), kept on the device and read back every few steps.

Reading a number back from a GPU (``.item()``, ``bool(tensor)``) waits until every queued kernel has run, so the
host can no longer queue the next step while the device works on this one, and every step pays its launch
overhead in full. The training loop therefore keeps each step's loss and correct count as device tensors and
reads them back together, in one transfer, every ``speed.sync_every`` steps, before every snapshot or checkpoint
and at the end of the epoch. The host sums are then added up step by step in the same order and precision as a
per-step ``.item()`` would, so the recorded numbers are the same bit for bit.

A non-finite loss is found at the next read-back rather than at its own step. The steps after it have updated the
weights with non-finite gradients, but nothing is written before a read-back (snapshots and checkpoints come
after one), so what is on disk is still the last good state; :meth:`StepSums.read_back` names the first bad step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

import dard.training.distributed as dist
from dard.run_dir import RunDir


@dataclass(frozen=True)
class BadLoss:
    """The first non-finite loss of a read-back: its step within the epoch (0-based) and its value."""

    step: int
    value: float


class StepSums:
    """Per-step loss and correct counts on the device; ``host`` holds the sums read back so far.

    ``start`` continues the sums of an epoch resumed mid-way (the snapshot's ``partial``); ``first_step`` is the
    index within the epoch of the first step :meth:`add` will be given.
    """

    def __init__(self, start: Mapping[str, Any] | None = None, first_step: int = 0) -> None:
        self.host: dict[str, Any] = dict(start) if start else {"loss": 0.0, "correct": 0.0, "seen": 0}
        self._next = first_step  # epoch step index of the first pending entry
        self._losses: list[torch.Tensor] = []
        self._correct: list[torch.Tensor] = []
        self._sizes: list[int] = []

    @property
    def pending(self) -> int:
        """Steps added since the last read-back."""
        return len(self._sizes)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Record one step (no host sync): its float32 loss, the correct predictions of its logits, its size."""
        self._losses.append(loss.detach())
        self._correct.append((logits.argmax(1) == y).sum())
        self._sizes.append(int(y.shape[0]))

    def read_back(self) -> BadLoss | None:
        """Move the pending steps to the host (one sync) and add them to ``host`` in step order; returns the first
        non-finite loss (None when all are finite; the steps from it on are not added)."""
        if not self._sizes:
            return None
        # float64 holds every float32 loss and every count exactly: one transfer for both
        losses, correct = torch.stack(
            [torch.stack(self._losses).double(), torch.stack(self._correct).double()]
        ).tolist()
        bad = None
        for i, (loss, right, n) in enumerate(zip(losses, correct, self._sizes)):
            if not math.isfinite(loss):
                bad = BadLoss(self._next + i, loss)
                break
            self.host["loss"] += loss * n
            self.host["correct"] += int(right)
            self.host["seen"] += n
        self._next += len(self._sizes)
        self._losses, self._correct, self._sizes = [], [], []
        return bad


def read_back(
    sums: StepSums, folder: RunDir, epoch: int, batch: int, info: dist.DistInfo, device: torch.device
) -> None:
    """Read the pending steps back; a non-finite loss on any rank stops every rank with the same one-line error
    (``epoch`` 0-based; ``batch``: the steps of the epoch done)."""
    bad = sums.read_back()
    if bad is None and not info.enabled:
        return
    message = ""  # the rank whose loss is not finite says it, for every rank (dist.agree)
    if bad is not None:
        last = "no checkpoint was written yet"
        if folder.has_snapshot():
            last = f"the last good checkpoint is kept in {folder.path}"
        # the first step's loss comes before any update: no learning rate made it (a method's loss weight or
        # temperature, the model or the data did), and the hint sent users to the one setting it cannot be
        why = "lower optim.lr?"
        if epoch == 0 and bad.step == 0:
            why = (
                "the first step, before any update, so not the learning rate: "
                "look at method.params, the model, the data"
            )
        message = f"loss is {bad.value} at epoch {epoch + 1} step {bad.step + 1}; stopping ({last}); {why}"
    dist.agree(bad is None, message, info, device)
