"""Paired comparisons in a report: which rows are compared, on which images, and how ``report.md`` shows them.

Every row is compared with the DARD row and with the SAT row (when the report has one of each: the one row of that
method, or the row named after it), and with the pairs an experiment file names. Two rows are paired seed by seed,
and a seed counts only when both records hold per-image outcomes of the same images (the evaluation record's
``outcomes`` and ``first_n``); the statistics are :mod:`.paired`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dard.evaluation.record import EvalRecord, worst_case_attacks
from dard.report.columns import AA_CLEAN, AA_KEY, Column, other_settings
from dard.report.groups import RunGroup
from dard.report.paired import PairedComparison, paired_comparison
from dard.run_dir import EvalFile, RunRecord

__all__ = ["REFERENCES", "SECTION_KEYS", "PairedSection", "paired_section", "record_outcomes"]

#: the rows every other row is compared with, by method, and the mark of a significant difference from each
REFERENCES = {"dard": "†", "sat": "‡"}
#: the metrics the report's section lists (results.json holds all)
SECTION_KEYS = ("clean", "pgd20", AA_KEY, "worst_case")


def record_outcomes(rec: EvalFile, key: str) -> tuple[tuple[object, ...], np.ndarray] | None:
    """``(which images, per-image correct)`` behind metric ``key`` of a record, None when not recorded.

    Which images: the dataset, split and ``first_n`` (the first N test images, in order) of the record, or of its
    AutoAttack subset for the AutoAttack columns, and the data fingerprint when the record has one; two outcome
    arrays are paired only when these are equal (and worst cases only over the same attacks, :func:`_compare`)."""
    source: EvalRecord | None = rec
    if key in (AA_KEY, AA_CLEAN):
        source = rec.autoattack_subset
        key = "clean" if key == AA_CLEAN else "autoattack"
    if source is None:
        return None
    count = source.counts().get(key)
    bits = count.outcome_array() if count is not None else None
    if bits is None:
        return None
    data = source.data
    return (data.get("name"), data.get("split"), source.first_n, data.get("fingerprint")), bits


def _attack_config(rec: EvalFile, key: str) -> dict[str, object] | None:
    """The recorded config of the attack behind metric ``key`` (AutoAttack's of the subset), None for clean and the
    worst case."""
    source = rec.autoattack_subset if key == AA_KEY else rec
    label = "autoattack" if key == AA_KEY else key
    result = source.attacks.get(label) if source is not None else None
    return result.config if result is not None else None


def _other_settings(a: RunRecord, b: RunRecord, key: str, checkpoint: str) -> str:
    """The settings in which the two runs' attack behind ``key`` differs ("steps"; for the worst case, those of
    each attack it is taken over: "pgd20.steps"), else empty: two attacks are not one test's two arms."""
    recs = [r.evals[checkpoint] for r in (a, b)]
    labels = worst_case_attacks(recs[0]) if key == "worst_case" else (key,)
    differ: list[str] = []
    for label in labels:
        one, two = (_attack_config(rec, label) for rec in recs)
        if one is not None and two is not None:
            keys = sorted(other_settings(one, two))
            differ += [f"{label}.{k}" for k in keys] if key == "worst_case" else keys
    return ", ".join(differ)


def _worst_over(a: RunRecord, b: RunRecord, checkpoint: str) -> str:
    """The attacks of the two runs' worst cases where they differ ("fgsm | fgsm, pgd20"), else empty."""
    over = [worst_case_attacks(r.evals[checkpoint]) for r in (a, b)]
    return "" if over[0] == over[1] else " | ".join(", ".join(o) for o in over)


@dataclass
class PairedSection:
    """The paired comparisons of a report, the marks they put in the main table, and what could not be paired."""

    comparisons: list[PairedComparison] = field(default_factory=list)
    references: dict[str, str] = field(default_factory=dict)  # mark -> the reference row's name
    notes: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)  # runs whose records hold no per-image outcomes
    headers: dict[str, str] = field(default_factory=dict)  # metric key -> its column header

    def mark(self, row: str, key: str) -> str:
        """The marks of the references ``row`` differs from significantly on ``key`` (``†‡``, or empty)."""
        return "".join(
            m
            for m, ref in self.references.items()
            for c in self.comparisons
            if c.significant and c.metric == key and {c.a, c.b} == {ref, row}
        )

    def against(self, row: str, method: str, key: str) -> PairedComparison | None:
        """``row``'s comparison with the reference row of ``method`` (``dard``, ``sat``) on ``key``, where some seed
        was paired; None for the reference row itself, a report without that reference, or nothing paired."""
        ref = self.references.get(REFERENCES[method])
        return next(
            (c for c in self.comparisons if c.seeds and c.metric == key and ref != row and {c.a, c.b} == {ref, row}),
            None,
        )

    def to_dict(self) -> dict[str, object]:
        """The ``paired`` entry of ``results.json``."""
        return {
            "references": {name: mark for mark, name in self.references.items()},
            "comparisons": [c.to_dict() for c in self.comparisons],
            "notes": list(self.notes),
            "unrecorded": list(self.unrecorded),
        }


