"""The teacher soft-label gap against a closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dard.attacks import create_attack
from dard.evaluation.soft_labels import teacher_label_gap


class MeanLogit(nn.Module):
    """logits = [0, s * mean(x)]: raising any pixel raises class 1, so FGSM on label 0 adds eps everywhere."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.s * x.flatten(1).mean(dim=1)
        return torch.stack([torch.zeros_like(m), m], dim=1)


def test_gap_matches_closed_form_and_restores_modes():
    s, eps, tau = 4.0, 0.1, 2.0
    teacher, student = MeanLogit(s).train(), MeanLogit(1.0)
    x = torch.full((6, 1, 3, 3), 0.5)
    y = torch.zeros(6, dtype=torch.long)
    gap = teacher_label_gap(teacher, student, x, y, create_attack("fgsm", eps=eps), tau=tau, batch_size=4)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731  p(class 1) of logits [0, z]
    p, pa = sig(s * 0.5 / tau), sig(s * (0.5 + eps) / tau)
    assert gap["tv"] == pytest.approx(pa - p, rel=1e-5)
    assert gap["top1_agreement"] == 1.0 and gap["n"] == 6
    assert gap["teacher_top_prob_clean"] == pytest.approx(p, rel=1e-5)
    assert gap["teacher_top_prob_adv"] == pytest.approx(pa, rel=1e-5)
    assert teacher.training and teacher.s.grad is None


def test_zero_budget_means_zero_gap():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    student = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.rand(5, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    gap = teacher_label_gap(teacher, student, x, y, create_attack("dpgd", eps=0.0, steps=3))
    assert gap["tv"] == pytest.approx(0.0, abs=1e-7) and gap["top1_agreement"] == 1.0
