"""Tests for dard.attacks: the registry and parameters, presets, and the shared contract over every registered attack.
The update rules and losses by hand: tests/test_attack_rules.py; strength and AutoAttack: tests/test_attack_strength.py.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dard.attacks import (
    PGD,
    Attack,
    create_attack,
    list_attacks,
    preset,
)
from dard.errors import DardError
from dard.registry import Registry

ALL_ATTACKS = list_attacks()
# The contract over every attack; AutoAttack's case runs in the slow tier: it chains APGD-CE, APGD-T, FAB-T and
# Square, which the unit tier checks one by one, and costs about a third of that tier on its own.
CONTRACT_ATTACKS = [pytest.param(n, marks=pytest.mark.slow) if n == "autoattack" else n for n in ALL_ATTACKS]
EXPECTED = {"autoattack", "bim", "cw", "dpgd", "fgsm", "kl_pgd", "pgd", "tpgd", "trades_pgd"}
EXPECTED |= {"apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square"}  # AutoAttack's parts
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


# AutoAttack's parts with few iterations / queries: the contract, not the strength, is under test here
AUTOATTACK_PARTS_FAST = {
    "apgd-ce": {"steps": 5},
    "apgd-dlr": {"steps": 5},
    "apgd-t": {"steps": 5, "target_classes": 2},
    "fab-t": {"steps": 5, "target_classes": 2},
    "square": {"queries": 20},
}


def params_for(name: str, **extra) -> dict:
    # AutoAttack at a large eps: APGD-CE breaks every point at once and the later stages are skipped (fast)
    base = {"eps": 0.3 if name == "autoattack" else EPS, "seed": 0}
    base.update(AUTOATTACK_PARTS_FAST.get(name, {}))
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


@pytest.mark.parametrize("name", CONTRACT_ATTACKS)
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
        ("pgd", {"eps": 1e-300}, "eps must be 0 or in [1e-06, 1], got 1e-300"),  # 0 in float32: no attack
        ("kl_pgd", {"step_size": 1e-9}, "step_size must be 0 or in [1e-06, 1], got 1e-09"),
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
        ("dpgd", {"smooth": 1e300}, "smooth must be in [0, 1e+06], got 1e+300"),  # inf in float32: never moved
        ("autoattack", {"version": "fast"}, "version"),
        ("autoattack", {"norm": "L1"}, "norm"),
        ("autoattack", {"eps": 2}, "eps"),
        ("pgd", {"stepz": 10}, "stepz"),
        ("fgsm", {"steps": 10}, "steps"),
        ("cw", {"loss": "ce"}, "loss"),  # fixed by the preset
        ("bim", {"restarts": 2}, "restarts"),
        ("kl_pgd", {"steps": -1}, "steps"),
        ("kl_pgd", {"init": "gauss"}, "init"),
        ("kl_pgd", {"norm": "l1"}, "norm"),
        ("kl_pgd", {"eps": 1.5}, "eps"),
        # iteration counts are bounded: `steps: 100000000000` in a method's attack started a run that never ended
        ("pgd", {"steps": 10**11}, "steps must be <= 100,000"),
        ("pgd", {"restarts": 10**6}, "restarts must be <= 100,000"),
        ("dpgd", {"steps": 10**6}, "steps must be <= 100,000"),
        ("kl_pgd", {"steps": 10**6}, "steps must be <= 100,000"),
        ("apgd-ce", {"steps": 10**6}, "steps must be <= 100,000"),
        ("apgd-ce", {"eot_iter": 10**6}, "eot_iter must be <= 100,000"),
        ("square", {"queries": 10**6}, "queries must be <= 100,000"),
        # a step of 0 never moves (a training against it is natural training); one of 2 is 2/255 in pixel levels
        ("pgd", {"step_size": 0.0}, "step_size must be above 0 when eps is"),
        ("dpgd", {"step_size": 0}, "step_size must be above 0 when eps is"),
        ("kl_pgd", {"step_size": 0.0}, "step_size must be above 0 when eps is"),
        ("pgd", {"step_size": 2}, "step_size must be in [0, 1], got 2"),
        ("kl_pgd", {"step_size": 2.0}, "step_size must be in [0, 1], got 2"),
    ],
)
def test_bad_params_raise_one_line_dard_error(name, params, fragment):
    with pytest.raises(DardError) as info:
        create_attack(name, **params)
    msg = str(info.value)
    assert "\n" not in msg
    assert fragment in msg


def test_unknown_param_names_valid_ones():
    # a typo gets the nearest names first (Registry.create; method parameters and model names likewise)
    near = r"attack 'pgd' has no parameter 'stepz' \(did you mean 'steps' or 'step_size'\?\); valid: eps, step_size"
    with pytest.raises(DardError, match=near):
        create_attack("pgd", stepz=3)
    with pytest.raises(DardError, match=r"unknown attack 'pgdd' \(did you mean 'pgd' or 'tpgd'\?\); valid: apgd-ce"):
        create_attack("pgdd")
    with pytest.raises(DardError, match=r"has no parameters 'a', 'b'; valid: eps, norm, seed$"):
        create_attack("fgsm", a=1, b=2)


def test_registry_create_checks_names_of_any_factory():
    reg = Registry("thing")
    reg.register("f")(lambda a, *, b=1: (a, b))
    reg.register("g")(lambda **kw: kw)
    assert reg.params("f") == ["a", "b"] and reg.create("f", a=2) == (2, 1)
    with pytest.raises(DardError, match=r"^thing 'f' needs parameter 'a'$"):
        reg.create("f", b=2)
    with pytest.raises(DardError, match=r"^thing 'f' has no parameter 'c'; valid: a, b$"):
        reg.create("f", a=1, c=3)
    assert reg.create("g", anything=1) == {"anything": 1}  # **kwargs: the factory decides


@pytest.mark.parametrize(
    "preset_name, base_params",
    [
        ("cw", {"loss": "margin", "restarts": 2}),
        ("bim", {"steps": 10, "random_start": False}),
        ("fgsm", {"steps": 1, "step_size": EPS, "random_start": False}),
    ],
)
def test_presets_are_pgd_with_fixed_parameters(preset_name, base_params):
    model, x, y = tiny_setup()
    own = {"restarts": 2} if preset_name == "cw" else {}
    preset_attack = create_attack(preset_name, eps=EPS, seed=4, **own)
    assert isinstance(preset_attack, PGD) and preset_attack.name == preset_name
    pgd = create_attack("pgd", eps=EPS, seed=4, **base_params)
    assert torch.equal(preset_attack(model, x, y), pgd(model, x, y))
    # the fixed parameters are neither accepted nor recorded; the norm is fixed for cw alone (CW-inf)
    assert "loss" not in preset_attack.config()
    assert ("norm" in preset_attack.config()) == (preset_name != "cw")


def test_preset_signature_and_defaults():
    cw = create_attack("cw")
    assert cw.config() == {
        "name": "cw",
        "eps": 8 / 255,
        "step_size": 2 / 255,
        "steps": 20,
        "random_start": True,
        "restarts": 1,
        "seed": None,
    }
    assert (cw.loss, cw.norm) == ("margin", "linf") and repr(cw).startswith("CW(eps=")
    bim = {"name": "bim", "eps": 8 / 255, "step_size": 2 / 255, "steps": 10, "norm": "linf", "seed": None}
    assert create_attack("bim").config() == bim
    with pytest.raises(TypeError):
        type(cw)(loss="ce")  # direct construction refuses a fixed parameter like any unknown keyword
    with pytest.raises(ValueError, match="no parameter"):
        preset(PGD, "x", "doc", fixed={"nope": 1})


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


@pytest.mark.parametrize("name", CONTRACT_ATTACKS)
def test_output_in_box_and_ball_same_shape_dtype(name):
    model, x, y = tiny_setup()
    attack = create_attack(name, **params_for(name))
    x_adv = attack(model, x, target_for(name, y))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max().item() <= attack.eps + 1e-6
    assert not torch.equal(x_adv, x)  # it did something


@pytest.mark.parametrize("name", CONTRACT_ATTACKS)
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


@pytest.mark.parametrize("name", CONTRACT_ATTACKS)
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


@pytest.mark.parametrize("name", CONTRACT_ATTACKS)
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


@pytest.mark.parametrize("name", CONTRACT_ATTACKS)
def test_deterministic_for_a_seed(name):
    model, x, y = tiny_setup()
    a = create_attack(name, **params_for(name, seed=123))
    b = create_attack(name, **params_for(name, seed=123))
    x1 = a(model, x, target_for(name, y))
    torch.rand(100)  # moving the global stream must not matter
    assert torch.equal(x1, a(model, x, target_for(name, y)))
    assert torch.equal(x1, b(model, x, target_for(name, y)))


@pytest.mark.parametrize("name", CONTRACT_ATTACKS)
def test_global_rng_not_consumed(name):
    model, x, y = tiny_setup()
    attack = create_attack(name, **params_for(name, seed=7))
    torch.manual_seed(2024)
    state = torch.get_rng_state()
    attack(model, x, target_for(name, y))
    assert torch.equal(torch.get_rng_state(), state)
    expected = torch.Generator().manual_seed(2024)
    assert torch.equal(torch.rand(5), torch.rand(5, generator=expected))


@pytest.mark.parametrize("name", CONTRACT_ATTACKS)
def test_eps_zero_changes_nothing(name):
    model, x, y = tiny_setup()
    clean = accuracy(model, x, y)
    x_adv = create_attack(name, **params_for(name, eps=0.0))(model, x, target_for(name, y))
    assert torch.equal(x_adv, x)
    assert accuracy(model, x_adv, y) == clean


@pytest.mark.parametrize("name", CONTRACT_ATTACKS)
def test_batchnorm_running_stats_unchanged(name):
    model, x, y = tiny_setup()
    model.train()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    create_attack(name, **params_for(name))(model, x, target_for(name, y))
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())


@pytest.mark.parametrize("name", CONTRACT_ATTACKS)
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


def test_attack_is_an_attack_subclass():
    assert all(isinstance(create_attack(n, **params_for(n)), Attack) for n in ALL_ATTACKS)
