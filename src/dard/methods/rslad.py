"""RSLAD: Robust Soft Label Adversarial Distillation.

Source: Zi, Zhao, Ma, Jiang, "Revisiting Adversarial Robustness Distillation: Robust Soft Labels Make Student
Better", ICCV 2021. ``L = 5/6 * KL(T(x) || S(x_adv)) + 1/6 * KL(T(x) || S(x))`` on softmax outputs at temperature
1, KL summed over classes and averaged over the batch. ``x_adv`` maximises ``KL(T(x) || S(x'))`` with the student
in eval mode, from ``x + 0.001 * N(0, 1)``, 10 sign-gradient steps of 2/255 in the Linf ball of 8/255. The
teacher's soft labels are computed on the same batch every step.

Deviations: none in the loss. The weight of the adversarial term is exposed as ``adv_weight`` (default 5/6; the
natural term gets ``1 - adv_weight``) and the inner maximisation as ``attack``. ``LossOutput.logits`` are
``S(x_adv)``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from dard.methods import register_method
from dard.methods.base import KLAscent, LossOutput, Method, check_unit, teacher_logits
from dard.methods.losses import kl_batchmean, soft_targets


@register_method("rslad")
class RSLAD(Method):
    """``L = w * KL(T(x) || S(x_adv)) + (1 - w) * KL(T(x) || S(x))``, ``w = 5/6``."""

    name = "rslad"
    needs_teacher = True

    def __init__(self, *, adv_weight: float = 5 / 6, attack: dict[str, Any] | None = None) -> None:
        self.adv_weight = check_unit(self.name, "adv_weight", adv_weight)
        self.attack = KLAscent.from_spec(self.name, attack)
        self.attack_spec = {k: v for k, v in self.attack.config().items() if k != "name"}

    def compute(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        assert teacher is not None
        q = soft_targets(teacher_logits(teacher, x), 1.0)
        x_adv = self.attack(student, x, q).detach()  # student in eval mode inside, mode restored
        logits_adv = student(x_adv)
        logits_nat = student(x)
        loss = self.adv_weight * kl_batchmean(q, logits_adv) + (1.0 - self.adv_weight) * kl_batchmean(q, logits_nat)
        return LossOutput(loss=loss, logits=logits_adv.detach(), x_adv=x_adv)

    def params(self) -> dict[str, Any]:
        return {"adv_weight": self.adv_weight, "attack": dict(self.attack_spec)}
