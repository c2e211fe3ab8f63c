"""AutoAttack's parts as attacks (apgd-ce, apgd-dlr, apgd-t, fab-t, square) and AutoAttack's custom version.

The shared contract (eval mode, input-only gradients, [0, 1], Linf ball, seeded determinism) runs over every
registered attack in tests/test_attacks.py; here: the L2 threat model, strength, the official equivalence with
AutoAttack's stages, the custom cascade, and the suite / `dard eval --attacks` names.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dard.attacks import create_attack, list_attacks, perturbation_norms
from dard.errors import DardError
from dard.evaluation.suite import build_suite, evaluate
from dard.models import create_model

PARTS = ["apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square"]
FAST = {"apgd-ce": {}, "apgd-dlr": {}, "apgd-t": {"target_classes": 3}, "fab-t": {"target_classes": 3}}
FAST = {**{k: {"steps": 10, **v} for k, v in FAST.items()}, "square": {"queries": 200}}


def _setup(n: int = 8) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A random two-layer classifier on 3x8x8 images (Square L2 needs more than 4x4), inputs centred inside, and
    the labels it predicts (every point correct clean)."""
    torch.manual_seed(0)
    model = create_model(nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, 10)), mean=[0.5])
    model.eval()
    x = torch.rand(n, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_parts_are_registered() -> None:
    assert set(PARTS) <= set(list_attacks())


@pytest.mark.parametrize("name", PARTS)
@pytest.mark.parametrize("norm, eps", [("Linf", 0.1), ("L2", 0.5)])
def test_part_respects_eps_and_norm_and_breaks_points(name: str, norm: str, eps: float) -> None:
    model, x, y = _setup()
    attack = create_attack(name, eps=eps, norm=norm, seed=0, **FAST[name])
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and 0.0 <= x_adv.min() and x_adv.max() <= 1.0
    assert perturbation_norms(x_adv, x, norm.lower()).max() <= eps * (1 + 1e-5)
    assert _accuracy(model, x_adv, y) < 1.0  # a random net at this budget: some points fall
    assert attack.last_stage_correct is not None and set(attack.last_stage_correct) == {name}
    again = create_attack(name, eps=eps, norm=norm, seed=0, **FAST[name])(model, x, y)
    assert torch.equal(x_adv, again)  # the seed fixes the official code's randomness


def test_part_config_names_its_own_parameters() -> None:
    cfg = create_attack("apgd-t", eps=0.1, seed=3).config()
    assert cfg == {
        "name": "apgd-t",
        "eps": 0.1,
        "norm": "Linf",
        "steps": 100,
        "restarts": 1,
        "target_classes": 9,
        "eot_iter": 1,
        "batch_size": 250,
        "seed": 3,
    }
    assert create_attack(**cfg).config() == cfg
    with pytest.raises(DardError, match="apgd-ce: steps must be >= 1"):
        create_attack("apgd-ce", steps=0)
    with pytest.raises(DardError, match="square: p_init must be in"):
        create_attack("square", p_init=0.0)


def test_apgd_ce_is_autoattacks_first_stage() -> None:
    # the part's defaults are the standard version's: the same points fall to it as to the cascade's first stage
    model, x, y = _setup(16)
    part = create_attack("apgd-ce", eps=0.03, seed=5)
    x_part = part(model, x, y)
    full = create_attack("autoattack", eps=0.03, seed=5, version="custom", attacks=["apgd-ce"])
    assert torch.equal(full(model, x, y), x_part)
    assert full.last_stage_correct == part.last_stage_correct


def test_custom_version_runs_the_chosen_list() -> None:
    model, x, y = _setup()
    # a large eps: APGD-CE breaks every point, so the (slow) 5000-query Square stage is skipped
    attack = create_attack("autoattack", eps=0.3, seed=0, version="custom", attacks="apgd-ce,square")
    assert attack.attacks == ["apgd-ce", "square"]
    x_adv = attack(model, x, y)
    assert set(attack.last_stage_correct) == {"apgd-ce", "square"}
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and attack.last_stage_correct == {"apgd-ce": 0, "square": 0}
    with pytest.raises(DardError, match="needs attacks"):
        create_attack("autoattack", version="custom")
    with pytest.raises(DardError, match="attacks must be one of"):
        create_attack("autoattack", version="custom", attacks=["pgd"])
    with pytest.raises(DardError, match="only for version 'custom'"):
        create_attack("autoattack", attacks=["apgd-ce"])


def test_eot_for_randomised_models_averages_gradients() -> None:
    # a model with noise inside: eot_iter > 1 is accepted and the result stays in the ball and deterministic
    model, x, y = _setup()

    class Noisy(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return model(z + 0.01 * torch.randn_like(z))

    attack = create_attack("apgd-ce", eps=0.05, steps=5, eot_iter=4, seed=1)
    x_adv = attack(Noisy(), x, y)
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6
    assert torch.equal(x_adv, create_attack("apgd-ce", eps=0.05, steps=5, eot_iter=4, seed=1)(Noisy(), x, y))


def test_parts_in_the_suite() -> None:
    model, x, y = _setup()
    suite = build_suite(["apgd-ce", "square"], eps=0.1, seed=0, overrides={"apgd-ce": {"steps": 10}})
    assert suite["apgd-ce"].eps == 0.1 and suite["apgd-ce"].steps == 10
    suite["square"].queries = 100
    record = evaluate(model, x, y, suite, progress=False)
    assert set(record.attacks) == {"apgd-ce", "square"}
    assert record.attacks["apgd-ce"].accuracy < 1.0
