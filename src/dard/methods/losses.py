"""Loss building blocks shared by the training methods.

KL divergences sum over classes first and are then reduced over the batch in one of two ways
(:data:`KL_REDUCTIONS`):

- ``batchmean``: averaged over the batch, the mathematical KL per sample. This project's own losses (DARD,
  PGDARD, TRADES) use it.
- ``mean``: divided by batch x classes, PyTorch's ``nn.KLDivLoss()`` default. Official baseline code that
  calls ``nn.KLDivLoss()`` (ARD, AdaAD on CIFAR-10, RSLAD's CIFAR-10 script) trains with this scale, which is
  the per-sample KL divided by the number of classes; the baselines offer it so that they train as their authors
  ran them.

The batch sum itself is :func:`dard.attacks.kl.kl_sum`, the objective of the KL inner maximisations; it lives with
the attack that ascends it (attacks do not import methods) and both reductions divide it.

Everything is computed in float32 at least (float64 inputs stay float64), also under autocast.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dard.attacks.kl import kl_sum, loss_precision
from dard.validate import check_float

#: ``kl_reduction`` values: "batchmean" (the per-sample KL) and "mean" (nn.KLDivLoss()'s default, / classes too).
KL_REDUCTIONS = ("batchmean", "mean")
#: The temperatures a method takes, far around those in use (ARD 30, DARD 1 to 3, Hinton et al. up to 20). Past
#: them a distillation trains on nothing: below, logits of ordinary size give one-hot probabilities (and below
#: ~1e-37 inf, a NaN loss); above, probabilities uniform to float32's precision times a tau^2 that, past 1.3e154,
#: overflowed a Python float at the first step (an internal error, where ARD or DARD had said nothing).
TEMPERATURES = (0.01, 1000.0)


def check_temperature(tau: object, *, owner: str) -> float:
    """``tau`` as a float in :data:`TEMPERATURES`, else a one-line DardError naming ``owner``'s ``tau``."""
    return check_float("tau", tau, lo=TEMPERATURES[0], hi=TEMPERATURES[1], owner=owner)


#: The most a loss term, or a whole loss, may be weighted (TRADES' ``beta``, RSLAD's ``kl_scale``): far above those
#: in use (TRADES 1 to 6, RSLAD 0.1 and 1). Past it one term is all of the loss, and a weight of 1e300 made the
#: loss inf at the first training step, a stop said only after the data had loaded.
WEIGHT_MAX = 1000.0


def soft_targets(teacher_logits: Tensor, tau: float = 1.0) -> Tensor:
    """Temperature-softened probabilities ``softmax(teacher_logits / tau)`` over dim 1, in float32 (float64 kept)."""
    return F.softmax(loss_precision(teacher_logits) / tau, dim=1)


def kl_divergence(
    target_probs: Tensor, student_logits: Tensor, tau: float = 1.0, reduction: str = "batchmean"
) -> Tensor:
    """``KL(target || softmax(student_logits / tau))`` summed over classes, then reduced by ``reduction``.

    ``target_probs`` are probabilities (rows summing to 1; zeros allowed, ``0 log 0 = 0``); gradients flow into
    them when they carry a graph (TRADES). No ``tau**2`` factor is applied here; methods that follow Hinton et
    al. multiply by it themselves. ``reduction``: one of :data:`KL_REDUCTIONS` (see the module docstring).
    """
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(KL_REDUCTIONS)}; got {reduction!r}")
    total = kl_sum(target_probs, student_logits, tau)
    # 'mean' written out: F.kl_div's own warns on every call and is announced to become 'batchmean'
    return total / (student_logits.numel() if reduction == "mean" else student_logits.shape[0])


def kl_batchmean(target_probs: Tensor, student_logits: Tensor, tau: float = 1.0) -> Tensor:
    """:func:`kl_divergence` averaged over the batch: the per-sample KL."""
    return kl_divergence(target_probs, student_logits, tau, "batchmean")


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy, computed in float32 (float64 kept)."""
    return F.cross_entropy(loss_precision(logits), y)


__all__ = [
    "KL_REDUCTIONS",
    "TEMPERATURES",
    "WEIGHT_MAX",
    "check_temperature",
    "cross_entropy",
    "kl_batchmean",
    "kl_divergence",
    "soft_targets",
]
