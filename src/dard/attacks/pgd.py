"""Projected gradient ascent: the one iterative routine behind every iterative attack.

:func:`pgd_ascent` maximises a caller-supplied loss over the eps-ball around ``x`` intersected with [0, 1].
FGSM, BIM, PGD, targeted PGD, CW-inf, DPGD and the KL maximisation of TRADES / RSLAD are this routine with
different losses, steps and starts.

Also here: the :class:`PGD` attack (random start, restarts, Linf/L2, CE or margin loss) and its special cases:
:class:`FGSM` (one step of eps from ``x``), ``BIM`` (CE steps from ``x``, no random start) and ``CW`` (CW-inf:
PGD on the Carlini-Wagner margin ``max_{j != y} z_j - z_y`` under Linf; the CW-inf of the robustness literature,
not the CW-L2 optimisation attack; the margin is unbounded, no kappa clamp, so already-misclassified points keep
moving away from the boundary).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dard.attacks.base import IterativeAttack, check_norm, preset
from dard.errors import DardError
from dard.models import check_logits
from dard.registry import register_attack
from dard.validate import MAX_ITERATIONS, check_choice, check_float, check_int

__all__ = ["BIM", "CW", "FGSM", "PGD", "ce_loss", "margin_loss", "pgd_ascent", "project"]

LossFn = Callable[[Any, int], torch.Tensor]
"""``loss_fn(output, step) -> scalar`` to be maximised, ``output`` = the model's output (logits); ``step`` is 0 ..
steps-1."""

_NORMS = ("linf", "l2")
_INITS = ("zero", "uniform", "normal")


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy, shape (N,)."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample CW margin ``max_{j != y} z_j - z_y`` (positive = misclassified), shape (N,)."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    is_true = F.one_hot(y, logits.shape[1]).bool()
    best_other = logits.masked_fill(is_true, float("-inf")).amax(dim=1)
    return best_other - true


def _view_per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x``, then clamp to [0, 1].

    Clamping after the projection keeps the point in the ball: ``x`` itself is in [0, 1], so clamping only
    moves coordinates towards ``x``.
    """
    if norm == "linf":
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
    elif norm == "l2":
        delta = x_adv - x
        n = delta.flatten(1).norm(p=2, dim=1)
        factor = torch.clamp(eps / n.clamp_min(1e-12), max=1.0)
        x_adv = x + delta * _view_per_sample(factor, delta).to(delta.dtype)
    else:
        raise DardError(f"norm must be one of {', '.join(_NORMS)}; got {norm!r}")
    return x_adv.clamp(0.0, 1.0)


def _random_start(x: torch.Tensor, eps: float, norm: str, init: str, generator: torch.Generator | None) -> torch.Tensor:
    if init == "zero":
        return x.clone()
    kw: dict[str, Any] = dict(generator=generator, device=x.device, dtype=x.dtype)
    if init == "normal":
        # TRADES / RSLAD start: a tiny Gaussian nudge so the KL gradient at x is not exactly zero
        start = x + 0.001 * torch.randn(x.shape, **kw)
    elif norm == "linf":
        start = x + eps * (2.0 * torch.rand(x.shape, **kw) - 1.0)
    else:
        # L2: uniform random direction, radius uniform in [0, eps]
        direction = torch.randn(x.shape, **kw)
        direction = direction / _view_per_sample(direction.flatten(1).norm(dim=1).clamp_min(1e-12), x)
        radius = eps * torch.rand((x.shape[0],), **kw)
        start = x + direction * _view_per_sample(radius, x)
    return project(start, x, eps, norm)


