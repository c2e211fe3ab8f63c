"""CW-inf: PGD on the Carlini-Wagner margin ``max_{j != y} z_j - z_y`` under the Linf threat model.

This is the CW-inf of the robustness literature (PGD with the margin loss), not the CW-L2 optimisation attack.
The margin is unbounded (no kappa clamp), so already-misclassified points keep moving away from the boundary.
"""

from __future__ import annotations

import torch
from torch import nn

from dard.attacks.base import IterativeAttack
from dard.attacks.pgd import margin_loss, restarted_pgd

__all__ = ["CW"]


class CW(IterativeAttack):
    """Linf PGD maximising the logit margin; restarts keep the worst case per point."""

    name = "cw"

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 20,
        random_start: bool = True,
        restarts: int = 1,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            eps=eps, step_size=step_size, steps=steps, random_start=random_start, restarts=restarts, seed=seed
        )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return restarted_pgd(
            model,
            x,
            y,
            margin_loss,
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            norm="linf",
            random_start=self.random_start,
            restarts=self.restarts,
            generator=self.generator,
        )
