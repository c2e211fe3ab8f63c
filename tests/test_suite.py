"""The evaluation suite's bookkeeping and its sanity flags, each triggered by a model (or attack) built to trip it:
points surviving pgd-large, PGD/BIM weaker than FGSM, robust accuracy above clean, a perturbation beyond eps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dard.errors import DardError
from dard.evaluation.labels import QUICK_SUITE
from dard.evaluation.suite import build_suite, evaluate


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
    assert rec.clean.accuracy == 1.0
    assert rec.attacks["pgd-large"].accuracy == 0.0 and rec.attacks["pgd-large"].config["eps"] == 0.5
    assert rec.attacks["pgd-large"].max_perturbation <= 0.5 + 1e-6
    assert not [f for f in rec.flags if f.startswith("pgd-large")]
    # the sanity attack stays out of the threat model and the worst case
    assert rec.threat_model["eps"] == 0.02
    assert rec.worst_case.accuracy == rec.attacks["fgsm"].accuracy > 0.0


def test_points_surviving_pgd_large_are_flagged():
    x, y = _data()
    y = torch.arange(len(y)) % 2  # the constant model (always class 0) is right on half of them
    rec = evaluate(Constant(), x, y, build_suite(["pgd-large"], eps=0.02), progress=False)
    assert rec.attacks["pgd-large"].accuracy == 0.5
    assert rec.worst_case is None  # no threat-model attack ran
    assert any(f.startswith("pgd-large: 50.00%, 20/40, of points survive PGD at eps 0.5") for f in rec.flags), rec.flags


def test_a_healthy_model_raises_no_flag():
    x, y = _data()
    rec = evaluate(
        MeanSign(), x, y, build_suite(["fgsm", "pgd20", "bim", "tpgd", "pgd-large"], eps=0.02), progress=False
    )
    assert rec.flags == []
    assert rec.attacks["pgd20"].accuracy <= rec.attacks["fgsm"].accuracy < rec.clean.accuracy


class Quantised(nn.Module):
    """Decides on round(4x)/4 (mean above 0.5: class 0), so steps under 1/8 change nothing.

    Its input gradient, a 1e-3 term too small to change a decision, points towards the boundary on the 1/4 grid
    (where the clean images lie) and away from it anywhere else: one FGSM step of eps crosses the boundary, while
    iterative attacks, off the grid after a random start or their first small step, are led back. The pattern of
    gradient masking that makes PGD look weaker than FGSM.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        q = (flat * 4).round() / 4  # no gradient through round
        on_grid = ((flat * 4 - (flat * 4).round()).abs() < 1e-4).all(dim=1, keepdim=True)
        decoy = torch.where(on_grid, 1.0, -1.0) * 1e-3 * flat.mean(dim=1, keepdim=True)
        m = 8.0 * (q.mean(dim=1, keepdim=True) - 0.5) + decoy
        return torch.cat([m, -m], dim=1)


def _grid_data() -> tuple[torch.Tensor, torch.Tensor]:
    """2x2 images on the 1/4 grid: three pixels 0.75 and one 0.25 (class 0) or the reverse (class 1)."""
    rows = []
    for hi, lo in ((0.75, 0.25), (0.25, 0.75)):
        for odd in range(4):
            rows.append([lo if i == odd else hi for i in range(4)])
    return torch.tensor(rows).view(8, 1, 2, 2), torch.tensor([0] * 4 + [1] * 4)


def test_pgd_and_bim_weaker_than_fgsm_are_flagged():
    x, y = _grid_data()
    rec = evaluate(Quantised(), x, y, build_suite(["fgsm", "pgd20", "bim"], eps=0.15), progress=False)
    acc = {k: v.accuracy for k, v in rec.attacks.items()}
    assert rec.clean.accuracy == 1.0 and acc == {"fgsm": 0.0, "pgd20": 1.0, "bim": 1.0}
    assert rec.flags == [
        "pgd20 (100.00%, 8/8) is weaker than FGSM (0.00%, 0/8) by more than one image: possible gradient masking",
        "bim (100.00%, 8/8) is weaker than FGSM (0.00%, 0/8) by more than one image: possible gradient masking",
    ]


