"""Targeted PGD (T-PGD): descend the cross-entropy to a chosen class.

``target`` says which class each image is pushed to:

* ``"least_likely"``: the argmin of the clean logits (the DARD authors' T-PGD);
* ``"random"``: a class drawn uniformly among the wrong ones with the attack's generator;
* a class index (``target=3``): the same class for every image;
* ``"given"``: the caller's choice per image, passed as the call's third argument instead of the true labels,
  ``TargetedPGD(target="given")(model, x, target_classes)``; the attack's ``target_kind`` is then ``"targets"``,
  so the evaluation suite and the training methods, which pass true labels, refuse it.

The targets of the last call are kept in ``last_targets`` so metrics can report the targeted success rate.
"""

from __future__ import annotations

import torch
from torch import nn

from dard.attacks.base import IterativeAttack, check_norm
from dard.attacks.pgd import ce_loss, pgd_ascent
from dard.errors import DardError
from dard.models import check_logits
from dard.registry import register_attack
from dard.validate import check_choice, check_int

__all__ = ["TargetedPGD"]

_CHOICES = ("least_likely", "random", "given")


@register_attack("tpgd")
class TargetedPGD(IterativeAttack):
    """PGD (Linf or L2) minimising ``CE(f(x_adv), target)``; ``last_targets`` holds the targets of the last call."""

    name = "tpgd"

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 10,
        random_start: bool = True,
        target: str | int = "least_likely",
        norm: str = "linf",
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, step_size=step_size, steps=steps, random_start=random_start, seed=seed)
        self.norm = check_norm(norm, owner=self.name)
        if isinstance(target, int) and not isinstance(target, bool):
            self.target: str | int = check_int("target", target, lo=0, owner=self.name)
        else:
            self.target = check_choice("target", target, _CHOICES, owner=self.name)
        self.target_kind = "targets" if self.target == "given" else "labels"
        self.last_targets: torch.Tensor | None = None

    def choose_targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Target class per sample: the call's own for ``"given"``, else chosen from ``y`` (the true labels) and
        the clean logits (never the true label for ``"least_likely"``/``"random"`` with at least two classes)."""
        if self.target == "given":
            return y
        if isinstance(self.target, int):
            return torch.full_like(y, self.target)
        with torch.no_grad():
            logits = check_logits(model(x), x.shape[0])
        num_classes = logits.shape[1]
        if self.target == "least_likely":
            return logits.argmin(dim=1)
        # y + U{1, ..., C-1} mod C is uniform over the C-1 wrong classes
        shift = torch.randint(1, max(num_classes, 2), y.shape, generator=self.generator, device=y.device)
        return (y + shift) % num_classes

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        targets = self.choose_targets(model, x, y)
        self.last_targets = targets.detach().clone()

        def loss(logits: torch.Tensor, step: int) -> torch.Tensor:
            if step == 0 and (self.target == "given" or isinstance(self.target, int)):
                # user-chosen targets, checked against the class count the first output tells
                self._check_classes(targets, logits.shape[1])
            return -ce_loss(logits, targets).sum()  # ascend -CE = descend CE to the target

        return pgd_ascent(
            model,
            x,
            loss,
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            norm=self.norm,
            init="uniform" if self.random_start else "zero",
            generator=self.generator,
        )

    def _check_classes(self, targets: torch.Tensor, num_classes: int) -> None:
        if targets.numel() and not 0 <= int(targets.min()) <= int(targets.max()) < num_classes:
            shown = f"{int(targets.min())}..{int(targets.max())}" if self.target == "given" else str(self.target)
            raise DardError(f"{self.name}: target class {shown} outside the model's classes 0..{num_classes - 1}")
