"""AdaAD: Adaptive Adversarial Distillation.

Source: Huang, Chen, Wang, Lu, Cheng, Wang, "Boosting Accuracy and Robustness of Student Models via Adaptive
Adversarial Distillation", CVPR 2023; official code github.com/boyellow/AdaAD (commit 9e5c6e5): ``main.py``
(method ``AdaAD``) and ``AT_helper.py`` (``adaad_inner_loss``), see docs/baselines.md. The paper's text could not
be read here; everything below follows the official code.

1. Inner maximisation (the attack ``kl_pgd`` with the teacher network as its target, ``attack`` overriding its
   parameters): ``x_adv`` maximises ``KL(softmax(T(x')) || softmax(S(x')))`` over the Linf ball of 8/255, teacher
   and student on the same ``x'``, the gradient taken through both networks (the teacher's output moves with
   ``x'``); the student in eval mode (the official ``BN_eval=True``, so ``attack_mode`` is not offered), the
   teacher frozen in eval mode; start ``x + 0.001 * N(0, 1)``, 10 sign-gradient steps of 2/255, each projected
   onto the ball and [0, 1]. The point is where the student disagrees most with the teacher, not where the
   student misclassifies.
2. Outer loss, student in train mode (clean forward first, then adversarial, as the official code):
   ``L = w * KL(T(x_adv) || S(x_adv)) + (1 - w) * KL(T(x) || S(x))``, softmax at temperature 1, ``w = adv_weight``
   (the code's ``--AdaAD_alpha``, default 1: only the adversarial term), the teacher without gradients.

Loss scale: ``kl_reduction="mean"`` (default) is the official CIFAR-10 branch, ``nn.KLDivLoss()``'s ``'mean'``
(summed KL / (batch x classes)); the official CIFAR-100 branch sums and divides by the batch only, which is
``kl_reduction="batchmean"`` (set in experiments/main/paper-cifar100.yaml). The official script has no branch for
other datasets; here the default applies.

Deviations from the official code:
- Random start: the official ``x + 0.001 * N(0, 1)`` is not clamped to [0, 1] before the first gradient step;
  here it is.
- The loss scale follows the configured ``kl_reduction``, not the dataset: on CIFAR-100 the default ``"mean"`` is
  1/100 of the official branch unless ``kl_reduction="batchmean"`` is set (the CIFAR-100 experiment sets it).
- With ``adv_weight = 1`` the clean student forward (weight 0) runs without a graph and the teacher is not called
  on ``x`` (the same gradients and BatchNorm statistics); the teacher runs under ``torch.no_grad()``.
- ``LossOutput.logits`` are the clean logits ``S(x)``, which the official loop uses for its training accuracy.
- Schedule, models and budget are the run config's, not the script's (SGD lr 0.1, momentum 0.9, weight decay 5e-4,
  batch 128, 200 epochs, lr x0.1 at epochs 100 and 150; WRN-34-20 / WRN-34-10 teachers of Chen et al. 2021). The
  script's argparse default radius is 16/255 with step 4/255 (its "larger search radius" variant); its README's
  main command and this default use 8/255 and 2/255.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from dard.methods.base import (
    KL_PGD10_TRAINING,
    LossOutput,
    Method,
    StepPasses,
    make_attack,
    teacher_logits,
    training_attack_passes,
)
from dard.methods.losses import KL_REDUCTIONS, kl_divergence, soft_targets
from dard.registry import register_method
from dard.validate import check_choice, check_float


@register_method("adaad")
class AdaAD(Method):
    """``L = w * KL(T(x_adv) || S(x_adv)) + (1 - w) * KL(T(x) || S(x))``, ``x_adv`` maximising ``KL(T || S)``."""

    name = "adaad"
    needs_teacher = True
    logits_input = "x"
    attack: Callable[..., Tensor]  # set in __init__ (never None here)

    def __init__(
        self, *, adv_weight: float = 1.0, kl_reduction: str = "mean", attack: dict[str, Any] | None = None
    ) -> None:
        self.adv_weight = check_float("adv_weight", adv_weight, lo=0.0, hi=1.0, owner=self.owner)
        self.kl_reduction = check_choice("kl_reduction", kl_reduction, KL_REDUCTIONS, owner=self.owner)
        self.attack, self.attack_spec = make_attack(self.name, attack, KL_PGD10_TRAINING)

    def _kl(self, teacher: nn.Module, x: Tensor, student_logits: Tensor) -> Tensor:
        return kl_divergence(soft_targets(teacher_logits(teacher, x)), student_logits, 1.0, self.kl_reduction)

    def compute(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        assert teacher is not None
        # the teacher network as kl_pgd's target: KL(T(x') || S(x')), the gradient through both, both in eval mode
        x_adv = self.attack(student, x, teacher).detach()
        w = self.adv_weight
        if w < 1.0:
            logits_nat = student(x)
        else:
            with torch.no_grad():
                logits_nat = student(x)  # weight 0: run for the BatchNorm statistics, as the official code does
        logits_adv = student(x_adv)
        loss = w * self._kl(teacher, x_adv, logits_adv)
        if w < 1.0:
            loss = loss + (1.0 - w) * self._kl(teacher, x, logits_nat)
        return LossOutput(loss=loss, logits=logits_nat.detach(), x_adv=x_adv)

    @classmethod
    def passes(cls, config: Mapping[str, Any]) -> StepPasses:
        """The attack through student and teacher, two student forwards and backwards, two teacher forwards."""
        attack = training_attack_passes(config)
        return StepPasses(attack + 6.0, attack + 2.0)

    def params(self) -> dict[str, Any]:
        return {"adv_weight": self.adv_weight, "kl_reduction": self.kl_reduction, "attack": dict(self.attack_spec)}
