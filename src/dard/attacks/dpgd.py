"""DPGD: Dice Projected Gradient Descent (the DARD paper's attack; SegPGD carried from pixels to images).

At step ``t = 0 .. K-1`` with ``p = softmax(f(x_t))`` and ``g = one_hot(y)``, the samples are split into
``C`` (currently classified correctly) and ``W`` (the rest), recomputed at every step, and the attack ascends

    L_t = (1 - lambda_t) * Dice(C) + lambda_t * Dice(W),      lambda_t = t / (2K),

    Dice(set) = 1 - (2 * sum(p * g) + s) / (sum(g^2) + sum(p^2) + s),   s = 1e-5,

with sums over every sample of the set and every class (``reduction="set"``, one value per set, the default)
or the per-sample Dice averaged over the set (``reduction="sample"``). An empty set contributes 0.
Early steps push correct samples over the boundary; later ones weight the fooled samples more, so their
margin grows. Update: ``x_{t+1} = clip01(Proj_eps(x_t + a * sign(grad L_t)))``, from the clean image by default.

The loss pieces are pure functions so the value can be checked by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dard.attacks.base import IterativeAttack, check_norm
from dard.attacks.pgd import pgd_ascent
from dard.registry import register_attack
from dard.validate import check_choice, check_float

__all__ = ["DPGD", "dice_loss", "dpgd_lambda", "dpgd_loss", "masked_dice_loss"]

_REDUCTIONS = ("set", "sample")


def dice_loss(probs: torch.Tensor, onehot: torch.Tensor, smooth: float = 1e-5, reduction: str = "set") -> torch.Tensor:
    """Dice loss ``1 - (2 sum(p g) + s) / (sum(g^2) + sum(p^2) + s)`` of a set of rows (N, classes).

    ``reduction="set"``: sums over all rows and classes, one value for the set. ``"sample"``: one Dice per row,
    averaged. An empty set gives 0 (still attached to the graph of ``probs``, so it can be differentiated).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}; got {reduction!r}")
    if probs.shape != onehot.shape or probs.dim() != 2:
        raise ValueError(f"probs {tuple(probs.shape)} and onehot {tuple(onehot.shape)} must both be (N, classes)")
    if probs.shape[0] == 0:
        return probs.sum() * 0.0
    if reduction == "set":
        inter = (probs * onehot).sum()
        denom = (onehot * onehot).sum() + (probs * probs).sum()
        return 1.0 - (2.0 * inter + smooth) / (denom + smooth)
    inter = (probs * onehot).sum(dim=1)
    denom = (onehot * onehot).sum(dim=1) + (probs * probs).sum(dim=1)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def masked_dice_loss(
    probs: torch.Tensor, onehot: torch.Tensor, mask: torch.Tensor, smooth: float = 1e-5, reduction: str = "set"
) -> torch.Tensor:
    """:func:`dice_loss` of the rows where ``mask`` is true, computed over all rows with the others weighted 0.

    The same value (up to the order of summation) without selecting rows: selecting them by a mask computed on the
    device (``probs[mask]``) makes the host wait for the device to learn the result's size, once per attack step.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}; got {reduction!r}")
    w = mask.to(probs.dtype)
    count = w.sum()
    if reduction == "set":
        inter = (probs * onehot).sum(dim=1) @ w
        denom = ((onehot * onehot).sum(dim=1) + (probs * probs).sum(dim=1)) @ w + smooth
        # an empty set gives 0; its denominator is made 1 so that no 0/0 reaches the gradient (smooth = 0)
        value = 1.0 - (2.0 * inter + smooth) / torch.where(count > 0, denom, torch.ones_like(denom))
        return torch.where(count > 0, value, torch.zeros_like(value))
    inter = (probs * onehot).sum(dim=1)
    denom = (onehot * onehot).sum(dim=1) + (probs * probs).sum(dim=1) + smooth  # >= 1 for one-hot rows
    per = 1.0 - (2.0 * inter + smooth) / denom
    return (per * w).sum() / count.clamp_min(1.0)


def dpgd_lambda(t: int, steps: int) -> float:
    """Weight of the wrongly classified set at step ``t`` of ``steps``: ``t / (2 * steps)`` (0 .. < 0.5)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return t / (2.0 * steps)


def dpgd_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    t: int,
    steps: int,
    smooth: float = 1e-5,
    reduction: str = "set",
    masked: bool | None = None,
) -> torch.Tensor:
    """The DPGD objective at step ``t``: ``(1 - lambda_t) Dice(C) + lambda_t Dice(W)``, split from ``logits``.

    ``masked``: weight the two sets by masks (:func:`masked_dice_loss`, no host sync) instead of selecting their
    rows. None: masks on accelerators, where a sync stalls the device queue; row selection on the CPU, where it
    costs nothing and gives the exact numbers the committed CPU results were made with.
    """
    logits = logits.float()
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(y, logits.shape[1]).to(probs.dtype)
    correct = logits.argmax(dim=1) == y  # recomputed from the current iterate's logits at every step
    lam = dpgd_lambda(t, steps)
    if masked if masked is not None else logits.device.type != "cpu":
        dice_c = masked_dice_loss(probs, onehot, correct, smooth, reduction)
        dice_w = masked_dice_loss(probs, onehot, ~correct, smooth, reduction)
    else:
        dice_c = dice_loss(probs[correct], onehot[correct], smooth, reduction)
        dice_w = dice_loss(probs[~correct], onehot[~correct], smooth, reduction)
    return (1.0 - lam) * dice_c + lam * dice_w


@register_attack("dpgd")
class DPGD(IterativeAttack):
    """Dice PGD: ``steps`` signed ascent steps on :func:`dpgd_loss` (L2: normalised-gradient steps), from the clean
    image by default."""

    name = "dpgd"

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 10,
        random_start: bool = False,
        reduction: str = "set",
        smooth: float = 1e-5,
        norm: str = "linf",
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, step_size=step_size, steps=steps, random_start=random_start, seed=seed)
        self.norm = check_norm(norm, owner=self.name)
        self.reduction = check_choice("reduction", reduction, _REDUCTIONS, owner=self.name)
        # a guard against 0/0 (1e-5 in use); the loss is float32, past whose 3.4e38 it is inf: 1e300 never moved
        self.smooth = check_float("smooth", smooth, lo=0.0, hi=1e6, owner=self.name)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pgd_ascent(
            model,
            x,
            lambda logits, t: dpgd_loss(logits, y, t, self.steps, self.smooth, self.reduction),
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            norm=self.norm,
            init="uniform" if self.random_start else "zero",
            generator=self.generator,
        )
