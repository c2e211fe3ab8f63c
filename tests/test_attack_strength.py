"""Attack strength on a small trained digits classifier, and the AutoAttack wrapper's specifics."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
import torch.nn.functional as F
from tests.test_attacks import EPS, accuracy, tiny_setup
from torch import nn

from dard.attacks import create_attack, perturbation_norms

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


@pytest.mark.slow
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


@pytest.mark.slow
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
    from dard.data.digits import read_digits  # load_digits()'s arrays, without importing scikit-learn (~2 s)

    images, target = read_digits()
    x_all = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    y_all = torch.tensor(target, dtype=torch.long)
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
