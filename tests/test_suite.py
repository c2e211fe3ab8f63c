"""The evaluation suite's bookkeeping: the pgd-large sanity attack is flagged when points survive it and never
enters the worst case or the recorded threat model."""

from __future__ import annotations

import torch
from torch import nn

from dard.evaluation.suite import QUICK_SUITE, build_suite, evaluate


class MeanSign(nn.Module):
    """Two classes decided by whether the mean pixel is above 0.5: an eps of 0.5 can always flip it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = 8.0 * (x.flatten(1).mean(dim=1) - 0.5)
        return torch.stack([m, -m], dim=1)


class Constant(nn.Module):
    """Ignores its input (zero input gradient): no attack can move it, the pattern of a masked model."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], 2) + 0.0 * x.flatten(1).sum(dim=1, keepdim=True)


def _data(n: int = 40):
    gen = torch.Generator().manual_seed(0)
    x = 0.3 + 0.4 * torch.rand((n, 1, 4, 4), generator=gen)
    return x, (x.flatten(1).mean(dim=1) <= 0.5).long()  # MeanSign's own predictions: all correct


def test_pgd_large_is_in_the_default_suite_and_reaches_zero_on_a_movable_model():
    assert "pgd-large" in QUICK_SUITE
    x, y = _data()
    rec = evaluate(MeanSign(), x, y, build_suite(["fgsm", "pgd-large"], eps=0.02), progress=False)
    assert rec.clean["accuracy"] == 1.0
    assert rec.attacks["pgd-large"].accuracy == 0.0 and rec.attacks["pgd-large"].config["eps"] == 0.5
    assert rec.attacks["pgd-large"].max_perturbation <= 0.5 + 1e-6
    assert not [f for f in rec.flags if f.startswith("pgd-large")]
    # the sanity attack stays out of the threat model and the worst case
    assert rec.threat_model["eps"] == 0.02
    assert rec.worst_case["accuracy"] == rec.attacks["fgsm"].accuracy > 0.0


def test_points_surviving_pgd_large_are_flagged():
    x, y = _data()
    y = torch.arange(len(y)) % 2  # the constant model (always class 0) is right on half of them
    rec = evaluate(Constant(), x, y, build_suite(["pgd-large"], eps=0.02), progress=False)
    assert rec.attacks["pgd-large"].accuracy == 0.5
    assert rec.worst_case is None  # no threat-model attack ran
    assert any(f.startswith("pgd-large: 50.00% of points survive PGD at eps 0.5") for f in rec.flags), rec.flags
