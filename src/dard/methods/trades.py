"""TRADES.

Source: Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, "Theoretically Principled Trade-off between Robustness and
Accuracy", ICML 2019; official code github.com/yaodongyu/TRADES (commit 6e8e11b): ``trades.py``
(``trades_loss``) and ``train_trades_cifar10.py``, see docs/baselines.md. ``L = CE(f(x), y) + beta * KL(f(x) ||
f(x_adv))`` (softmax outputs, KL summed over classes and averaged over the batch, as the official
``(1 / batch_size) * KLDivLoss(size_average=False)``), ``beta = 6``. ``x_adv`` maximises ``KL(f(x) || f(x'))``
over the Linf ball (10 sign-gradient steps) from ``x + 0.001 * N(0, 1)``, the model in eval mode, the target
``f(x)`` computed in eval mode without gradient; the loss forwards run in train mode and the gradient flows
through both sides of the KL, as in the official code (``model.eval()`` for the attack, so ``attack_mode`` is not
offered).

Deviations from the official code:
- Budget: eps 8/255 (0.0314) and step 2/255 (0.0078) here, the field's convention; the official script uses
  eps 0.031 and step 0.007.
- Random start: the official ``x + 0.001 * N(0, 1)`` is not clamped to [0, 1] before the first gradient step;
  here it is.
- The official inner loop recomputes the target ``f(x)`` (eval mode) at every step; here once (the same value).
- The official outer loss runs three train-mode forwards (``x`` for the CE term, ``x_adv``, and ``x`` again for the
  KL target); here one clean forward serves both terms. The loss value and gradients are the same for a network
  without dropout; BatchNorm running statistics receive the clean batch once instead of twice.
- ``LossOutput.logits`` are the clean logits ``f(x)`` (the CE term's).
- The L2 variant (``attack={"norm": "l2"}``) uses this project's normalised-gradient PGD: steps of eps/4, the
  ball then [0, 1], no step where the gradient is 0. The official L2 branch (which no script of theirs runs on
  CIFAR) is SGD on the perturbation at rate ``2 * eps / steps`` (0.2 eps at 10 steps) along the normalised gradient,
  clamps to [0, 1] before scaling back into the ball, and replaces a zero gradient by a random direction.
- Schedule and model are the run config's, not the script's (WRN-34-10, SGD lr 0.1, momentum 0.9, weight decay
  2e-4, batch 128, 76 epochs, lr x0.1 at epoch 75; its decays at 90 and 100 are never reached).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dard.methods.base import KL_PGD10_TRAINING, LossOutput, Method, StepPasses, make_attack, training_attack_passes
from dard.methods.losses import WEIGHT_MAX, cross_entropy, kl_batchmean
from dard.models import check_logits
from dard.module_utils import eval_mode
from dard.registry import register_method
from dard.validate import check_float


@register_method("trades")
class TRADES(Method):
    """``L = CE(f(x), y) + beta * KL(f(x) || f(x_adv))``, batchmean."""

    name = "trades"
    needs_teacher = False
    logits_input = "x"
    attack: Callable[..., Tensor]  # set in __init__ (never None here)

    def __init__(self, *, beta: float = 6.0, attack: dict[str, Any] | None = None) -> None:
        self.beta = check_float("beta", beta, lo=0.0, hi=WEIGHT_MAX, owner=self.owner)
        self.attack, self.attack_spec = make_attack(self.name, attack, KL_PGD10_TRAINING)

    def compute(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        with torch.no_grad(), eval_mode(student):
            target = F.softmax(check_logits(student(x), x.shape[0]).float(), dim=1)
        x_adv = self.attack(student, x, target).detach()
        logits_nat = student(x)
        logits_adv = student(x_adv)
        # KL(f(x) || f(x_adv)): the target side keeps its graph (gradient through both sides, as in TRADES).
        robust = kl_batchmean(F.softmax(logits_nat.float(), dim=1), logits_adv)
        loss = cross_entropy(logits_nat, y) + self.beta * robust
        return LossOutput(loss=loss, logits=logits_nat.detach(), x_adv=x_adv)

    @classmethod
    def passes(cls, config: Mapping[str, Any]) -> StepPasses:
        """A clean forward (the attack's target), the attack, two forwards and backwards (clean and adversarial)."""
        return StepPasses(training_attack_passes(config) + 7.0)

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta, "attack": dict(self.attack_spec)}
