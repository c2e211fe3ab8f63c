"""RSLAD: Robust Soft Label Adversarial Distillation.

Source: Zi, Zhao, Ma, Jiang, "Revisiting Adversarial Robustness Distillation: Robust Soft Labels Make Student
Better", ICCV 2021; official code github.com/zibojia/RSLAD (commit c40e04f): ``rslad_loss.py``,
``resnet18_rslad_cifar10.py``, ``resnet18_rslad_cifar100.py``, see docs/baselines.md.
``L = s * (5/6 * KL(T(x) || S(x_adv)) + 1/6 * KL(T(x) || S(x)))`` on softmax outputs at temperature 1, KL the
per-sample KL averaged over the batch times ``s = kl_scale``. ``x_adv`` maximises ``KL(T(x) || S(x'))`` with the
student in eval mode (as the official ``rslad_inner_loss``, so ``attack_mode`` is not offered), from
``x + 0.001 * N(0, 1)``, 10 sign-gradient steps of 2/255 in the Linf ball of 8/255.
The teacher's soft labels are computed on the same batch every step.

Loss scale: ``kl_scale = 0.1`` (default) is what both official scripts train with. The CIFAR-10 script takes
``torch.mean`` of the elementwise KL over batch x 10 classes (the per-sample KL / 10); the CIFAR-100 script takes
10 x that mean over batch x 100 classes (again the per-sample KL / 10; its README gives the factor 10 as keeping
CIFAR-100 consistent with CIFAR-10). ``kl_scale = 1`` is the per-sample (``batchmean``) form, 10x the authors'
loss and gradients.

Deviations from the official code:
- The official KL takes ``log(p + 1e-5)`` on the teacher side; here the exact KL (``0 log 0 = 0``). This shifts
  the official loss value by a constant that depends on the teacher only (below ``1e-5 * kl_scale * classes``:
  1e-5 on CIFAR-10, 1e-4 on CIFAR-100) and leaves the gradients unchanged. The CIFAR-100 script's ``log(softmax(.))`` is
  ``log_softmax`` here (equal up to rounding; no ``-inf`` for a vanishing probability).
- Random start: the official ``x + 0.001 * N(0, 1)`` is not clamped to [0, 1] before the first gradient step;
  here it is.
- The CIFAR-100 script runs the teacher in half precision; here it runs in the run's precision.
- ``LossOutput.logits`` are ``S(x_adv)`` (the official loop reports only the loss).
- Schedule and models are the run config's, not the scripts' (SGD lr 0.1, momentum 0.9, weight decay 2e-4,
  batch 128, 300 epochs, lr x0.1 after epochs 215, 260 and 285; WRN-34-10 / WRN-70-16 teachers; the student
  inside ``nn.DataParallel``).
The weight of the adversarial term is exposed as ``adv_weight`` (default 5/6; the natural term gets
``1 - adv_weight``) and the inner maximisation as ``attack``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

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
from dard.methods.losses import WEIGHT_MAX, kl_batchmean, soft_targets
from dard.registry import register_method
from dard.validate import check_float

#: The official scripts' scale: the per-sample KL divided by 10 on CIFAR-10 and on CIFAR-100 (module docstring).
OFFICIAL_KL_SCALE = 0.1
#: The least ``kl_scale``: it scales the whole loss, as the learning rate does, and 1e-300 trained nothing, in silence
KL_SCALE_MIN = 1e-3


@register_method("rslad")
class RSLAD(Method):
    """``L = s * (w * KL(T(x) || S(x_adv)) + (1 - w) * KL(T(x) || S(x)))``, ``w = 5/6``, ``s = kl_scale``."""

    name = "rslad"
    needs_teacher = True
    attack: Callable[..., Tensor]  # set in __init__ (never None here)

    def __init__(
        self, *, adv_weight: float = 5 / 6, kl_scale: float = OFFICIAL_KL_SCALE, attack: dict[str, Any] | None = None
    ) -> None:
        self.adv_weight = check_float("adv_weight", adv_weight, lo=0.0, hi=1.0, owner=self.owner)
        self.kl_scale = check_float("kl_scale", kl_scale, lo=KL_SCALE_MIN, hi=WEIGHT_MAX, owner=self.owner)
        self.attack, self.attack_spec = make_attack(self.name, attack, KL_PGD10_TRAINING)

    def compute(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        assert teacher is not None
        q = soft_targets(teacher_logits(teacher, x), 1.0)
        x_adv = self.attack(student, x, q).detach()  # student in eval mode inside, mode restored
        logits_adv = student(x_adv)
        logits_nat = student(x)
        w = self.adv_weight
        loss = self.kl_scale * (w * kl_batchmean(q, logits_adv) + (1.0 - w) * kl_batchmean(q, logits_nat))
        return LossOutput(loss=loss, logits=logits_adv.detach(), x_adv=x_adv)

    @classmethod
    def passes(cls, config: Mapping[str, Any]) -> StepPasses:
        """The attack, two student forwards and backwards (clean and adversarial), one teacher forward."""
        return StepPasses(training_attack_passes(config) + 7.0, 1.0)

    def params(self) -> dict[str, Any]:
        return {"adv_weight": self.adv_weight, "kl_scale": self.kl_scale, "attack": dict(self.attack_spec)}
