"""The columns of a report's tables, named from the records' own attack configs.

The main table holds what a paper quotes: clean accuracy, the threat-model attacks (headers such as ``PGD-20``,
``CW-inf-20``, made from each attack's recorded name, steps and options, not from a hand list), AutoAttack beside
the clean accuracy of its own subset, and the worst case. Attacks outside the threat model (the ``pgd-large``
sanity check at eps 0.5, any attack recorded at another eps) go to the sanity table with the eps sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dard.attacks.threat import EPS_TOL
from dard.evaluation.record import SANITY
from dard.run_dir import EvalFile

__all__ = [
    "AA_CLEAN",
    "AA_KEY",
    "AA_PGD",
    "EPS_TOL",
    "Column",
    "attack_columns",
    "attack_title",
    "eps_text",
    "is_sanity",
    "main_columns",
    "other_settings",
]

#: metric keys of the AutoAttack subset run: its robust accuracy and the clean accuracy of the same images
AA_KEY = "autoattack_subset"
AA_CLEAN = "autoattack_clean"
#: PGD-20 on the AutoAttack subset (records that ran it there): how much AutoAttack adds on the same images
AA_PGD = "autoattack_pgd20"

# How each registered attack is written in a header (an attack not listed is written by its registered name).
_TITLES = {
    "pgd": "PGD",
    "fgsm": "FGSM",
    "bim": "BIM",
    "cw": "CW-inf",
    "dpgd": "DPGD",
    "tpgd": "PGD-LL",
    "kl_pgd": "KL-PGD",
    "trades_pgd": "TPGD-KL",  # torchattacks' TPGD: TRADES' KL attack, untargeted
    "autoattack": "AutoAttack",
}


@dataclass(frozen=True)
class Column:
    """One accuracy column: the metric key of the report rows, its header, and whether it is a robust accuracy
    (then ``clean_key`` names the clean accuracy of the same images)."""

    key: str
    header: str
    clean_key: str | None = None


#: attack config keys that say where or how an attack ran, not what it measures (eps and norm: the threat model,
#: checked for the whole table)
RUN_KEYS = ("seed", "batch_size", "eps", "norm")


def other_settings(config: Mapping[str, Any], other: Mapping[str, Any]) -> set[str]:
    """The keys of two recorded configs of one attack label that differ in what the attack measures (steps, step
    size, restarts, ...; not :data:`RUN_KEYS`). Only keys both record are compared, so an older record without a
    key added since does not differ."""
    keys = (config.keys() & other.keys()) - set(RUN_KEYS)
    return {k for k in keys if config[k] != other[k]}


def eps_text(eps: float, tol: float = 1e-4, norm: str = "linf") -> str:
    """``eps`` as ``k/255`` when it is a whole number of pixel levels (within ``tol`` levels), else as a number; an
    L2 radius always as a number (0.2 read "51/255", a pixel level that means nothing for L2)."""
    if eps == 0:
        return "0"
    if str(norm).lower() == "l2":
        return f"{eps:g}"
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < tol else f"{eps:g}"


def attack_title(config: Mapping[str, Any], threat_eps: float | None = None) -> str:
    """A header for an attack from its recorded config: its name, step count and the options that change what it
    measures (restarts, a margin loss, a clean start, the target of a targeted attack), and its eps when it differs
    from ``threat_eps``. ``{"name": "pgd", "steps": 20, ...}`` is ``PGD-20``."""
    name = str(config.get("name", "?"))
    text = _TITLES.get(name, name)
    steps = config.get("steps")
    if isinstance(steps, int) and name not in ("fgsm", "autoattack"):
        text += f"-{steps}"
    extras = []
    if isinstance(config.get("restarts"), int) and config["restarts"] > 1:
        extras.append(f"{config['restarts']} restarts")
    if name == "pgd" and config.get("loss") not in (None, "ce"):
        extras.append(f"{config['loss']} loss")
    if name == "pgd" and config.get("random_start") is False:
        extras.append("clean start")
    if name == "tpgd" and config.get("target"):
        extras.append(f"targeted, {str(config['target']).replace('_', '-')}")
    if name == "autoattack" and config.get("version"):
        extras.append(str(config["version"]))
    eps = config.get("eps")
    if threat_eps is not None and isinstance(eps, (int, float)) and abs(eps - threat_eps) > EPS_TOL:
        extras.append(f"eps {eps_text(float(eps), norm=str(config.get('norm', 'linf')))}")
    return f"{text} ({', '.join(extras)})" if extras else text


def is_sanity(label: str, config: Mapping[str, Any], threat_eps: float | None) -> bool:
    """Whether an attack is outside the threat model: a sanity check of the suite, or recorded at another eps."""
    eps = config.get("eps")
    other_eps = threat_eps is not None and isinstance(eps, (int, float)) and abs(eps - threat_eps) > EPS_TOL
    return label in SANITY or other_eps


def _threat_eps(rec: EvalFile) -> float | None:
    eps = rec.threat_model.get("eps")
    return float(eps) if isinstance(eps, (int, float)) else None


def _configs(records: Sequence[EvalFile]) -> dict[str, tuple[Mapping[str, Any], float | None]]:
    """Each attack label of the records (in order of first appearance) with the first config recorded for it."""
    out: dict[str, tuple[Mapping[str, Any], float | None]] = {}
    for rec in records:
        for label, res in rec.attacks.items():
            out.setdefault(label, (res.config, _threat_eps(rec)))
    return out


def _unique(columns: list[Column], labels: Sequence[str]) -> list[Column]:
    """Columns whose headers two labels share get their label appended (a record with two PGD-20 variants)."""
    seen: dict[str, int] = {}
    for c in columns:
        seen[c.header] = seen.get(c.header, 0) + 1
    return [
        Column(c.key, f"{c.header} [{c.key}]", c.clean_key) if seen[c.header] > 1 and c.key in labels else c
        for c in columns
    ]


def attack_columns(records: Sequence[EvalFile], *, sanity: bool = False) -> list[Column]:
    """One column per attack label of the records: the threat-model attacks (``sanity`` False) or the others."""
    cols = [
        Column(label, attack_title(cfg, eps), "clean")
        for label, (cfg, eps) in _configs(records).items()
        if is_sanity(label, cfg, eps) == sanity
    ]
    return _unique(cols, [c.key for c in cols])


def main_columns(records: Sequence[EvalFile], aa_ns: Sequence[int | str]) -> list[Column]:
    """The main table's accuracy columns: clean, the threat-model attacks, the AutoAttack subset's clean accuracy
    and AutoAttack on it (``aa_ns``: the subset sizes, in the headers; when no run has AutoAttack, one column that
    says it was not run), and the worst case."""
    n_text = "/".join(str(n) for n in aa_ns)
    aa = [Column(AA_CLEAN, f"Clean (first {n_text})"), Column(AA_KEY, f"AutoAttack (first {n_text})", AA_CLEAN)]
    return [
        Column("clean", "Clean"),
        *attack_columns(records),
        *(aa if n_text else [Column(AA_KEY, "AutoAttack")]),  # no run has it: one column saying "not run"
        Column("worst_case", "Worst case", "clean"),
    ]
