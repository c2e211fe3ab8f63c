"""Natural (standard) training: cross-entropy on clean inputs.

Source: the usual empirical-risk baseline; no official code to follow. ``L = CE(S(x), y)``, mean over the batch.
Deviations from the official code: none (there is none); no attack, no teacher. Schedule and model are the run
config's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from dard.methods.base import LossOutput, Method, StepPasses
from dard.methods.losses import cross_entropy
from dard.models import check_logits
from dard.registry import register_method


@register_method("natural")
class Natural(Method):
    """``L = CE(S(x), y)``."""

    name = "natural"
    needs_teacher = False
    robust = False
    logits_input = "x"

    def __init__(self) -> None:
        self.attack = None

    def compute(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        logits = check_logits(student(x), x.shape[0])
        return LossOutput(loss=cross_entropy(logits, y), logits=logits.detach(), x_adv=None)

    @classmethod
    def passes(cls, config: Mapping[str, Any]) -> StepPasses:
        """A training forward and backward."""
        return StepPasses(3.0)

    def params(self) -> dict[str, Any]:
        return {}
