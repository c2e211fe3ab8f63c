"""Attack steps follow eps: training and validation attacks take step_ratio * eps (0.25 by default) unless given an
absolute step_size; both are recorded; at 8/255 the step is bit-identical to the 2/255 runs were made with."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import tiny_config

from dard.attacks import create_attack
from dard.attacks.steps import resolve_step
from dard.config import parse_config
from dard.config.read import build_method
from dard.errors import DardError
from dard.evaluation.suite import attack_from_spec
from dard.experiment.reuse import check_reusable
from dard.methods import create_method

ATTACK_METHODS = ["adaad", "ard", "dard", "pgdard", "rslad", "sat", "trades"]


def test_eps_0_1_gives_a_training_attack_that_reaches_eps() -> None:
    for name in ("sat", "trades", "dard"):
        method = build_method(parse_config(tiny_config(eps=0.1, method={"name": name, "params": {}})))
        attack = method.attack
        assert attack.eps == 0.1 and attack.step_size == 0.025
        assert attack.steps * attack.step_size >= attack.eps
        recorded = method.config()["attack"]
        assert (recorded["step_ratio"], recorded["step_size"], recorded["eps"]) == (0.25, 0.025, 0.1)


def test_at_8_255_every_default_step_is_bit_identical_to_2_255() -> None:
    assert 0.25 * (8 / 255) == 2 / 255  # a power-of-two scaling is exact in binary floating point
    for name in ATTACK_METHODS:
        attack = create_method(name).attack
        assert attack.eps == 8 / 255 and attack.step_size == 2 / 255, name
    val = attack_from_spec({"name": "pgd", "steps": 10, "step_ratio": 0.25}, 8 / 255, 0)
    assert val.step_size == 2 / 255


def test_an_absolute_step_overrides_the_ratio_and_is_recorded_as_such() -> None:
    method = create_method("sat", attack={"step_size": 0.01, "eps": 0.1})
    cfg = method.config()
    assert method.attack.step_size == 0.01 and cfg["attack"]["step_ratio"] is None
    params = {k: v for k, v in cfg.items() if k != "name"}
    assert create_method("sat", **params).config() == cfg  # the record rebuilds the method
    ratio = create_method("sat", attack={"step_ratio": 0.5, "eps": 0.1})
    assert ratio.attack.step_size == 0.05 and ratio.config()["attack"]["step_ratio"] == 0.5
    # another attack named without a step gets the default ratio too
    assert create_method("dard", attack={"name": "pgd", "eps": 0.2}).attack.step_size == 0.05


@pytest.mark.parametrize(
    "attack, needle",
    [
        ({"step_size": 0.01, "step_ratio": 0.25}, "give step_size or step_ratio, not both"),
        ({"name": "fgsm", "step_ratio": 0.5}, "no step size, so step_ratio does not apply"),
        ({"step_ratio": -1}, "step_ratio must be a positive number"),
        ({"step_ratio": "big"}, "step_ratio must be a positive number"),
    ],
)
def test_inconsistent_step_specs_are_one_line_errors(attack, needle) -> None:
    with pytest.raises(DardError, match=needle) as exc:
        create_method("dard", attack=attack)
    assert str(exc.value).startswith("method 'dard': attack: ") and "\n" not in str(exc.value)


def test_attack_budgets_may_be_fractions_as_the_runs_eps() -> None:
    # `eps: 8/255` is the run's eps; in a method's or the validation's attack it was "eps must be a number"
    method = build_method(parse_config(tiny_config(method={"name": "sat", "params": {"attack": {"eps": "16/255"}}})))
    assert method.attack.eps == 16 / 255 and method.attack.step_size == 4 / 255
    absolute = create_method("dard", attack={"eps": "8/255", "step_size": " 1/255"}).attack
    assert (absolute.eps, absolute.step_size) == (8 / 255, 1 / 255)
    assert attack_from_spec({"name": "pgd", "step_size": "2/255"}, 0.1, 0).step_size == 2 / 255
    for bad in ("8/0", "8//255", "eight/255"):  # still the attack's own one-line error
        with pytest.raises(DardError, match="eps must be a number"):
            create_method("sat", attack={"eps": bad})


def test_validation_and_evaluation_attacks_follow_eps() -> None:
    assert attack_from_spec({"name": "pgd", "steps": 10}, 0.1, 0).step_size == 0.025  # default ratio
    assert attack_from_spec({"name": "pgd", "step_ratio": 0.1}, 0.5, 0).step_size == 0.05
    assert attack_from_spec({"name": "pgd", "step_size": 0.003}, 0.1, 0).step_size == 0.003
    assert "step_size" not in attack_from_spec({"name": "fgsm"}, 0.1, 0).config()


def test_a_recorded_attack_config_rebuilds_the_attack() -> None:
    recorded = create_method("dard", attack={"eps": 0.1}).config()["attack"]
    params, ratio = resolve_step(recorded)
    assert ratio == 0.25 and "step_ratio" not in params
    assert create_attack(**params).config() == {k: v for k, v in recorded.items() if k != "step_ratio"}


def test_a_run_folder_made_before_step_ratios_is_still_reusable(tmp_path: Path) -> None:
    """check_reusable compares recorded configs: a config.yaml written by an older dard (its method's attack given as
    steps only, no step keys at all) matches the same request today."""
    run = tmp_path / "sat-s0"
    run.mkdir()
    (run / "config.yaml").write_text(
        "name: sat-s0\nseed: 0\neps: 0.03137254901960784\ndata: {name: cifar10, val_size: 300}\n"
        "method: {name: sat, params: {attack: {steps: 5}}}\n"
        "val: {attack: {name: pgd, steps: 10, step_ratio: 0.25}}\n"
    )
    request = {
        "name": "sat-s0",
        "seed": 0,
        "eps": "8/255",
        "device": "cpu",
        "data": {"name": "cifar10", "val_size": 300, "dir": "/somewhere"},
        "method": {"name": "sat", "params": {"attack": {"steps": 5}}},
    }
    check_reusable(run, parse_config(request))  # no error
    with pytest.raises(DardError, match="method.params.attack.step_ratio"):
        check_reusable(
            run,
            parse_config({**request, "method": {"name": "sat", "params": {"attack": {"steps": 5, "step_ratio": 0.5}}}}),
        )
