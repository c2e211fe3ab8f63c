"""Tests for dard.attacks: the shared contract (over the whole registry), DPGD by hand, and attack strength on a
tiny digits classifier trained in a fixture."""

from __future__ import annotations

import json
import logging
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dard.attacks.dpgd as dpgd_module
from dard.attacks import (
    DPGD,
    Attack,
    create_attack,
    dice_loss,
    dpgd_lambda,
    dpgd_loss,
    list_attacks,
    margin_loss,
    perturbation_norms,
    pgd_ascent,
)
from dard.errors import DardError

ALL_ATTACKS = list_attacks()
EXPECTED = {"autoattack", "bim", "cw", "dpgd", "fgsm", "kl_pgd", "pgd", "tpgd"}
PROBS_ATTACKS = {"kl_pgd"}  # take target probabilities instead of labels
EPS = 0.1


# ---------------------------------------------------------------------------------------------------------------
# tiny models
# ---------------------------------------------------------------------------------------------------------------


class TinyNet(nn.Module):
    """1x8x8 -> 10 classes, with BatchNorm and Dropout so a wrong mode would show; records modes in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 64, 10)
        self.seen_training: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        h = F.relu(self.bn(self.conv(x)))
        return self.fc(self.drop(h.flatten(1)))


def tiny_setup(n: int = 6, seed: int = 0) -> tuple[TinyNet, torch.Tensor, torch.Tensor]:
    """A random TinyNet, random inputs, and labels = its own clean predictions (so attacks have work to do)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyNet()
    x = torch.rand((n, 1, 8, 8), generator=gen)
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    model.seen_training.clear()
    return model, x, y


def params_for(name: str, **extra) -> dict:
    # AutoAttack at a large eps: APGD-CE breaks every point at once and the later stages are skipped (fast)
    base = {"eps": 0.3 if name == "autoattack" else EPS, "seed": 0}
    base.update(extra)
    return base


def target_for(name: str, y: torch.Tensor) -> torch.Tensor:
    """What attack ``name`` is called with: the labels, or for a KL attack probabilities that favour them."""
    if name not in PROBS_ATTACKS:
        return y
    return 0.05 + 0.5 * F.one_hot(y, 10).float()  # rows: 9 * 0.05 + 0.55 = 1


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


# ---------------------------------------------------------------------------------------------------------------
# registry and parameters
# ---------------------------------------------------------------------------------------------------------------


def test_registry_lists_every_attack():
    assert set(ALL_ATTACKS) == EXPECTED
    assert ALL_ATTACKS == sorted(ALL_ATTACKS)


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_config_is_json_and_round_trips(name):
    attack = create_attack(name, **params_for(name))
    cfg = attack.config()
    assert cfg["name"] == name == attack.name
    assert set(cfg) == {"name", *type(attack).param_names()}
    json.dumps(cfg)
    assert create_attack(**cfg).config() == cfg


@pytest.mark.parametrize(
    "name, params, fragment",
    [
        ("pgd", {"eps": 2}, "eps"),
        ("pgd", {"eps": -0.1}, "eps"),
        ("fgsm", {"eps": True}, "eps"),
        ("pgd", {"steps": 0}, "steps"),
        ("bim", {"steps": 0}, "steps"),
        ("dpgd", {"steps": 0}, "steps"),
        ("tpgd", {"steps": 0}, "steps"),
        ("cw", {"steps": 0}, "steps"),
        ("pgd", {"step_size": -1.0}, "step_size"),
        ("pgd", {"norm": "l3"}, "norm"),
        ("pgd", {"loss": "kl"}, "loss"),
        ("pgd", {"restarts": 0}, "restarts"),
        ("pgd", {"restarts": 3, "random_start": False}, "restarts"),
        ("cw", {"restarts": 3, "random_start": False}, "restarts"),
        ("bim", {"random_start": True}, "random_start"),
        ("dpgd", {"step_size": float("nan")}, "step_size"),
        ("tpgd", {"random_start": 1}, "random_start"),
        ("pgd", {"seed": -1}, "seed"),
        ("pgd", {"random_start": "yes"}, "random_start"),
        ("tpgd", {"target": "most_likely"}, "target"),
        ("dpgd", {"reduction": "mean"}, "reduction"),
        ("autoattack", {"version": "fast"}, "version"),
        ("autoattack", {"norm": "L1"}, "norm"),
        ("autoattack", {"eps": 2}, "eps"),
        ("pgd", {"stepz": 10}, "stepz"),
        ("fgsm", {"steps": 10}, "steps"),
    ],
)
def test_bad_params_raise_one_line_dard_error(name, params, fragment):
    with pytest.raises(DardError) as info:
        create_attack(name, **params)
    msg = str(info.value)
    assert "\n" not in msg
    assert fragment in msg


