"""FGSM (Goodfellow et al. 2015): one signed gradient step of size eps on the cross-entropy."""

from __future__ import annotations

import torch
from torch import nn

from dard.attacks.base import Attack
from dard.attacks.pgd import ce_loss, pgd_ascent

__all__ = ["FGSM"]


class FGSM(Attack):
    """``x_adv = clip01(x + eps * sign(grad_x CE(f(x), y)))``: a single step of :func:`pgd_ascent` from ``x``."""

    name = "fgsm"

    def __init__(self, *, eps: float = 8 / 255, seed: int | None = None) -> None:
        super().__init__(eps=eps, seed=seed)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pgd_ascent(
            model,
            x,
            lambda logits, _step: ce_loss(logits, y).sum(),
            eps=self.eps,
            step_size=self.eps,
            steps=1,
            init="zero",
        )