class OffGrid(nn.Module):
    """Class 0 exactly on the 1/4 grid, class 1 anywhere else (no input gradient): any random start moves a point
    off the grid, so an attack 'repairs' every clean mistake on class-1 points."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        on_grid = ((flat * 4 - (flat * 4).round()).abs() < 1e-4).all(dim=1, keepdim=True).float()
        return torch.cat([on_grid, 1.0 - on_grid], dim=1) * 4.0


def test_repaired_points_are_not_robust_and_a_repairing_untargeted_attack_is_flagged():
    x, _ = _grid_data()
    y = torch.ones(8, dtype=torch.long)  # clean: all predicted 0, all wrong
    rec = evaluate(OffGrid(), x, y, build_suite(["pgd20", "pgd-ll"], eps=0.05), progress=False)
    assert rec.clean.accuracy == 0.0
    # both attacks move every point to its true class, but a point wrong on the clean image is never robust
    for label in ("pgd20", "pgd-ll"):
        res = rec.attacks[label]
        assert (res.accuracy, res.correct, res.corrected, res.fooled) == (0.0, 0, 8, 0)
    assert rec.worst_case.accuracy == 0.0
    # a targeted attack may legitimately move a wrong point to its true class: only pgd20 is flagged (and the model,
    # which has no input gradient)
    assert rec.flags == [
        "the model's logits have no gradient with respect to the input for 8 of the first 8 images (a detached "
        "output, rounding or another step without a gradient): gradient attacks cannot move them, so their robust "
        "accuracies are upper bounds (gradient masking); a gradient-free attack (square) measures them",
        "pgd20: the attack leaves 100.00%, 8/8, of points correct, more than clean accuracy 0.00%, 0/8, by more "
        "than one image (points misclassified clean became correct): a broken attack",
    ]


def test_targeted_pgd_never_exceeds_clean_accuracy():
    """Half the points right clean; the targeted push (towards the least likely class, here the true one of the
    wrong points) repairs the other half, which stays out of the robust count."""
    x, _ = _grid_data()
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])  # OffGrid predicts 0 on every clean (on-grid) image
    rec = evaluate(OffGrid(), x, y, build_suite(["pgd-ll"], eps=0.05), progress=False)
    res = rec.attacks["pgd-ll"]
    assert rec.clean.accuracy == 0.5
    assert res.accuracy <= rec.clean.accuracy and res.correct <= rec.clean.correct
    assert res.corrected == 4 and res.correct + res.fooled == res.clean_correct == 4


class Noisy(MeanSign):
    """MeanSign on a noisy copy of its input, in eval mode too: a randomised defence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x + 0.05 * torch.randn_like(x))


class Detached(MeanSign):
    """MeanSign with its output detached: no attack finds a gradient, so every robust count equals the clean one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).detach()


def test_a_randomised_model_and_one_without_input_gradient_are_flagged():
    """Their robust accuracies are upper bounds, and nothing else in the record said so: FGSM on the detached model
    left every image where it was (max perturbation 0) and its robust count equal to clean."""
    x, y = _data()
    suite = build_suite(["fgsm"], eps=0.02)
    state = torch.get_rng_state()
    noisy = evaluate(Noisy(), x, y, suite, progress=False, batch_size=16)
    assert noisy.flags[0].startswith("the model is randomised (two passes over the same images gave different")
    detached = evaluate(Detached(), x, y, suite, progress=False, batch_size=16)
    assert detached.attacks["fgsm"].correct == detached.clean.correct and detached.attacks["fgsm"].max_perturbation == 0
    assert detached.flags == [
        "the model's logits have no gradient with respect to the input for 16 of the first 16 images (a detached "
        "output, rounding or another step without a gradient): gradient attacks cannot move them, so their robust "
        "accuracies are upper bounds (gradient masking); a gradient-free attack (square) measures them"
    ]
    assert not evaluate(MeanSign(), x, y, suite, progress=False).flags  # the same model with its gradient
    # the probe's passes draw from a forked stream: the caller's is where the clean pass alone leaves it
    after = torch.get_rng_state()
    torch.set_rng_state(state)
    evaluate(Noisy(), x, y, suite, progress=False, batch_size=16, probe_model=False)
    assert torch.equal(torch.get_rng_state(), after)


class Overshoot:
    """A broken attack: claims eps 0.02 but moves every pixel by 0.06, and reports a warning of its own."""

    eps = 0.02
    target_kind = "labels"
    last_warnings = ["stage 2 skipped"]

    def config(self) -> dict:
        return {"name": "overshoot", "eps": self.eps}

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x + 0.06).clamp(0, 1)


def test_perturbation_beyond_eps_and_attack_warnings_are_flagged():
    x, y = _data()  # pixels in [0.3, 0.7]: +0.06 is not clipped
    rec = evaluate(MeanSign(), x, y, {"broken": Overshoot()}, progress=False)
    assert abs(rec.attacks["broken"].max_perturbation - 0.06) < 1e-6
    assert rec.flags == ["broken: perturbation 0.060000 exceeds eps 0.020000", "broken: stage 2 skipped"]


def test_an_attack_that_does_not_take_labels_is_refused():
    with pytest.raises(DardError, match="kl_pgd' takes target probabilities"):
        build_suite(["kl_pgd"], eps=0.02)
