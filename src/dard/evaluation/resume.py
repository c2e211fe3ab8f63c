"""Continuing an evaluation that stopped part-way (a deadline, a killed process), attack by attack.

:func:`dard.evaluation.suite.evaluate` takes an :class:`EvalResume`: the attacks finished before are reused, each
attack that runs is reported as it finishes (the caller saves it), and the caller may stop the evaluation before
an attack its deadline does not allow. Where the results are kept is the caller's business
(:mod:`dard.training.final_eval` keeps them in the run folder).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dard.attacks import Attack
from dard.evaluation.record import AttackResult, Count

__all__ = ["EvalResume", "EvaluationStopped", "reusable"]


class EvaluationStopped(Exception):
    """An evaluation stopped before attack ``label``, which its caller's deadline did not allow; the attacks before
    it were reported (:attr:`EvalResume.on_attack`)."""

    def __init__(self, label: str) -> None:
        self.label = label
        super().__init__(f"evaluation stopped before attack {label}")


@dataclass
class EvalResume:
    """How :func:`evaluate` continues an evaluation that stopped part-way, and reports its progress.

    ``done``: the attacks finished before, by label, each reused when its config equals the attack's and it holds
    per-image outcomes of as many images; all are reused only if ``clean`` (the clean count measured with them)
    has the same outcomes as this evaluation's, so results of another model or other images never mix in.
    ``on_attack(clean, results)``: called after each attack that ran, with every result so far (to save them).
    ``stop_before(attack, n)``: asked before each attack that would run on ``n`` images; True stops the evaluation
    there (:class:`EvaluationStopped`).
    """

    clean: Count | None = None
    done: Mapping[str, AttackResult] = field(default_factory=dict)
    on_attack: Callable[[Count, dict[str, AttackResult]], None] | None = None
    stop_before: Callable[[Attack, int], bool] | None = None


def reusable(earlier: AttackResult | None, attack: Attack, n: int) -> AttackResult | None:
    """``earlier`` if it is this attack's result on ``n`` images with per-image outcomes (configs compared as the
    JSON they are stored as)."""
    if earlier is None or earlier.total != n or earlier.outcomes is None:
        return None
    return earlier if json.loads(json.dumps(attack.config())) == earlier.config else None
