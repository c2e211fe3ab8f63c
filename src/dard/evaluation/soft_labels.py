"""How far a teacher's soft labels move between clean inputs and adversarial inputs crafted against a student.

DARD's target mixes the teacher's soft labels on ``x`` and on ``x_adv`` with weight ``lambda``; when the two are
nearly equal, ``lambda`` cannot change the target much, so this gap bounds how much a lambda sweep can show.
"""

from __future__ import annotations

import torch
from torch import nn

from dard.attacks import Attack
from dard.module_utils import eval_mode


def teacher_label_gap(
    teacher: nn.Module,
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    tau: float = 1.0,
    batch_size: int = 250,
) -> dict[str, float]:
    """Mean total-variation distance between ``softmax(T(x)/tau)`` and ``softmax(T(x_adv)/tau)``, where ``x_adv``
    is ``attack`` on ``student``; also the fraction of points whose teacher top class is unchanged and the
    teacher's mean top probability on each. The soft-label mix of any two lambdas differs by |dlambda| * TV."""
    tv_sum, agree, top_clean, top_adv = 0.0, 0.0, 0.0, 0.0
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        xa = attack(student, xb, yb)
        with eval_mode(teacher), torch.no_grad():
            p = torch.softmax(teacher(xb).float() / tau, dim=1)
            pa = torch.softmax(teacher(xa).float() / tau, dim=1)
        tv_sum += 0.5 * (p - pa).abs().sum(dim=1).sum().item()
        agree += (p.argmax(dim=1) == pa.argmax(dim=1)).sum().item()
        top_clean += p.max(dim=1).values.sum().item()
        top_adv += pa.max(dim=1).values.sum().item()
    n = x.shape[0]
    return {
        "tv": tv_sum / n,
        "top1_agreement": agree / n,
        "teacher_top_prob_clean": top_clean / n,
        "teacher_top_prob_adv": top_adv / n,
        "n": n,
    }
