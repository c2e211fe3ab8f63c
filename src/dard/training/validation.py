"""Validation during training: clean and robust accuracy on the held-out split, and the score the best checkpoint
is selected by."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dard.attacks import Attack
from dard.data import ImageSet
from dard.evaluation.record import Count
from dard.evaluation.suite import evaluate
from dard.training.setup import float_tensors


@dataclass(frozen=True)
class ValScores:
    """Accuracy on the validation split, as recorded in ``metrics.jsonl`` (``val_clean``, ``val_robust``)."""

    clean: float
    robust: float


def validate(model: nn.Module, data: ImageSet, attack: Attack, batch_size: int, device: torch.device) -> ValScores:
    """Clean and robust accuracy on the validation split under ``attack`` (``cfg.val.attack``, seeded)."""
    x, y = float_tensors(data, device)
    rec = evaluate(
        model, x, y, {"robust": attack}, batch_size=batch_size, device=device, progress=False, probe_model=False
    )
    return ValScores(clean=_float32_share(rec.clean), robust=_float32_share(rec.attacks["robust"].count))


def _float32_share(count: Count) -> float:
    """``correct / total`` rounded to float32, the precision validation scores have always been recorded in: a
    resumed run compares new scores with its recorded best, and a tie must stay a tie."""
    return (torch.tensor(count.correct, dtype=torch.float32) / count.total).item()


def selection_score(val: ValScores, select_by: str) -> float:
    """The number the best checkpoint maximises (validation split only)."""
    if select_by == "clean":
        return val.clean
    if select_by == "sum":
        return val.clean + val.robust
    return val.robust
