"""Every method and attack states what it costs (Method.passes, Attack.passes): a new one that does not is a
failure here, not a silent guess in the cost model. The numbers equal those of the by-name rules they replaced, so
estimates and budgets are unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from dard.attacks import ATTACKS, Attack, AutoAttackWrapper
from dard.evaluation.labels import AUTOATTACK_SUBSET_SUITE, DEFAULT_SUITE, QUICK_SUITE
from dard.methods import METHODS, Method, create_method
from dard.methods.base import StepPasses
from dard.training.cost import attack_passes, train_passes


def _old_train_passes(method: Mapping[str, Any]) -> tuple[float, float]:
    """The by-name switch the methods' own passes() replaced (copied as it was)."""
    k = 2.0 * int((method.get("attack") or {}).get("steps", 0))
    name = method.get("name")
    if name == "natural":
        return 3.0, 0.0
    if name == "sat":
        return k + 3, 0.0
    if name in ("dard", "pgdard"):
        return k + 3 + (3 if method.get("clean_branch") else 0), 2.0
    if name == "adaad":
        return k + 6, k + 2
    return k + 7, 1.0


def _old_attack_passes(spec: Mapping[str, Any]) -> float:
    """The by-name rule the attacks' own passes() replaced (copied as it was)."""
    name = spec.get("name")
    if name == "autoattack":
        return 4500.0
    steps = 1 if name == "fgsm" else int(spec.get("steps", 10))
    return 2.0 * steps * int(spec.get("restarts", 1)) + 1.0


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_states_its_cost(name):
    cls = METHODS.get(name)
    assert cls.passes.__func__ is not Method.passes.__func__, f"method {name} does not override Method.passes"
    passes = cls.passes(create_method(name).config())
    assert isinstance(passes, StepPasses) and passes.student > 0 and passes.teacher >= 0
    assert (passes.teacher > 0) == bool(cls.needs_teacher)


def test_the_base_method_and_attack_refuse_to_guess():
    with pytest.raises(NotImplementedError):
        Method.passes({"name": "x"})
    with pytest.raises(NotImplementedError):
        Attack.passes({})


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_states_its_cost(name):
    cls = ATTACKS.get(name)
    assert cls.passes.__func__ is not Attack.passes.__func__, f"attack {name} does not override Attack.passes"
    assert cls.passes({}) > 0


def _cost_cases() -> list[tuple[str, dict]]:
    """(method, params) for each method: its defaults, other attack step counts where it has a training attack,
    and its clean branch where it has one (a case a method cannot take is left out, not skipped)."""
    cases = []
    for name in METHODS.names():
        takes = METHODS.params(name)
        cases.append((name, {}))
        if "attack" in takes:
            cases.append((name, {"attack": {"steps": 3}}))
            cases.append(
                (name, {"attack": {"steps": 7}, **({"clean_branch": True} if "clean_branch" in takes else {})})
            )
    return cases


@pytest.mark.parametrize(("name", "params"), _cost_cases())
def test_method_costs_equal_the_old_switch(name, params):
    config = create_method(name, **params).config()
    passes = train_passes(config)
    student, teacher = _old_train_passes(config)
    # a method without a teacher multiplied the old rule's teacher passes by no teacher's MACs (TRADES: 1 x 0)
    assert (passes.student, passes.teacher) == (student, teacher if METHODS.get(name).needs_teacher else 0.0)


@pytest.mark.parametrize("label", sorted({*DEFAULT_SUITE, *QUICK_SUITE, *AUTOATTACK_SUBSET_SUITE}))
def test_suite_attack_costs_equal_the_old_rule(label):
    spec = DEFAULT_SUITE[label]
    assert attack_passes(spec) == _old_attack_passes(spec)


def test_attack_costs_follow_their_parameters():
    assert attack_passes({"name": "pgd", "steps": 20, "restarts": 3}) == 2 * 20 * 3 + 1
    assert attack_passes({"name": "fgsm"}) == 3
    assert attack_passes({"name": "kl_pgd", "steps": 0}) == 1
    assert attack_passes({"name": "bim"}) == 2 * 10 + 1  # a spec without steps: the class's default
    assert attack_passes({"name": "autoattack", "version": "custom"}) == AutoAttackWrapper.STANDARD_PASSES
    assert attack_passes({"name": "apgd-t", "steps": 10}) == 2 * 10 * 9 + 1
    assert attack_passes({"name": "square", "queries": 100}) == 101
