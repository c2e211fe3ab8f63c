"""KL maximisation: the inner problem of TRADES, RSLAD and AdaAD, as an attack under the common contract.

``kl_pgd(model, x, target) -> x_adv`` ascends ``KL(target || softmax(model(x')))`` (summed over the batch, so
per-sample gradients do not depend on the batch size) by projected sign-gradient steps (L2: normalised-gradient
steps) from ``x + 0.001 * N(0, 1)`` by default. ``target`` is either

* target probabilities (N, classes), fixed for the whole ascent: TRADES passes the model's own clean
  probabilities, RSLAD the teacher's; or
* a reference network, evaluated on the same perturbed input at every step: the ascent then maximises
  ``KL(softmax(ref(x')) || softmax(model(x')))`` with the gradient through both networks (AdaAD's inner problem).
  The reference is put in eval mode like the model and receives no parameter gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dard.attacks.base import Attack, check_norm, setting
from dard.attacks.pgd import pgd_ascent
from dard.attacks.steps import check_step
from dard.models import check_logits
from dard.module_utils import eval_mode, local_module
from dard.registry import register_attack
from dard.validate import MAX_ITERATIONS, check_choice, check_int

__all__ = ["KLPGD", "TradesPGD", "kl_sum", "loss_precision"]


def loss_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or unchanged if it is float64: the precision the training losses are computed in.

    Half-precision (autocast) logits are lifted to float32; float64 is kept so that tests can check the losses
    against transcriptions of the official code to 1e-6.
    """
    return t if t.dtype == torch.float64 else t.float()


def kl_sum(target_probs: torch.Tensor, logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """``KL(target || softmax(logits / tau))`` summed over classes and over the batch, in float32 (float64 kept).

    The objective of the KL inner maximisations, where the sign / per-sample normalised step makes the overall
    scale irrelevant; ``dard.methods.losses.kl_divergence`` divides it into the batch-averaged loss forms.
    """
    log_q = F.log_softmax(loss_precision(logits) / tau, dim=1)
    return F.kl_div(log_q, loss_precision(target_probs), reduction="sum")


@register_attack("kl_pgd")
class KLPGD(Attack):
    """Projected gradient ascent on ``KL(target || softmax(model(x')))``; ``target``: probabilities or a network."""

    name = "kl_pgd"
    target_kind = "probs"

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 10,
        norm: str = "linf",
        init: str = "normal",
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, seed=seed)
        self.steps = check_int("steps", steps, lo=0, hi=MAX_ITERATIONS, owner=self.name)  # 0: the random start alone
        self.step_size = check_step(step_size, self.eps if self.steps else 0.0, owner=self.name)  # steps 0: no step
        self.norm = check_norm(norm, owner=self.name)
        self.init = check_choice("init", init, ("zero", "uniform", "normal"), owner=self.name)

    def _check_target(self, x: torch.Tensor, target: Any) -> Any:
        if isinstance(target, nn.Module):
            return local_module(target)
        return super()._check_target(x, target)

    @classmethod
    def passes(cls, params: Mapping[str, Any]) -> float:
        """``steps`` gradient steps of 2 passes (a reference network as the target costs its own passes too)."""
        return 2.0 * setting(cls, params, "steps")

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor | nn.Module) -> torch.Tensor:
        if isinstance(target, nn.Module):
            reference = target
            with eval_mode(reference):
                return self._ascend(
                    lambda z: (check_logits(model(z), z.shape[0]), check_logits(reference(z), z.shape[0])),
                    x,
                    lambda out, _step: kl_sum(F.softmax(loss_precision(out[1]), dim=1), out[0]),
                )
        return self._ascend(model, x, lambda logits, _step: kl_sum(target, logits))

    def _ascend(self, forward: Any, x: torch.Tensor, loss_fn: Any) -> torch.Tensor:
        return pgd_ascent(
            forward,
            x,
            loss_fn,
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            norm=self.norm,
            init=self.init,
            generator=self.generator,
        )


@register_attack("trades_pgd")
class TradesPGD(KLPGD):
    """torchattacks' ``TPGD``: TRADES' KL maximisation as an untargeted evaluation attack.

    The target is the attacked model's own clean prediction, ``softmax(model(x))``, computed once before the
    ascent; the call takes the true labels like every evaluation attack and does not use them (the attack never
    looks at the label, so it moves correct and misclassified images alike). Defaults as torchattacks: 10 sign
    steps of 2/255 in the Linf ball of 8/255 from ``x + 0.001 * N(0, 1)``.
    """

    name = "trades_pgd"
    target_kind = "labels"

    def _check_target(self, x: torch.Tensor, target: Any) -> Any:
        return Attack._check_target(self, x, target)

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor | nn.Module) -> torch.Tensor:
        with torch.no_grad():
            clean = F.softmax(loss_precision(check_logits(model(x), x.shape[0])), dim=1)
        return super().perturb(model, x, clean)
