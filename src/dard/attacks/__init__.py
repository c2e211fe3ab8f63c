"""Adversarial attacks behind one contract: ``create_attack(name, **params)(model, x, target) -> x_adv``.

Registered names: ``fgsm``, ``pgd``, ``bim``, ``tpgd`` (targeted PGD), ``cw`` (CW-inf: Linf PGD on the margin),
``dpgd`` (Dice PGD), ``trades_pgd`` (torchattacks' TPGD: the KL maximisation against the model's own clean
prediction), ``autoattack`` (official AutoAttack via ``pyautoattack``) and its parts ``apgd-ce``, ``apgd-dlr``,
``apgd-t``, ``fab-t``, ``square`` (:mod:`dard.attacks.autoattack_parts`), all taking labels, and ``kl_pgd`` (the KL
maximisation of TRADES / RSLAD / AdaAD), taking target probabilities or a reference network. See
:class:`dard.attacks.base.Attack` for the contract (inputs in [0, 1], eval mode, input-only gradients, seeded
determinism, checked target); :func:`pgd_ascent` is the core routine.
"""

from __future__ import annotations

from typing import Any

from dard.attacks.autoattack import AutoAttackWrapper
from dard.attacks.autoattack_parts import APGDCE, APGDDLR, APGDT, FABT, Square
from dard.attacks.base import Attack, perturbation_norms, preset
from dard.attacks.dpgd import DPGD, dice_loss, dpgd_lambda, dpgd_loss
from dard.attacks.kl import KLPGD, TradesPGD, kl_sum
from dard.attacks.pgd import BIM, CW, FGSM, PGD, ce_loss, margin_loss, pgd_ascent, project
from dard.attacks.targeted import TargetedPGD
from dard.registry import ATTACKS, register_attack

__all__ = [
    "APGDCE",
    "APGDDLR",
    "APGDT",
    "ATTACKS",
    "Attack",
    "AutoAttackWrapper",
    "BIM",
    "CW",
    "DPGD",
    "FABT",
    "FGSM",
    "KLPGD",
    "PGD",
    "Square",
    "TargetedPGD",
    "TradesPGD",
    "ce_loss",
    "create_attack",
    "dice_loss",
    "dpgd_lambda",
    "dpgd_loss",
    "kl_sum",
    "list_attacks",
    "margin_loss",
    "perturbation_norms",
    "pgd_ascent",
    "preset",
    "project",
    "register_attack",
]


def create_attack(name: str, **params: Any) -> Attack:
    """Build the attack registered as ``name`` with keyword ``params``.

    Unknown names and unknown or invalid parameters raise a one-line :class:`DardError`.
    ``create_attack(**attack.config())`` rebuilds an identical attack.
    """
    return ATTACKS.create(name, **params)


def list_attacks() -> list[str]:
    """Sorted names of the registered attacks."""
    return ATTACKS.names()
