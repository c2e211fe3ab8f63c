"""Loss building blocks shared by the training methods.

KL divergences come in three reductions (:data:`KL_REDUCTIONS`), all summing over classes first:

- ``batchmean``: averaged over the batch, the mathematical KL per sample. This project's own losses (DARD,
  PGDARD, TRADES) use it.
- ``mean``: divided by batch x classes, PyTorch's ``nn.KLDivLoss()`` default. Official baseline code that
  calls ``nn.KLDivLoss()`` (ARD, AdaAD on CIFAR-10, RSLAD's CIFAR-10 script) trains with this scale, which is
  the per-sample KL divided by the number of classes; the baselines offer it so that they train as their authors
  ran them.
- ``sum``: summed over the batch too; per-sample gradients independent of the batch size (inner maximisations).

Everything is computed in float32 at least (float64 inputs stay float64), also under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

KL_REDUCTIONS = ("batchmean", "mean", "sum")


def _fp32(t: Tensor) -> Tensor:
    """``t`` in float32, or unchanged if it is float64 (the tests check the losses in double precision)."""
    return t if t.dtype == torch.float64 else t.float()


def soft_targets(teacher_logits: Tensor, tau: float = 1.0) -> Tensor:
    """Temperature-softened probabilities ``softmax(teacher_logits / tau)`` over dim 1, in float32."""
    return F.softmax(_fp32(teacher_logits) / tau, dim=1)


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
    log_q = F.log_softmax(_fp32(student_logits) / tau, dim=1)
    if reduction == "mean":
        # Written out: F.kl_div's own 'mean' warns on every call and is announced to become 'batchmean'.
        return F.kl_div(log_q, _fp32(target_probs), reduction="sum") / log_q.numel()
    return F.kl_div(log_q, _fp32(target_probs), reduction=reduction)


def kl_batchmean(target_probs: Tensor, student_logits: Tensor, tau: float = 1.0) -> Tensor:
    """:func:`kl_divergence` averaged over the batch: the per-sample KL."""
    return kl_divergence(target_probs, student_logits, tau, "batchmean")


def kl_sum(target_probs: Tensor, student_logits: Tensor, tau: float = 1.0) -> Tensor:
    """:func:`kl_divergence` summed over the batch (per-sample gradients independent of batch size).

    Used as the objective of the inner maximisations (TRADES, RSLAD, AdaAD), where the sign / per-sample
    normalised step makes the overall scale irrelevant.
    """
    return kl_divergence(target_probs, student_logits, tau, "sum")


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy, computed in float32."""
    return F.cross_entropy(_fp32(logits), y)


__all__ = ["KL_REDUCTIONS", "cross_entropy", "kl_batchmean", "kl_divergence", "kl_sum", "soft_targets"]
