"""Tests of the training methods (dard.methods): registry and parameters, every method with its real attack on a
tiny conv net, and every method learning a learnable toy task. Loss values by hand: tests/test_method_losses.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from tests.test_method_losses import TEACHER_METHODS, close, stub_attacks  # noqa: F401 (a fixture, used by name)

from dard.attacks import create_attack
from dard.errors import DardError
from dard.methods import create_method, list_methods, method_params
from dard.module_utils import eval_mode

ALL_METHODS = ["adaad", "ard", "dard", "natural", "pgdard", "rslad", "sat", "trades"]


# ------------------------------------------------------------------------------------------ registry / params


def test_list_methods():
    assert list_methods() == ALL_METHODS


@pytest.mark.usefixtures("stub_attacks")
def test_unknown_method_and_param():
    with pytest.raises(DardError, match="unknown method 'nope'"):
        create_method("nope")
    with pytest.raises(DardError) as exc:
        create_method("dard", lamda=0.5)
    msg = str(exc.value)
    assert "lamda" in msg and "valid" in msg and "lam" in msg and "\n" not in msg
    with pytest.raises(DardError, match="natural' has no parameter 'alpha'"):
        create_method("natural", alpha=0.1)


@pytest.mark.parametrize(
    "name,params,needle",
    [
        ("dard", {"lam": 1.5}, "lam"),
        ("dard", {"lam": -0.1}, "lam"),
        ("dard", {"alpha": 2}, "alpha"),
        ("dard", {"tau": 0}, "tau"),
        ("dard", {"tau": -1.0}, "tau"),
        ("dard", {"tau": "1"}, "tau"),
        ("dard", {"alpha": float("nan")}, "alpha"),
        ("dard", {"attack_target": "both"}, "attack_target"),
        ("dard", {"clean_branch": "yes"}, "clean_branch"),
        ("dard", {"attack": "dpgd"}, "attack"),
        ("pgdard", {"lam": True}, "lam"),
        ("ard", {"alpha": 1.1}, "alpha"),
        ("ard", {"tau": 0.0}, "tau"),
        # tau^2 overflowed a Python float at the first training step (internal error); 1e-40 made the loss NaN
        ("ard", {"tau": 1e200}, "tau must be in [0.01, 1000], got 1e+200"),
        ("dard", {"tau": 1e200}, "tau must be in [0.01, 1000]"),
        ("pgdard", {"tau": 1e-40}, "tau must be in [0.01, 1000]"),
        ("rslad", {"adv_weight": 1.5}, "adv_weight"),
        ("trades", {"beta": -1}, "beta"),
        # the loss was inf at the first step (said after the data had loaded); 1e-300 trained nothing, in silence
        ("trades", {"beta": 1e300}, "beta must be in [0, 1000], got 1e+300"),
        ("rslad", {"kl_scale": 1e300}, "kl_scale must be in [0.001, 1000], got 1e+300"),
        ("rslad", {"kl_scale": 1e-300}, "kl_scale must be in [0.001, 1000]"),
        ("trades", {"attack": {"name": "pgd"}}, "takes labels"),  # its attack must take probabilities
        ("sat", {"attack": {"name": "kl_pgd"}}, "takes target probabilities, but this method attacks with labels"),
        ("sat", {"attack": ["pgd"]}, "attack"),
    ],
)
@pytest.mark.usefixtures("stub_attacks")
def test_bad_values_raise_dard_error(name, params, needle):
    with pytest.raises(DardError) as exc:
        create_method(name, **params)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg and msg.startswith(f"method '{name}': "), msg


@pytest.mark.usefixtures("stub_attacks")
def test_defaults_and_config_roundtrip():
    m = create_method("dard")
    cfg = m.config()
    assert cfg["name"] == "dard"
    assert (cfg["lam"], cfg["alpha"], cfg["tau"], cfg["attack_target"], cfg["clean_branch"]) == (
        0.5,
        0.3,
        1.0,
        "student",
        False,
    )
    # the step is a ratio of eps, recorded with the absolute step it resolves to (bit-identical to 2/255 at 8/255)
    assert cfg["attack"] == {"name": "dpgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 10, "step_ratio": 0.25}
    assert create_method("pgdard").config()["attack"] == {
        "name": "pgd",
        "eps": 8 / 255,
        "step_size": 2 / 255,
        "steps": 10,
        "random_start": True,
        "step_ratio": 0.25,
    }
    ard = create_method("ard").config()
    assert (ard["alpha"], ard["tau"]) == (1.0, 30.0)
    assert close(create_method("rslad").config()["adv_weight"], 5 / 6)
    assert create_method("trades").config()["beta"] == 6.0
    assert create_method("trades").config()["attack"] == {
        "name": "kl_pgd",
        "eps": 8 / 255,
        "step_size": 2 / 255,
        "steps": 10,
        "step_ratio": 0.25,
    }
    for name in ALL_METHODS:
        cfg = create_method(name).config()
        params = {k: v for k, v in cfg.items() if k != "name"}
        assert set(params) == set(method_params(name))
        assert create_method(name, **params).config() == cfg
    # partial attack overrides keep the other defaults
    spec = create_method("dard", attack={"steps": 3}).config()["attack"]
    assert spec == {"name": "dpgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 3, "step_ratio": 0.25}


@pytest.mark.usefixtures("stub_attacks")
def test_needs_teacher_flags():
    for name in ALL_METHODS:
        assert create_method(name).needs_teacher == (name in TEACHER_METHODS)


# ------------------------------------------------------------------------------- integration (real attacks)


class TinyConv(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.mean(dim=(2, 3)))


def conv_models(seed: int = 0):
    torch.manual_seed(seed)
    student = TinyConv().train()
    teacher = TinyConv().eval()
    for p in teacher.parameters():
        p.requires_grad_(True)  # even a trainable teacher must get no gradient
    x = torch.rand(6, 3, 8, 8)
    y = torch.randint(0, 10, (6,))
    return student, teacher, x, y


def test_configured_attacks_are_used():
    dpgd_type = type(create_attack("dpgd"))
    pgd_type = type(create_attack("pgd"))
    fgsm_type = type(create_attack("fgsm"))
    m = create_method("dard")
    assert type(m.attack) is dpgd_type
    cfg = m.attack.config()
    assert cfg["steps"] == 10 and close(cfg["eps"], 8 / 255) and close(cfg["step_size"], 2 / 255)
    assert cfg.get("seed") is None  # training attacks draw from the global (loop-seeded) RNG
    assert create_method("dard", attack={"steps": 4}).attack.config()["steps"] == 4
    m = create_method("pgdard")
    assert type(m.attack) is pgd_type
    assert m.attack.config()["random_start"] is True and m.attack.config()["steps"] == 10
    assert type(create_method("dard", attack={"name": "fgsm"}).attack) is fgsm_type
    assert type(create_method("sat").attack) is pgd_type
    assert create_method("sat").attack.config()["random_start"] is True
    assert type(create_method("ard").attack) is pgd_type
    # the method's config records the attack's full config
    assert create_method("dard").config()["attack"] == {**create_method("dard").attack.config(), "step_ratio": 0.25}


def test_bad_attack_params_raise_dard_error():
    with pytest.raises(DardError, match="stepz"):
        create_method("dard", attack={"stepz": 3})
    with pytest.raises(DardError, match="nope"):
        create_method("sat", attack={"name": "nope"})
    with pytest.raises(DardError, match="eps"):
        create_method("pgdard", attack={"eps": -1.0})
    for name, attack, needle in [
        ("rslad", {"stepz": 3}, "stepz"),
        ("trades", {"init": "gauss"}, "init"),
        ("trades", {"steps": 2.5}, "steps"),
        ("trades", {"norm": "l1"}, "norm"),
    ]:
        with pytest.raises(DardError, match=needle) as exc:
            create_method(name, attack=attack)
        assert str(exc.value).startswith(f"method '{name}': attack: ") and "\n" not in str(exc.value)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_one_backward_on_conv(name):
    student, teacher, x, y = conv_models()
    method = create_method(name)
    out = method(student, teacher if method.needs_teacher else None, x, y)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (6, 10)
    out.loss.backward()
    grads = [p.grad for p in student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters())
    assert student.training and all(m.training for m in student.modules())
    assert not any(m.training for m in teacher.modules())
    # the training accuracy's logits are on the input the method says (the epoch line names it)
    with torch.no_grad():
        again = student(out.x_adv if method.logits_input == "x_adv" else x)
    assert torch.allclose(out.logits, again, atol=1e-5)
    if name == "natural":
        assert out.x_adv is None
    else:
        assert out.x_adv.shape == x.shape
        assert (out.x_adv - x).abs().max().item() <= 8 / 255 + 1e-6
        assert out.x_adv.min() >= 0 and out.x_adv.max() <= 1
        assert (out.x_adv - x).abs().max().item() > 0
        # the attack ran with the student in eval mode, the loss forward(s) in train mode
        if name in ("dard", "pgdard", "sat", "ard", "rslad", "trades"):
            assert False in student.modes and student.modes[-1] is True


def test_x_adv_within_configured_eps():
    student, teacher, x, y = conv_models(1)
    for name, attack in [("dard", {"eps": 2 / 255}), ("pgdard", {"eps": 2 / 255}), ("trades", {"eps": 2 / 255})]:
        out = create_method(name, attack=attack)(student, teacher, x, y)
        assert (out.x_adv - x).abs().max().item() <= 2 / 255 + 1e-6
    out = create_method("dard", attack={"name": "fgsm", "eps": 4 / 255})(student, teacher, x, y)
    assert (out.x_adv - x).abs().max().item() <= 4 / 255 + 1e-6


def test_dard_real_attack_against_teacher_and_clean_branch():
    student, teacher, x, y = conv_models(2)
    out = create_method("dard", attack_target="teacher", clean_branch=True)(student, teacher, x, y)
    out.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.modes == [True, True]  # attack ran on the teacher; two student forwards in train mode
    assert torch.isfinite(out.loss)


def test_training_attack_uses_global_rng():
    student, teacher, x, y = conv_models(3)
    method = create_method("pgdard")
    # fresh copies: each call updates the student's BatchNorm running statistics, which the attack uses
    torch.manual_seed(5)
    a = method(copy.deepcopy(student), teacher, x, y).x_adv
    torch.manual_seed(5)
    b = method(copy.deepcopy(student), teacher, x, y).x_adv
    c = method(copy.deepcopy(student), teacher, x, y).x_adv
    assert torch.equal(a, b) and not torch.equal(b, c)


# ------------------------------------------------------------------------------------- every method learns


def quadrant_batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """4x4 grey images whose class (0..3) is the bright 2x2 quadrant (+0.6 over a noisy 0.1..0.3 background)."""
    y = torch.randint(0, 4, (n,), generator=gen)
    x = 0.2 + 0.2 * (torch.rand((n, 1, 4, 4), generator=gen) - 0.5)
    for c, (row, col) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):
        x[y == c, :, row : row + 2, col : col + 2] += 0.6
    return x.clamp(0, 1), y


class QuadrantTeacher(nn.Module):
    """The exact rule as a teacher: logits = 20 * (quadrant mean - 0.5), in the order of quadrant_batch's classes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * (nn.functional.avg_pool2d(x, 2).flatten(1) - 0.5)


