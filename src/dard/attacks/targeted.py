"""Targeted PGD (T-PGD): descend the cross-entropy to a chosen wrong class.

``target="least_likely"`` picks the argmin of the clean logits (the DARD authors' T-PGD); ``"random"`` picks a
class uniformly among the wrong ones with the attack's generator. The targets of the last call are kept in
``last_targets`` so metrics can report the targeted success rate.
"""

from __future__ import annotations

import torch
from torch import nn

from dard.attacks.base import IterativeAttack
from dard.attacks.pgd import ce_loss, pgd_ascent
from dard.validate import check_choice

__all__ = ["TargetedPGD"]


class TargetedPGD(IterativeAttack):
    """Linf PGD minimising ``CE(f(x_adv), target)``; ``last_targets`` holds the targets of the last call."""

    name = "tpgd"

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 10,
        random_start: bool = True,
        target: str = "least_likely",
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, step_size=step_size, steps=steps, random_start=random_start, seed=seed)
        self.target = check_choice("target", target, ("least_likely", "random"), owner=self.name)
        self.last_targets: torch.Tensor | None = None

    def choose_targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Target class per sample (never the true label when there are at least two classes)."""
        with torch.no_grad():
            logits = model(x)
        num_classes = logits.shape[1]
        if self.target == "least_likely":
            return logits.argmin(dim=1)
        # y + U{1, ..., C-1} mod C is uniform over the C-1 wrong classes
        shift = torch.randint(1, max(num_classes, 2), y.shape, generator=self.generator, device=y.device)
        return (y + shift) % num_classes

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        targets = self.choose_targets(model, x, y)
        self.last_targets = targets.detach().clone()
        return pgd_ascent(
            model,
            x,
            lambda logits, _step: -ce_loss(logits, targets).sum(),  # ascend -CE = descend CE to the target
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            init="uniform" if self.random_start else "zero",
            generator=self.generator,
        )
