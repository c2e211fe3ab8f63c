"""ARD: Adversarially Robust Distillation.

Source: Goldblum, Fowl, Feizi, Goldstein, "Adversarially Robust Distillation", AAAI 2020.
``L = alpha * tau^2 * KL(softmax(T(x)/tau) || softmax(S(x_adv)/tau)) + (1 - alpha) * CE(S(x), y)``, KL summed over
classes and averaged over the batch; ``x_adv`` = PGD on the student with cross-entropy (Linf eps 8/255, step
2/255, 10 steps, uniform random start). Paper defaults ``alpha = 1``, ``tau = 30``.

Deviations:
- The attack runs with the student in eval mode (BatchNorm frozen; field convention and this project's attack
  contract); the authors' code attacks the student in train mode.
- As in the authors' code the clean student forward ``S(x)`` is always run in train mode (its BatchNorm running
  statistics see the clean batch); when ``alpha = 1`` its term has weight 0, so it is run without a graph.
- ``LossOutput.logits`` are ``S(x_adv)``.
- The KL is taken with ``batchmean`` (the per-sample KL), as everywhere in this project; peer code that uses
  ``nn.KLDivLoss()`` with its default ``'mean'`` reduction also divides by the number of classes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dard.methods import register_method
from dard.methods.base import (
    PGD10_TRAINING,
    LossOutput,
    Method,
    check_positive,
    check_unit,
    make_attack,
    teacher_logits,
)
from dard.methods.losses import cross_entropy, kl_batchmean, soft_targets


@register_method("ard")
class ARD(Method):
    """``L = alpha * tau^2 * KL(T(x)/tau || S(x_adv)/tau) + (1 - alpha) * CE(S(x), y)``."""

    name = "ard"
    needs_teacher = True

    def __init__(self, *, alpha: float = 1.0, tau: float = 30.0, attack: dict[str, Any] | None = None) -> None:
        self.alpha = check_unit(self.name, "alpha", alpha)
        self.tau = check_positive(self.name, "tau", tau)
        self.attack, self.attack_spec = make_attack(self.name, attack, PGD10_TRAINING)

    def compute(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        assert teacher is not None
        x_adv = self.attack(student, x, y).detach()  # student in eval mode inside, mode restored
        q = soft_targets(teacher_logits(teacher, x), self.tau)
        logits_adv = student(x_adv)
        loss = self.alpha * self.tau**2 * kl_batchmean(q, logits_adv, self.tau)
        if self.alpha < 1.0:
            loss = loss + (1.0 - self.alpha) * cross_entropy(student(x), y)
        else:
            with torch.no_grad():
                student(x)  # weight 0; run only for the BatchNorm statistics, as the authors' code does
        return LossOutput(loss=loss, logits=logits_adv.detach(), x_adv=x_adv)

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "tau": self.tau, "attack": dict(self.attack_spec)}
