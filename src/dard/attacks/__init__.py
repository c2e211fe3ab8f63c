"""Adversarial attacks behind one contract: ``create_attack(name, **params)(model, x, y) -> x_adv``.

Registered names: ``fgsm``, ``pgd``, ``bim``, ``tpgd`` (targeted PGD), ``cw`` (CW-inf), ``dpgd`` (Dice PGD)
and ``autoattack`` (official AutoAttack via ``pyautoattack``). See :class:`dard.attacks.base.Attack` for the
contract (inputs in [0, 1], eval mode, input-only gradients, seeded determinism). Training methods use the
core routine :func:`pgd_ascent` and the DPGD loss functions directly.
"""

from __future__ import annotations

from typing import Any

from dard.attacks.autoattack import AutoAttackWrapper
from dard.attacks.base import Attack, perturbation_norms
from dard.attacks.bim import BIM
from dard.attacks.cw import CW
from dard.attacks.dpgd import DPGD, dice_loss, dpgd_lambda, dpgd_loss
from dard.attacks.fgsm import FGSM
from dard.attacks.pgd import PGD, ce_loss, margin_loss, pgd_ascent, project
from dard.attacks.targeted import TargetedPGD
from dard.errors import DardError
from dard.registry import Registry

__all__ = [
    "ATTACKS",
    "Attack",
    "AutoAttackWrapper",
    "BIM",
    "CW",
    "DPGD",
    "FGSM",
    "PGD",
    "TargetedPGD",
    "ce_loss",
    "create_attack",
    "dice_loss",
    "dpgd_lambda",
    "dpgd_loss",
    "list_attacks",
    "margin_loss",
    "perturbation_norms",
    "pgd_ascent",
    "project",
    "register_attack",
]

ATTACKS: Registry[type[Attack]] = Registry("attack")
register_attack = ATTACKS.register

# Registered here rather than by decorators in the modules, so the modules never import this package
# (no import cycle); new attacks may use ``@register_attack("name")`` as usual.
for _cls in (FGSM, PGD, BIM, TargetedPGD, CW, DPGD, AutoAttackWrapper):
    register_attack(_cls.name)(_cls)
del _cls


def create_attack(name: str, **params: Any) -> Attack:
    """Build the attack registered as ``name`` with keyword ``params``.

    Unknown names and unknown or invalid parameters raise a one-line :class:`DardError`.
    ``create_attack(**attack.config())`` rebuilds an identical attack.
    """
    cls = ATTACKS.get(name)
    if isinstance(cls, type) and issubclass(cls, Attack):
        valid = cls.param_names()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            raise DardError(f"attack '{name}' has no parameter{plural} {', '.join(unknown)}; valid: {', '.join(valid)}")
        return cls(**params)
    try:  # a plain factory registered by a user: its signature is all we can check
        return cls(**params)
    except TypeError as exc:
        raise DardError(f"attack '{name}': {exc}") from None


def list_attacks() -> list[str]:
    """Sorted names of the registered attacks."""
    return ATTACKS.names()