# The authors' loss scales divide the per-sample KL by the classes (ARD, AdaAD: 'mean') or by 10 (RSLAD), which at
# one learning rate is a 4x / 10x smaller step; at the per-sample scale every method trains with the same step.
PER_SAMPLE_SCALE = {
    "adaad": {"kl_reduction": "batchmean"},
    "ard": {"kl_reduction": "batchmean"},
    "rslad": {"kl_scale": 1.0},
}


@pytest.mark.parametrize("name", list_methods())
def test_every_method_learns_a_learnable_task(name):
    """30 SGD steps with the method's loss (per-sample KL) and default attack: the loss halves, accuracy >= 0.9."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    teacher = QuadrantTeacher().eval()
    method = create_method(name, **PER_SAMPLE_SCALE.get(name, {}))
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    x_test, y_test = quadrant_batch(512, torch.Generator().manual_seed(1))

    def accuracy() -> float:
        with torch.no_grad(), eval_mode(student):
            return (student(x_test).argmax(dim=1) == y_test).float().mean().item()

    before = accuracy()
    losses = []
    for _ in range(30):
        x, y = quadrant_batch(32, gen)
        out = method(student, teacher if method.needs_teacher else None, x, y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (name, first, last)
    assert before < 0.5 and accuracy() >= 0.9, (name, before, accuracy())
