"""BIM / I-FGSM (Kurakin et al. 2017): iterated FGSM from the clean image, projected to the eps-ball."""

from __future__ import annotations

import torch
from torch import nn

from dard.attacks.base import IterativeAttack
from dard.attacks.pgd import ce_loss, pgd_ascent

__all__ = ["BIM"]


class BIM(IterativeAttack):
    """``steps`` signed CE-ascent steps of ``step_size`` starting at ``x`` (no random start)."""

    name = "bim"

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 10,
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, step_size=step_size, steps=steps, seed=seed)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pgd_ascent(
            model,
            x,
            lambda logits, _step: ce_loss(logits, y).sum(),
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            init="zero",
        )
