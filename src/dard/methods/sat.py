"""SAT: standard adversarial training (PGD-AT).

Source: Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018. ``L = CE(S(x_adv), y)`` with ``x_adv`` = PGD-10 (Linf eps 8/255, step 2/255, uniform random
start) maximising the cross-entropy of the model being trained.

Deviations:
- The attack runs with the model in eval mode (BatchNorm frozen), the convention of the field's later code
  (RSLAD, AdaAD, this project's attacks); Madry et al.'s code crafts the examples in train mode.
- The CIFAR settings above (8/255, 2/255, 10 steps) are the field's standard ones, not the MNIST / CIFAR steps of
  the paper's own table (CIFAR: 7 steps of 2/255). The attack is configurable through ``attack``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from dard.methods import register_method
from dard.methods.base import PGD10_TRAINING, LossOutput, Method, make_attack
from dard.methods.losses import cross_entropy


@register_method("sat")
class SAT(Method):
    """``L = CE(S(x_adv), y)``, ``x_adv = attack(S, x, y)`` (default PGD-10, random start)."""

    name = "sat"
    needs_teacher = False

    def __init__(self, *, attack: dict[str, Any] | None = None) -> None:
        self.attack, self.attack_spec = make_attack(self.name, attack, PGD10_TRAINING)

    def compute(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        x_adv = self.attack(student, x, y).detach()  # the attack puts the student in eval mode and restores it
        logits = student(x_adv)
        return LossOutput(loss=cross_entropy(logits, y), logits=logits.detach(), x_adv=x_adv)

    def params(self) -> dict[str, Any]:
        return {"attack": dict(self.attack_spec)}
