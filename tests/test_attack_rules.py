"""The attacks' update rules and losses checked by hand: pgd_ascent, DPGD (the DARD paper's attack), kl_pgd."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.test_attacks import EPS, target_for, tiny_setup
from torch import nn

import dard.attacks.dpgd as dpgd_module
from dard.attacks import (
    DPGD,
    create_attack,
    dice_loss,
    dpgd_lambda,
    dpgd_loss,
    margin_loss,
    perturbation_norms,
    pgd_ascent,
)
from dard.errors import DardError

# ---------------------------------------------------------------------------------------------------------------
# pgd_ascent, the shared core
# ---------------------------------------------------------------------------------------------------------------


class Linear(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x.flatten(1) @ self.w


def test_pgd_ascent_linf_step_is_signed_gradient():
    w = torch.tensor([[1.0, -1.0], [-2.0, 0.5], [0.0, 1.0], [3.0, -3.0]])
    model = Linear(w)
    x = torch.tensor([[0.5, 0.5, 0.5, 0.99]])
    # loss = logit_0 - logit_1, gradient = w[:, 0] - w[:, 1] = [2, -2.5, -1, 6]
    out = pgd_ascent(model, x, lambda z, t: (z[:, 0] - z[:, 1]).sum(), eps=0.1, step_size=0.04, steps=1)
    assert torch.allclose(out, torch.tensor([[0.54, 0.46, 0.46, 1.0]]))  # last coordinate clamped to 1
    out3 = pgd_ascent(model, x, lambda z, t: (z[:, 0] - z[:, 1]).sum(), eps=0.1, step_size=0.04, steps=3)
    assert torch.allclose(out3, torch.tensor([[0.6, 0.4, 0.4, 1.0]]))  # projected back to the ball
    assert model.w.grad is None


def test_pgd_ascent_l2_step_and_projection():
    w = torch.tensor([[3.0], [4.0], [0.0]])
    model = Linear(w)
    x = torch.full((1, 3), 0.5)
    out = pgd_ascent(model, x, lambda z, t: z.sum(), eps=0.2, step_size=0.1, steps=1, norm="l2")
    assert torch.allclose(out, torch.tensor([[0.56, 0.58, 0.5]]))  # 0.1 * g / ||g||, g = (3, 4, 0)
    out = pgd_ascent(model, x, lambda z, t: z.sum(), eps=0.2, step_size=0.1, steps=5, norm="l2")
    assert torch.allclose(out, torch.tensor([[0.62, 0.66, 0.5]]))  # stops on the sphere of radius 0.2


def test_pgd_ascent_passes_the_step_index():
    model = Linear(torch.ones(4, 2))
    seen = []
    pgd_ascent(model, torch.rand(3, 4), lambda z, t: seen.append(t) or z.sum(), eps=0.1, step_size=0.01, steps=4)
    assert seen == [0, 1, 2, 3]


@pytest.mark.parametrize("init", ["uniform", "normal"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_ascent_random_inits_stay_in_ball(init, norm):
    model = Linear(torch.zeros(64, 2))  # zero gradient: the result is the start point
    x = torch.rand(50, 1, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = pgd_ascent(
        model, x, lambda z, t: z.sum(), eps=0.05, step_size=0.01, steps=1, norm=norm, init=init, generator=gen
    )
    assert out.min() >= 0 and out.max() <= 1
    assert perturbation_norms(out, x, norm).max().item() <= 0.05 + 1e-6
    assert not torch.equal(out, x)
    if init == "normal":  # x + 0.001 N(0, 1): tiny
        assert (out - x).abs().max().item() < 0.01


def test_pgd_ascent_eps_zero_returns_x_without_calling_model():
    model = Linear(torch.ones(4, 2))
    x = torch.rand(3, 4)
    out = pgd_ascent(model, x, lambda z, t: z.sum(), eps=0.0, step_size=0.1, steps=5, init="uniform")
    assert torch.equal(out, x) and model.calls == 0


def test_pgd_ascent_bad_norm():
    with pytest.raises(DardError, match="norm"):
        pgd_ascent(
            Linear(torch.ones(4, 2)), torch.rand(3, 4), lambda z, t: z.sum(), eps=0.1, step_size=0.1, steps=1, norm="l1"
        )


def test_margin_loss_values():
    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    y = torch.tensor([0, 2])
    assert torch.allclose(margin_loss(z, y), torch.tensor([2.0 - 3.0, 5.0 - 1.0]))


def test_tpgd_random_targets_are_wrong_classes_and_seeded():
    model, x, y = tiny_setup(n=200)
    a = create_attack("tpgd", eps=EPS, target="random", seed=3)
    a(model, x, y)
    t1 = a.last_targets
    assert t1.shape == y.shape and bool((t1 != y).all())
    assert len(set(t1.tolist())) >= 8  # spread over the classes
    a(model, x, y)
    assert torch.equal(a.last_targets, t1)


def test_tpgd_least_likely_is_argmin_of_clean_logits():
    model, x, y = tiny_setup()
    a = create_attack("tpgd", eps=EPS, seed=0)
    a(model, x, y)
    with torch.no_grad():
        assert torch.equal(a.last_targets, model.eval()(x).argmin(dim=1))


# ---------------------------------------------------------------------------------------------------------------
# DPGD, checked by hand
# ---------------------------------------------------------------------------------------------------------------

S = 1e-5


def _softmax_row(row):
    exps = [math.exp(v) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


# three samples, three classes: samples 0 and 1 are classified correctly, sample 2 is not (predicts class 0)
LOGITS = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
LABELS = [0, 1, 2]


def test_dpgd_loss_by_hand_set_reduction():
    e = math.e
    e2 = math.exp(2.0)
    # softmax rows written out
    p0 = [e2 / (e2 + 2), 1 / (e2 + 2), 1 / (e2 + 2)]
    p1 = [1 / (e + 2), e / (e + 2), 1 / (e + 2)]
    p2 = [e / (e + 2), 1 / (e + 2), 1 / (e + 2)]
    assert all(math.isclose(a, b) for a, b in zip(p0 + p1 + p2, sum(map(_softmax_row, LOGITS), [])))
    # C = {0, 1}: sum(p * g) = p0[0] + p1[1]; sum(g^2) = 2; sum(p^2) over both rows
    inter_c = p0[0] + p1[1]
    sq_c = sum(v * v for v in p0) + sum(v * v for v in p1)
    dice_c = 1 - (2 * inter_c + S) / (2 + sq_c + S)
    # W = {2}: true class 2
    dice_w = 1 - (2 * p2[2] + S) / (1 + sum(v * v for v in p2) + S)
    t, k = 4, 10
    lam = 4 / 20
    expected = (1 - lam) * dice_c + lam * dice_w
    got = dpgd_loss(torch.tensor(LOGITS), torch.tensor(LABELS), t, k)
    assert math.isclose(got.item(), expected, rel_tol=1e-6)
    # sanity of the numbers themselves
    assert math.isclose(expected, 0.8 * dice_c + 0.2 * dice_w)
    assert 0 < dice_c < dice_w < 1


def test_dpgd_loss_by_hand_sample_reduction():
    p = [_softmax_row(r) for r in LOGITS]
    per = [1 - (2 * p[i][LABELS[i]] + S) / (1 + sum(v * v for v in p[i]) + S) for i in range(3)]
    lam = 7 / 20
    expected = (1 - lam) * (per[0] + per[1]) / 2 + lam * per[2]
    got = dpgd_loss(torch.tensor(LOGITS), torch.tensor(LABELS), 7, 10, reduction="sample")
    assert math.isclose(got.item(), expected, rel_tol=1e-6)


def test_dpgd_lambda_schedule():
    sched = [dpgd_lambda(t, 10) for t in range(10)]
    assert sched == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45])
    # t = 0: only the correct set counts
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS)
    probs = logits.softmax(1)
    onehot = F.one_hot(labels, 3).float()
    only_c = dice_loss(probs[:2], onehot[:2])
    assert torch.allclose(dpgd_loss(logits, labels, 0, 10), only_c)


def test_dice_empty_set_contributes_zero():
    probs = torch.zeros(0, 3, requires_grad=True)
    for reduction in ("set", "sample"):
        d = dice_loss(probs, torch.zeros(0, 3), reduction=reduction)
        assert d.item() == 0.0 and d.requires_grad
    # every sample correct: W is empty, L = (1 - lambda) * Dice(all)
    logits = torch.tensor(LOGITS, requires_grad=True)
    labels = torch.tensor([0, 1, 0])
    probs = logits.softmax(1)
    onehot = F.one_hot(labels, 3).float()
    got = dpgd_loss(logits, labels, 6, 10)
    assert torch.allclose(got, 0.7 * dice_loss(probs, onehot))
    # every sample wrong: C is empty, L = lambda * Dice(all)
    wrong = torch.tensor([1, 2, 1])
    got = dpgd_loss(logits, wrong, 6, 10)
    assert torch.allclose(got, 0.3 * dice_loss(probs, F.one_hot(wrong, 3).float()))
    (g,) = torch.autograd.grad(got, logits)
    assert torch.isfinite(g).all()


def test_dice_perfect_prediction_is_zero_and_sets_differ_from_sample_mean():
    onehot = F.one_hot(torch.tensor([0, 1]), 3).float()
    assert dice_loss(onehot, onehot).item() == pytest.approx(0.0, abs=1e-9)
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    assert not math.isclose(dice_loss(probs, onehot).item(), dice_loss(probs, onehot, reduction="sample").item())


class Scripted(nn.Module):
    """Its k-th forward classifies sample i correctly iff ``patterns[k][i]``; logits still depend on x a bit."""

    def __init__(self, y: torch.Tensor, patterns: list[list[bool]]) -> None:
        super().__init__()
        self.y, self.patterns, self.calls = y, patterns, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pattern = self.patterns[self.calls]
        self.calls += 1
        base = torch.zeros(x.shape[0], 3)
        for i, ok in enumerate(pattern):
            base[i, int(self.y[i]) if ok else (int(self.y[i]) + 1) % 3] = 5.0
        return base + 1e-3 * x.flatten(1)[:, :3]


def test_dpgd_recomputes_split_every_step(monkeypatch):
    y = torch.tensor([0, 1, 2])
    patterns = [[True, True, True], [True, False, True], [False, False, True], [False, False, False]]
    model = Scripted(y, patterns)
    sizes, steps_seen = [], []
    real_dice, real_lambda = dpgd_module.dice_loss, dpgd_module.dpgd_lambda

    def spy_dice(probs, onehot, smooth=1e-5, reduction="set"):
        sizes.append(probs.shape[0])
        return real_dice(probs, onehot, smooth, reduction)

    def spy_lambda(t, steps):
        steps_seen.append((t, steps))
        return real_lambda(t, steps)

    monkeypatch.setattr(dpgd_module, "dice_loss", spy_dice)
    monkeypatch.setattr(dpgd_module, "dpgd_lambda", spy_lambda)
    DPGD(eps=0.1, steps=4)(model, torch.rand(3, 1, 2, 2), y)
    assert model.calls == 4  # one forward per step, no extra passes
    assert sizes[0::2] == [3, 2, 1, 0]  # |C| per step
    assert sizes[1::2] == [0, 1, 2, 3]  # |W| per step
    assert steps_seen == [(0, 4), (1, 4), (2, 4), (3, 4)]


@pytest.mark.parametrize("reduction", ["set", "sample"])
def test_dpgd_matches_the_update_rule(reduction):
    model, x, y = tiny_setup(n=8)
    eps, a, k = 0.05, 0.02, 3
    # the spec, written out: x_{t+1} = clip01(Proj(x_t + a * sign(grad L_t))), from the clean image
    xt = x.clone()
    model.eval()
    for t in range(k):
        xt.requires_grad_(True)
        z = model(xt)
        p = z.softmax(1)
        g = F.one_hot(y, 10).float()
        ok = z.argmax(1) == y
        lam = t / (2 * k)
        loss = (1 - lam) * dice_loss(p[ok], g[ok], reduction=reduction) + lam * dice_loss(
            p[~ok], g[~ok], reduction=reduction
        )
        (grad,) = torch.autograd.grad(loss, xt)
        xt = xt.detach() + a * grad.sign()
        xt = torch.min(torch.max(xt, x - eps), x + eps).clamp(0, 1)
    got = DPGD(eps=eps, step_size=a, steps=k, reduction=reduction)(model, x, y)
    assert torch.allclose(got, xt, atol=1e-7)


def test_dpgd_random_start_option():
    model, x, y = tiny_setup()
    a = DPGD(eps=EPS, seed=0)(model, x, y)
    b = DPGD(eps=EPS, random_start=True, seed=0)(model, x, y)
    assert not torch.equal(a, b)
    assert (b - x).abs().max().item() <= EPS + 1e-6


# ---------------------------------------------------------------------------------------------------------------
# kl_pgd, the KL maximisation of TRADES / RSLAD (and, with a reference network, AdaAD)
# ---------------------------------------------------------------------------------------------------------------


def ref_kl_sum(p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """sum_i sum_c p_ic (log p_ic - log softmax(logits_i)_c), written out."""
    return (p * (p.log() - logits.log_softmax(dim=1))).sum()


@pytest.mark.parametrize("seed", [None, 5])
def test_kl_pgd_matches_the_update_rule(seed):
    model, x, y = tiny_setup(n=8)
    p = target_for("kl_pgd", y)
    eps, a, k = 0.05, 0.02, 3
    torch.manual_seed(11)  # the unseeded attack draws its start from the global stream, as in training
    got = create_attack("kl_pgd", eps=eps, step_size=a, steps=k, seed=seed)(model, x, p)
    # written out: start at x + 0.001 N(0, 1) (same draw), then signed ascent steps on the summed KL, projected
    if seed is None:
        torch.manual_seed(11)
        noise = torch.randn(x.shape)
    else:
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    xt = torch.min(torch.max(x + 0.001 * noise, x - eps), x + eps).clamp(0, 1)
    model.eval()
    for _ in range(k):
        xt.requires_grad_(True)
        (grad,) = torch.autograd.grad(ref_kl_sum(p, model(xt)), xt)
        xt = torch.min(torch.max(xt.detach() + a * grad.sign(), x - eps), x + eps).clamp(0, 1)
    assert torch.allclose(got, xt, atol=1e-7)
    with torch.no_grad():  # and it raised the KL
        assert ref_kl_sum(p, model(got)) > ref_kl_sum(p, model(x))


@pytest.mark.parametrize(
    "name, target, fragment",
    [
        ("kl_pgd", torch.zeros(6, dtype=torch.long), "target probabilities must be a float tensor of shape (6, cl"),
        ("kl_pgd", torch.full((5, 10), 0.1), "shape (6, classes)"),
        ("kl_pgd", torch.full((6, 10), 0.2), "rows summing to 1"),
        ("kl_pgd", torch.full((6, 2), 0.5) + torch.tensor([[1.0, -1.0]]), "non-negative"),
        ("kl_pgd", torch.full((6, 10), float("nan")), "finite"),
        ("pgd", torch.full((6, 10), 0.1), "labels must be an int64 tensor"),
    ],
)
def test_target_of_the_wrong_kind_raises_one_line(name, target, fragment):
    model, x, _ = tiny_setup()
    with pytest.raises(DardError) as info:
        create_attack(name)(model, x, target)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_kl_pgd_against_a_reference_network():
    """AdaAD's inner problem: maximise KL(ref(x') || model(x')), the gradient through both networks."""
    model, x, _ = tiny_setup(n=8)
    reference, _, _ = tiny_setup(n=8, seed=1)
    reference.train()
    attack = create_attack("kl_pgd", eps=0.1, step_size=0.02, steps=5, seed=0)
    x_adv = attack(model, x, reference)
    assert reference.seen_training and not any(reference.seen_training)  # eval mode inside ...
    assert all(m.training for m in reference.modules())  # ... restored after
    assert all(p.grad is None for p in (*model.parameters(), *reference.parameters()))
    reference.eval()

    def kl(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return ref_kl_sum(reference(z).softmax(dim=1), model(z))

    assert kl(x_adv) > kl(x) and (x_adv - x).abs().max().item() <= 0.1 + 1e-6
    # written out, the reference's probabilities re-evaluated at every step and differentiated too
    model.eval()
    xt = (x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    for _ in range(5):
        xt.requires_grad_(True)
        (grad,) = torch.autograd.grad(ref_kl_sum(reference(xt).softmax(dim=1), model(xt)), xt)
        xt = torch.min(torch.max(xt.detach() + 0.02 * grad.sign(), x - 0.1), x + 0.1).clamp(0, 1)
    assert torch.allclose(x_adv, xt, atol=1e-7)