def pgd_ascent(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    loss_fn: LossFn,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    init: str = "zero",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Maximise ``loss_fn(model(x_adv), step)`` by projected gradient ascent; return detached ``x_adv``.

    Each step: Linf ``x_adv + step_size * sign(g)`` or L2 ``x_adv + step_size * g / ||g||`` (per sample), then
    projection onto the eps-ball around ``x`` and clamping to [0, 1].

    ``init``: ``"zero"`` starts at ``x``; ``"uniform"`` uniformly in the ball (L2: random direction, radius
    uniform in [0, eps]); ``"normal"`` at ``x + 0.001 * N(0, 1)`` (TRADES / RSLAD). Random draws use
    ``generator`` (must live on ``x.device``) or, when None, the global stream.

    ``model`` is a network, whose output must be logits (N, classes) (:func:`dard.models.check_logits`: a tuple or
    dict is a one-line DardError), or any other callable of the input whose output ``loss_fn`` takes (e.g. a pair
    of networks' logits, each checked by the caller). It is used as it is: callers put it in eval mode (the
    :class:`Attack` wrapper does).
    Gradients are taken with ``torch.autograd.grad`` w.r.t. the input only, so parameters' ``.grad`` are never
    written; the routine works inside ``torch.no_grad()`` too. ``eps == 0`` returns ``x`` without calling the model.
    """
    norm = check_choice("norm", norm, _NORMS, owner="pgd_ascent")
    init = check_choice("init", init, _INITS, owner="pgd_ascent")
    eps = check_float("eps", eps, lo=0.0, owner="pgd_ascent")
    step_size = check_float("step_size", step_size, lo=0.0, owner="pgd_ascent")
    steps = check_int("steps", steps, lo=0, hi=MAX_ITERATIONS, owner="pgd_ascent")

    x = x.detach()
    if eps == 0.0:
        return x.clone()
    x_adv = _random_start(x, eps, norm, init, generator)
    is_network = isinstance(model, nn.Module)
    for step in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            output = model(x_adv)
            loss = loss_fn(check_logits(output, x.shape[0]) if is_network else output, step)
            if loss.requires_grad:
                (grad,) = torch.autograd.grad(loss, x_adv)
            else:  # e.g. an empty batch: nothing to ascend
                grad = torch.zeros_like(x_adv)
        x_adv = x_adv.detach()
        if norm == "linf":
            x_adv = x_adv + step_size * grad.sign()
        else:
            g_norm = grad.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
            x_adv = x_adv + step_size * grad / _view_per_sample(g_norm, grad)
        x_adv = project(x_adv, x, eps, norm)
    return x_adv.detach()


def restarted_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    per_sample_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str,
    random_start: bool,
    restarts: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Untargeted PGD with restarts, keeping the worst case per point.

    A point keeps the first restart that misclassifies it; points never misclassified keep the restart with
    the highest loss. Later restarts only attack points still classified correctly (the others are done).
    """
    init = "uniform" if random_start else "zero"

    def run(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return pgd_ascent(
            model,
            xs,
            lambda logits, _step: per_sample_loss(logits, ys).sum(),  # sum: per-sample gradients unscaled
            eps=eps,
            step_size=step_size,
            steps=steps,
            norm=norm,
            init=init,
            generator=generator,
        )

    if restarts == 1:  # no bookkeeping, no extra forward pass
        return run(x, y)

    best = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        active = (~fooled).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        adv = run(x[active], y[active])
        with torch.no_grad():
            logits = model(adv)
            loss = per_sample_loss(logits, y[active])
            success = logits.argmax(dim=1) != y[active]
        take = success | (loss > best_loss[active])
        best[active[take]] = adv[take]
        best_loss[active[take]] = loss[take]
        fooled[active[success]] = True
    return best


@register_attack("pgd")
class PGD(IterativeAttack):
    """Untargeted PGD (Madry et al. 2018): ``steps`` projected ascent steps on CE or the CW margin.

    Restarts keep the worst case per point (first misclassifying restart, else the highest loss).
    """

    name = "pgd"

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 20,
        random_start: bool = True,
        restarts: int = 1,
        norm: str = "linf",
        loss: str = "ce",
        seed: int | None = None,
    ) -> None:
        super().__init__(
            eps=eps, step_size=step_size, steps=steps, random_start=random_start, restarts=restarts, seed=seed
        )
        self.norm = check_norm(norm, owner=self.name)
        self.loss = check_choice("loss", loss, ("ce", "margin"), owner=self.name)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return restarted_pgd(
            model,
            x,
            y,
            ce_loss if self.loss == "ce" else margin_loss,
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            norm=self.norm,
            random_start=self.random_start,
            restarts=self.restarts,
            generator=self.generator,
        )


CW = register_attack("cw")(
    preset(
        PGD,
        "cw",
        "CW-inf: Linf PGD maximising the logit margin; restarts keep the worst case per point.",
        fixed={"loss": "margin", "norm": "linf"},
    )
)

BIM = register_attack("bim")(
    preset(
        PGD,
        "bim",
        "BIM / I-FGSM (Kurakin et al. 2017): ``steps`` signed CE-ascent steps of ``step_size`` from ``x`` (no random "
        "start), projected to the eps-ball (L2: normalised-gradient steps).",
        fixed={"random_start": False, "restarts": 1, "loss": "ce"},
        defaults={"steps": 10},
    )
)


@register_attack("fgsm")
class FGSM(PGD):
    """FGSM (Goodfellow et al. 2015): ``x_adv = clip01(x + eps * sign(grad_x CE(f(x), y)))``, one PGD step of eps
    (under L2 the fast gradient method: one step of eps along the normalised gradient)."""

    name = "fgsm"

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", seed: int | None = None) -> None:
        super().__init__(eps=eps, step_size=eps, steps=1, random_start=False, norm=norm, seed=seed)
