"""PGDARD: the DARD paper's ablation, DARD with DPGD replaced by PGD.

Source: Zou, Zhang, Qiu, Li, arXiv 2509.11525 (ablation). Identical to :mod:`dard.methods.dard` except the
default attack: PGD-10 with cross-entropy on the student, uniform random start, Linf eps 8/255, step 2/255.
Deviations from the official code: those of DARD (see its module docstring); the PGD training attack runs with
the student in eval mode and clamps its uniform random start to [0, 1].
"""

from __future__ import annotations

from dard.methods.base import PGD10_TRAINING
from dard.methods.dard import DARD
from dard.registry import register_method


@register_method("pgdard")
class PGDARD(DARD):
    """DARD with a PGD (CE, random start) training attack."""

    name = "pgdard"
    needs_teacher = True
    default_attack = PGD10_TRAINING
