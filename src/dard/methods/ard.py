"""ARD: Adversarially Robust Distillation.

Source: Goldblum, Fowl, Feizi, Goldstein, "Adversarially Robust Distillation", AAAI 2020; official code
github.com/goldblum/AdversariallyRobustDistillation, ``main.py`` (commit 779ade3), see docs/baselines.md.
``L = alpha * tau^2 * KL(softmax(T(x)/tau) || softmax(S(x_adv)/tau)) + (1 - alpha) * CE(S(x), y)``; ``x_adv`` =
PGD on the student with cross-entropy (Linf eps 8/255, step 2/255, 10 steps, uniform random start). Defaults as
the official script: ``alpha = 1``, ``tau = 30``.

The KL is reduced as the official script does (``kl_reduction="mean"``): ``nn.KLDivLoss()`` with its default
``'mean'``, the summed KL divided by batch x classes, i.e. the per-sample KL divided by the number of classes (1/10
on CIFAR-10, 1/100 on CIFAR-100; the same line serves both datasets in ``main.py``). ``kl_reduction="batchmean"``
takes the per-sample KL instead, which multiplies the loss and its gradients by the number of classes (under SGD
with weight decay: the learning rate times C, the weight decay divided by C).

Deviations from the official code:
- BatchNorm during the attack: eval mode by default (running statistics, not updated), as this project's attack
  contract does; ``attack_mode="train"`` reproduces the official script. There ``net.train()`` puts the student
  (inside ``AttackPGD``) in train mode and the teacher stays in eval mode; each of the 10 attack iterates (the
  first at the random start) is a train-mode forward with batch statistics that updates the running statistics,
  then ``AttackPGD`` returns the train-mode forward on ``x_adv`` that the loss uses, then the clean forward
  ``S(x)``: 12 updates per step, in this order, the same here in train mode.
- Random start: the official start ``x + U(-eps, eps)`` is not clamped to [0, 1] before the first gradient
  step; here it is.
- As in the official script the clean forward ``S(x)`` always runs in train mode after ``S(x_adv)`` (its
  BatchNorm statistics see the clean batch); with ``alpha = 1`` its term has weight 0, so it runs without a
  graph (the same gradients). The teacher runs under ``torch.no_grad()`` (the official one has frozen parameters).
- ``LossOutput.logits`` are ``S(x_adv)`` (the official loop reports only the loss).
- Schedule and data are the run config's, not the script's (SGD lr 0.1, momentum 0.9, weight decay 2e-4, 200
  epochs, batch 128 on CIFAR-10 and 256 on CIFAR-100, lr x0.1 at epoch 100; the script's second decay at 150
  re-sets the same 0.01, because it scales a local copy of the base rate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from dard.methods.base import (
    PGD10_TRAINING,
    LossOutput,
    Method,
    StepPasses,
    make_attack,
    teacher_logits,
    training_attack_passes,
)
from dard.methods.losses import KL_REDUCTIONS, check_temperature, cross_entropy, kl_divergence, soft_targets
from dard.registry import register_method
from dard.validate import check_choice, check_float


@register_method("ard")
class ARD(Method):
    """``L = alpha * tau^2 * KL(T(x)/tau || S(x_adv)/tau) + (1 - alpha) * CE(S(x), y)`` (KL: ``kl_reduction``;
    ``attack_mode``: the student's mode during the attack, ``"eval"`` or the official ``"train"``)."""

    name = "ard"
    needs_teacher = True
    attack: Callable[..., Tensor]  # set in __init__ (never None here)

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        tau: float = 30.0,
        kl_reduction: str = "mean",
        attack: dict[str, Any] | None = None,
        attack_mode: str = "eval",
    ) -> None:
        self.alpha = check_float("alpha", alpha, lo=0.0, hi=1.0, owner=self.owner)
        self.tau = check_temperature(tau, owner=self.owner)
        self.kl_reduction = check_choice("kl_reduction", kl_reduction, KL_REDUCTIONS, owner=self.owner)
        self.attack, self.attack_spec = make_attack(self.name, attack, PGD10_TRAINING, mode=attack_mode)
        self.attack_mode = attack_mode

    def compute(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        assert teacher is not None
        x_adv = self.attack(student, x, y).detach()  # eval mode inside (attack_mode "eval"), mode restored
        q = soft_targets(teacher_logits(teacher, x), self.tau)
        logits_adv = student(x_adv)
        loss = self.alpha * self.tau**2 * kl_divergence(q, logits_adv, self.tau, self.kl_reduction)
        if self.alpha < 1.0:
            loss = loss + (1.0 - self.alpha) * cross_entropy(student(x), y)
        else:
            with torch.no_grad():
                student(x)  # weight 0; run only for the BatchNorm statistics, as the authors' code does
        return LossOutput(loss=loss, logits=logits_adv.detach(), x_adv=x_adv)

    @classmethod
    def passes(cls, config: Mapping[str, Any]) -> StepPasses:
        """The attack, two student forwards and backwards (clean and adversarial), one teacher forward."""
        return StepPasses(training_attack_passes(config) + 7.0, 1.0)

    def params(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "tau": self.tau,
            "kl_reduction": self.kl_reduction,
            "attack": dict(self.attack_spec),
            "attack_mode": self.attack_mode,
        }
