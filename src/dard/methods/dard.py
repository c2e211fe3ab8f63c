"""DARD: Dice Adversarial Robustness Distillation.

Source: Zou, Zhang, Qiu, Li, "DARD: Dice Adversarial Robustness Distillation against Adversarial Attacks",
arXiv 2509.11525 (SecureComm 2025), implemented to this project's spec (docs/method.md).
For each batch:

1. ``x_adv = DPGD(S, x, y)`` with the student in eval mode (``attack_target="teacher"`` crafts against T).
2. Teacher soft labels ``q = lam * softmax(T(x)/tau) + (1 - lam) * softmax(T(x_adv)/tau)`` from the frozen
   teacher on the same (augmented) batch, every step.
3. ``L = alpha * CE(S(x_adv), y) + (1 - alpha) * tau^2 * KL(q || softmax(S(x_adv)/tau))``, KL summed over classes
   and averaged over the batch. Defaults ``lam = 0.5``, ``alpha = 0.3``, ``tau = 1``, DPGD-10 (Linf 8/255, step
   2/255, clean start).

Implementation notes (no effect on the value): the teacher's two outputs come from one call on
``cat([x, x_adv])``; with ``lam`` = 1 or 0 only the needed half is computed, and with ``alpha = 1`` (distillation
weight 0) the teacher is not called. Losses are computed in float32 even under autocast.

``clean_branch=True`` (off by default) adds the same two terms on the clean input,
``alpha * CE(S(x), y) + (1 - alpha) * tau^2 * KL(q || softmax(S(x)/tau))``.

Deviations from the authors' DARD training scripts (compared with the spec in docs/method.md, "The authors'
scripts"; this implementation follows the spec, each item is a choice of the spec):
- DPGD is the same attack, with the same 8/255 budget in pixel units (their training attack divides eps and step
  by the channel std); only their evaluation attacks use an unscaled eps on normalised inputs (about 1.6/255).
- DPGD runs with the student in eval mode here (theirs: train mode, updating the BatchNorm statistics).
- ``tau = 1`` (theirs: 3 on CIFAR-10, 1 on CIFAR-100).
- The teacher labels are computed every step on the batch trained on, the adversarial ones on the student's own
  ``x_adv`` (theirs: precomputed once under one augmentation draw, the adversarial ones from DPGD against the
  teacher).
- The teacher probabilities are softened once (theirs: softmax applied twice).
- One mixed ``q`` on ``S(x_adv)`` (their CIFAR-10 scripts average a clean and an adversarial branch; the
  CIFAR-100 one mixes with ``lam = 0.5`` as here). KL per-sample (``batchmean``) times ``tau^2``, as theirs.
- Schedule and models are the run config's (the paper-scale configs follow the authors' setup).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from dard.methods.base import LossOutput, Method, StepPasses, make_attack, teacher_logits, training_attack_passes
from dard.methods.losses import check_temperature, cross_entropy, kl_batchmean, soft_targets
from dard.registry import register_method
from dard.validate import check_bool, check_choice, check_float

#: DPGD-10: Linf eps 8/255, step eps/4 (2/255; the step follows eps), from the clean image.
DPGD10_TRAINING: Mapping[str, Any] = MappingProxyType({"name": "dpgd", "eps": 8 / 255, "step_ratio": 0.25, "steps": 10})


@register_method("dard")
class DARD(Method):
    """``L = alpha * CE(S(x_adv), y) + (1 - alpha) * tau^2 * KL(q || S(x_adv)/tau)`` with dual teacher labels ``q``."""

    name = "dard"
    needs_teacher = True
    attack: Callable[..., Tensor]  # set in __init__ (never None here)
    default_attack: Mapping[str, Any] = DPGD10_TRAINING

    def __init__(
        self,
        *,
        lam: float = 0.5,
        alpha: float = 0.3,
        tau: float = 1.0,
        attack: dict[str, Any] | None = None,
        attack_target: str = "student",
        clean_branch: bool = False,
    ) -> None:
        self.lam = check_float("lam", lam, lo=0.0, hi=1.0, owner=self.owner)
        self.alpha = check_float("alpha", alpha, lo=0.0, hi=1.0, owner=self.owner)
        self.tau = check_temperature(tau, owner=self.owner)
        self.attack_target = check_choice("attack_target", attack_target, ("student", "teacher"), owner=self.owner)
        self.clean_branch = check_bool("clean_branch", clean_branch, owner=self.owner)
        self.attack, self.attack_spec = make_attack(self.name, attack, self.default_attack)

    def soft_labels(self, teacher: nn.Module, x: Tensor, x_adv: Tensor) -> Tensor:
        """``q = lam * softmax(T(x)/tau) + (1 - lam) * softmax(T(x_adv)/tau)`` (no graph)."""
        with torch.no_grad():
            if self.lam == 1.0:
                return soft_targets(teacher_logits(teacher, x), self.tau)
            if self.lam == 0.0:
                return soft_targets(teacher_logits(teacher, x_adv), self.tau)
            # One teacher call on the concatenated batch: valid because the teacher is frozen in eval mode, so
            # BatchNorm uses running statistics and each sample's output does not depend on the rest of the batch.
            t_nat, t_adv = teacher_logits(teacher, torch.cat([x, x_adv])).split([x.shape[0], x_adv.shape[0]])
            return self.lam * soft_targets(t_nat, self.tau) + (1.0 - self.lam) * soft_targets(t_adv, self.tau)

    def _terms(self, logits: Tensor, y: Tensor, q: Tensor | None) -> Tensor:
        loss = self.alpha * cross_entropy(logits, y)
        if q is not None:
            loss = loss + (1.0 - self.alpha) * self.tau**2 * kl_batchmean(q, logits, self.tau)
        return loss

    def compute(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        assert teacher is not None
        target_model = student if self.attack_target == "student" else teacher
        x_adv = self.attack(target_model, x, y).detach()  # eval mode inside the attack, mode restored
        # alpha = 1 gives the distillation term weight 0: skip the teacher call.
        q = self.soft_labels(teacher, x, x_adv) if self.alpha < 1.0 else None
        logits_adv = student(x_adv)  # student back in train mode
        loss = self._terms(logits_adv, y, q)
        if self.clean_branch:
            # A second forward, not one on cat([x_adv, x]): in train mode BatchNorm would mix the two batches'
            # statistics.
            loss = loss + self._terms(student(x), y, q)
        return LossOutput(loss=loss, logits=logits_adv.detach(), x_adv=x_adv)

    @classmethod
    def passes(cls, config: Mapping[str, Any]) -> StepPasses:
        """The attack, a training forward and backward (another with ``clean_branch``), and one teacher call on
        ``[x, x_adv]``."""
        clean = 3.0 if config.get("clean_branch") else 0.0
        return StepPasses(training_attack_passes(config) + 3.0 + clean, 2.0)

    def params(self) -> dict[str, Any]:
        return {
            "lam": self.lam,
            "alpha": self.alpha,
            "tau": self.tau,
            "attack": dict(self.attack_spec),
            "attack_target": self.attack_target,
            "clean_branch": self.clean_branch,
        }