def test_unknown_param_names_valid_ones():
    with pytest.raises(DardError, match=r"attack 'pgd' has no parameter 'stepz'; valid: eps, step_size, steps"):
        create_attack("pgd", stepz=3)
    with pytest.raises(DardError, match=r"has no parameters 'a', 'b'; valid: eps, seed$"):
        create_attack("fgsm", a=1, b=2)


def test_unknown_attack_name():
    with pytest.raises(DardError) as info:
        create_attack("deepfool")
    assert "deepfool" in str(info.value) and "pgd" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "x, y, fragment",
    [
        (torch.full((2, 1, 8, 8), 1.5), torch.zeros(2, dtype=torch.long), "[0, 1]"),
        (torch.full((2, 1, 8, 8), -0.1), torch.zeros(2, dtype=torch.long), "[0, 1]"),
        (torch.zeros((2, 1, 8, 8), dtype=torch.uint8), torch.zeros(2, dtype=torch.long), "float"),
        (torch.rand(2, 1, 8, 8), torch.zeros(3, dtype=torch.long), "labels"),
        (torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.int32), "labels"),
    ],
)
def test_bad_inputs_raise_dard_error(x, y, fragment):
    model = TinyNet()
    with pytest.raises(DardError) as info:
        create_attack("pgd")(model, x, y)
    assert fragment in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# the contract, for every registered attack
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_output_in_box_and_ball_same_shape_dtype(name):
    model, x, y = tiny_setup()
    attack = create_attack(name, **params_for(name))
    x_adv = attack(model, x, target_for(name, y))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max().item() <= attack.eps + 1e-6
    assert not torch.equal(x_adv, x)  # it did something


@pytest.mark.parametrize("name", ALL_ATTACKS)
@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_model_in_eval_during_attack_and_mode_restored(name, mode):
    model, x, y = tiny_setup()
    model.train(mode != "eval")
    if mode == "mixed":  # e.g. frozen BatchNorm in a training model: per-module modes must come back
        model.bn.eval()
    before = {n: m.training for n, m in model.named_modules()}
    create_attack(name, **params_for(name))(model, x, target_for(name, y))
    assert model.seen_training and not any(model.seen_training)
    assert {n: m.training for n, m in model.named_modules()} == before


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_mode_restored_when_attack_raises(name, monkeypatch):
    model, x, y = tiny_setup()
    model.train()
    attack = create_attack(name, **params_for(name))

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(attack, "perturb", boom)
    with pytest.raises(RuntimeError, match="boom"):
        attack(model, x, target_for(name, y))
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_parameter_grads_untouched(name):
    model, x, y = tiny_setup()
    assert all(p.requires_grad for p in model.parameters())
    attack = create_attack(name, **params_for(name))
    attack(model, x, target_for(name, y))
    assert all(p.grad is None for p in model.parameters())
    # existing gradients (mid-training) stay exactly as they were
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    saved = [p.grad.clone() for p in model.parameters()]
    attack(model, x, target_for(name, y))
    assert all(torch.equal(p.grad, s) for p, s in zip(model.parameters(), saved))


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_deterministic_for_a_seed(name):
    model, x, y = tiny_setup()
    a = create_attack(name, **params_for(name, seed=123))
    b = create_attack(name, **params_for(name, seed=123))
    x1 = a(model, x, target_for(name, y))
    torch.rand(100)  # moving the global stream must not matter
    assert torch.equal(x1, a(model, x, target_for(name, y)))
    assert torch.equal(x1, b(model, x, target_for(name, y)))


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_global_rng_not_consumed(name):
    model, x, y = tiny_setup()
    attack = create_attack(name, **params_for(name, seed=7))
    torch.manual_seed(2024)
    state = torch.get_rng_state()
    attack(model, x, target_for(name, y))
    assert torch.equal(torch.get_rng_state(), state)
    expected = torch.Generator().manual_seed(2024)
    assert torch.equal(torch.rand(5), torch.rand(5, generator=expected))


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_eps_zero_changes_nothing(name):
    model, x, y = tiny_setup()
    clean = accuracy(model, x, y)
    x_adv = create_attack(name, **params_for(name, eps=0.0))(model, x, target_for(name, y))
    assert torch.equal(x_adv, x)
    assert accuracy(model, x_adv, y) == clean


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_batchnorm_running_stats_unchanged(name):
    model, x, y = tiny_setup()
    model.train()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    create_attack(name, **params_for(name))(model, x, target_for(name, y))
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_works_under_no_grad(name):
    model, x, y = tiny_setup()
    attack = create_attack(name, **params_for(name))
    with torch.no_grad():
        x_adv = attack(model, x, target_for(name, y))
    assert torch.equal(x_adv, create_attack(name, **params_for(name))(model, x, target_for(name, y)))


