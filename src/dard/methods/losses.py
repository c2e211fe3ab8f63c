"""Loss building blocks shared by the training methods.

Every KL divergence in this package is taken with the ``batchmean`` reduction: summed over classes and
averaged over the batch, which is the mathematical KL per sample. PyTorch's ``KLDivLoss`` default
(``'mean'``) divides by batch x classes instead, which silently rescales the term by 1/num_classes; the tests
check :func:`kl_batchmean` against the closed form.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

# The batch-summed form, the objective of the KL inner maximisations, lives with the attack that ascends it.
from dard.attacks.kl import kl_sum


def soft_targets(teacher_logits: Tensor, tau: float = 1.0) -> Tensor:
    """Temperature-softened probabilities ``softmax(teacher_logits / tau)`` over dim 1, in float32."""
    return F.softmax(teacher_logits.float() / tau, dim=1)


def kl_batchmean(target_probs: Tensor, student_logits: Tensor, tau: float = 1.0) -> Tensor:
    """``KL(target || softmax(student_logits / tau))``, summed over classes and averaged over the batch.

    ``target_probs`` are probabilities (rows summing to 1; zeros allowed, ``0 log 0 = 0``). No ``tau**2``
    factor is applied here; methods that follow Hinton et al. multiply by it themselves.
    """
    log_q = F.log_softmax(student_logits.float() / tau, dim=1)
    return F.kl_div(log_q, target_probs.float(), reduction="batchmean")


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy, computed in float32."""
    return F.cross_entropy(logits.float(), y)


__all__ = ["cross_entropy", "kl_batchmean", "kl_sum", "soft_targets"]