def _reference(groups: Sequence[RunGroup], method: str, teachers: set[str]) -> RunGroup | None:
    """The row of ``method`` (the only one, or the one named after it); teacher rows are never references."""
    rows = [g for g in groups if g.members[0].method.get("name") == method and g.name not in teachers]
    if len(rows) == 1:
        return rows[0]
    return next((g for g in rows if g.name == method), None)


def _compare(a: RunGroup, b: RunGroup, key: str, checkpoint: str, unrecorded: list[str]) -> PairedComparison:
    """Row ``a`` against row ``b`` on metric ``key``, seed by seed; runs whose records hold no outcomes (none for
    clean) are added to ``unrecorded``."""
    by_seed = {m.seed: m for m in b.members}
    per_seed, notes = [], []
    for m in a.members:
        other = by_seed.get(m.seed)
        if other is None or checkpoint not in m.evals or checkpoint not in other.evals:
            continue
        oa, ob = record_outcomes(m.evals[checkpoint], key), record_outcomes(other.evals[checkpoint], key)
        if oa is None or ob is None:  # a record without outcomes has none for clean; others may lack one column
            missing = [r.name for r, o in ((m, oa), (other, ob)) if o is None and r.name not in unrecorded]
            unrecorded += missing if key == "clean" else []
        elif oa[0] != ob[0]:
            notes.append(f"seed {m.seed}: evaluated on other images")
        elif key == "worst_case" and (over := _worst_over(m, other, checkpoint)):
            notes.append(f"seed {m.seed}: worst case over other attacks ({over})")
        elif settings := _other_settings(m, other, key, checkpoint):
            notes.append(f"seed {m.seed}: the attack was recorded with other settings ({settings})")
        else:
            per_seed.append((m.seed, oa[1], ob[1]))
    out = paired_comparison(a.name, b.name, key, per_seed)
    out.notes = notes
    return out


def _unmatched_seeds(pairs: Sequence[tuple[RunGroup, RunGroup]]) -> list[str]:
    """Notes on compared rows of other seeds: the paired statistics are over the seeds two rows share, while each
    row's mean in the main table is over its own (nothing said so). One line per row and seeds it has alone, naming
    the rows it was compared with that lack them (the main comparison's ten rows made ten lines of one fact)."""
    seeds = {g.name: {m.seed for m in g.members} for pair in pairs for g in pair}
    lacking: dict[tuple[str, tuple[int | None, ...]], list[str]] = {}
    notes = []
    for a, b in pairs:
        if not seeds[a.name] & seeds[b.name]:
            notes.append(f"{a.name} vs {b.name}: no seed in common, nothing paired")
            continue
        for g, other in ((a, b), (b, a)):
            if alone := seeds[g.name] - seeds[other.name]:
                lacking.setdefault((g.name, tuple(sorted(alone, key=str))), []).append(other.name)
    for (name, extra), others in lacking.items():
        one = len(extra) == 1
        which = ("seed " if one else "seeds ") + ", ".join(map(str, extra))
        notes.append(
            f"{name}: {which} {'is' if one else 'are'} in its main-table mean but not paired with "
            f"{', '.join(others)}, which lack{'s' if len(others) == 1 else ''} {'it' if one else 'them'}"
        )
    return notes


def paired_section(
    groups: Sequence[RunGroup],
    columns: Sequence[Column],
    checkpoint: str,
    *,
    pairs: Sequence[tuple[str, str]] = (),
    teachers: set[str] | frozenset[str] = frozenset(),
) -> PairedSection:
    """Compare every row with the DARD and SAT rows, and the named ``pairs`` (row names; a name that is not a row
    is a note), on every column of the main table that has per-image outcomes."""
    by_name = {g.name: g for g in groups}
    section = PairedSection(headers={c.key: c.header for c in columns})
    todo: list[tuple[RunGroup, RunGroup]] = []
    for method, mark in REFERENCES.items():
        ref = _reference(groups, method, set(teachers))
        if ref is not None:
            section.references[mark] = ref.name
            todo += [(ref, g) for g in groups if g is not ref]
    for name_a, name_b in pairs:
        missing = [n for n in (name_a, name_b) if n not in by_name]
        if missing:
            section.notes.append(f"pair {name_a} vs {name_b}: no row named {', '.join(missing)} in this report")
        else:
            todo.append((by_name[name_a], by_name[name_b]))
    done: set[tuple[str, str]] = set()
    keys = [c.key for c in columns if c.key != AA_CLEAN]
    compared = []
    for a, b in todo:
        if (a.name, b.name) in done or (b.name, a.name) in done:
            continue
        done.add((a.name, b.name))
        compared.append((a, b))
        for key in keys:
            cmp = _compare(a, b, key, checkpoint, section.unrecorded)
            if cmp.seeds or cmp.notes:
                section.comparisons.append(cmp)
    section.notes += _unmatched_seeds(compared)
    if section.unrecorded:
        section.notes.append(
            f"no per-image outcomes in the records of {', '.join(section.unrecorded)} (made before they were "
            "recorded): their seeds are not paired"
        )
    if todo and not any(c.seeds for c in section.comparisons):
        section.notes.append("no two rows share a seed with per-image outcomes on the same images: nothing is marked")
    return section