def test_unseeded_attack_follows_global_stream():
    model, x, y = tiny_setup()
    attack = create_attack("pgd", eps=EPS)
    torch.manual_seed(5)
    x1 = attack(model, x, y)
    torch.manual_seed(5)
    assert torch.equal(x1, attack(model, x, y))
    torch.manual_seed(6)
    assert not torch.equal(x1, attack(model, x, y))


def test_float64_inputs_keep_dtype():
    model, x, y = tiny_setup()
    model.double()
    x_adv = create_attack("pgd", eps=EPS, seed=0)(model, x.double(), y)
    assert x_adv.dtype == torch.float64
    assert (x_adv - x.double()).abs().max().item() <= EPS + 1e-12


def test_different_seeds_differ_for_random_start():
    model, x, y = tiny_setup()
    a = create_attack("pgd", eps=EPS, seed=1)(model, x, y)
    b = create_attack("pgd", eps=EPS, seed=2)(model, x, y)
    assert not torch.equal(a, b)


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
# AutoAttack wrapper specifics
# ---------------------------------------------------------------------------------------------------------------


class Probabilities(nn.Module):
    """A model that (wrongly) outputs probabilities: AutoAttack's self-check must flag it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).softmax(dim=1)


def test_autoattack_records_warnings_and_stages():
    model, x, y = tiny_setup()
    logger = logging.getLogger("auto-attack")
    level, handlers, trace = logger.level, list(logger.handlers), sys.gettrace()
    attack = create_attack("autoattack", eps=0.3, seed=0)
    x_adv = attack(Probabilities(model), x, y)
    assert any("probability distribution" in w for w in attack.last_warnings)
    assert attack.last_robust_by_attack is not None and attack.last_robust_by_attack["clean"] == 1.0
    assert attack.last_y_adv is not None and attack.last_y_adv.shape == y.shape
    assert (x_adv - x).abs().max().item() <= 0.3 + 1e-6
    assert (logger.level, logger.handlers, sys.gettrace()) == (level, handlers, trace)
    # a clean logits model raises no warning
    attack(model, x, y)
    assert attack.last_warnings == []


def test_autoattack_l2_respects_l2_ball():
    model, x, y = tiny_setup()
    attack = create_attack("autoattack", eps=1.0, norm="l2", seed=0)
    assert attack.config()["norm"] == "L2"
    x_adv = attack(model, x, y)
    assert perturbation_norms(x_adv, x, "l2").max().item() <= 1.0 + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_autoattack_worst_case_per_point_accuracy_matches_stages():
    model, x, y = tiny_setup(n=8)
    attack = create_attack("autoattack", eps=0.3, seed=0)
    x_adv = attack(model, x, y)
    stages = attack.last_robust_by_attack
    assert accuracy(model, x_adv, y) == pytest.approx(min(stages.values()))


# ---------------------------------------------------------------------------------------------------------------
# strength on a tiny trained classifier (sklearn digits, 8x8, 10 classes)
# ---------------------------------------------------------------------------------------------------------------


class DigitsNet(nn.Module):
    """A small MLP with BatchNorm: trains in well under a second, ~97% test accuracy."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def digits():
    """A DigitsNet trained for ~30 short epochs (~97% test accuracy) and 300 held-out test images."""
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x_all = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y_all = torch.tensor(data.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y_all), generator=gen)
    train, test = perm[:1400], perm[1400:1700]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches this small run faster on one thread, and far faster on a busy machine
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = DigitsNet()
            opt = torch.optim.Adam(model.parameters(), lr=1e-2)
            model.train()
            for _ in range(30):
                order = train[torch.randperm(len(train))]
                for i in range(0, len(order), 128):
                    idx = order[i : i + 128]
                    loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    for p in model.parameters():
        p.grad = None
    x, y = x_all[test], y_all[test]
    clean = accuracy(model, x, y)
    assert clean >= 0.9, f"digits model under-trained: {clean:.3f}"
    return model, x, y, clean


def test_pgd_at_least_as_strong_as_fgsm(digits):
    model, x, y, clean = digits
    fgsm = accuracy(model, create_attack("fgsm", eps=EPS)(model, x, y), y)
    pgd = accuracy(model, create_attack("pgd", eps=EPS, seed=0)(model, x, y), y)
    # BIM's default 10 x 2/255 cannot reach eps = 0.1; give it steps that can
    bim = accuracy(model, create_attack("bim", eps=EPS, step_size=EPS / 4)(model, x, y), y)
    assert pgd <= fgsm < clean
    assert bim <= fgsm


def test_pgd_large_eps_drives_accuracy_to_zero(digits):
    model, x, y, _ = digits
    x_adv = create_attack("pgd", eps=0.5, step_size=0.05, steps=20, seed=0)(model, x, y)
    assert accuracy(model, x_adv, y) < 0.05


def test_pgd_restarts_never_weaker(digits):
    model, x, y, _ = digits
    one = accuracy(model, create_attack("pgd", eps=0.05, steps=5, seed=0)(model, x, y), y)
    three = accuracy(model, create_attack("pgd", eps=0.05, steps=5, restarts=3, seed=0)(model, x, y), y)
    assert three <= one


def test_margin_loss_and_cw_lower_accuracy(digits):
    model, x, y, clean = digits
    cw = accuracy(model, create_attack("cw", eps=EPS, seed=0)(model, x, y), y)
    margin = accuracy(model, create_attack("pgd", eps=EPS, loss="margin", seed=0)(model, x, y), y)
    assert cw < clean - 0.3 and margin < clean - 0.3


@pytest.mark.parametrize("target", ["least_likely", "random"])
def test_tpgd_hits_its_target(digits, target):
    model, x, y, _ = digits
    attack = create_attack("tpgd", eps=0.5, step_size=0.05, steps=20, target=target, seed=0)
    x_adv = attack(model, x, y)
    with torch.no_grad():
        hit = (model(x_adv).argmax(1) == attack.last_targets).float().mean().item()
    assert hit > 0.5  # chance would be about 1/10


def test_l2_pgd_respects_l2_ball(digits):
    model, x, y, clean = digits
    attack = create_attack("pgd", eps=1.0, step_size=0.25, steps=10, norm="l2", seed=0)
    x_adv = attack(model, x, y)
    norms = perturbation_norms(x_adv, x, "l2")
    assert norms.max().item() <= 1.0 + 1e-6
    assert norms.max().item() > 0.9  # it uses the budget
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert accuracy(model, x_adv, y) < clean - 0.2


@pytest.mark.parametrize("reduction", ["set", "sample"])
def test_dpgd_lowers_accuracy(digits, reduction):
    model, x, y, clean = digits
    x_adv = create_attack("dpgd", eps=EPS, step_size=0.02, reduction=reduction)(model, x, y)
    assert accuracy(model, x_adv, y) < clean - 0.3


def test_attack_is_an_attack_subclass():
    assert all(isinstance(create_attack(n, **params_for(n)), Attack) for n in ALL_ATTACKS)
