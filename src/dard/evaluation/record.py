"""The evaluation record: exact counts and per-image outcomes of clean accuracy and every attack, as JSON.

Every number is a count of images (``correct`` of ``total``); accuracies and percentages are derived when they are
shown, so the JSON holds no rounded floats and two records compare exactly. ``outcomes`` says which images were
correct, in the order they were evaluated (:mod:`dard.evaluation.outcomes`); ``data["first_n"]`` says which test
images those are (the first N of the test split, in order), so two records of the same images pair point by point.

Older records still load: their stored ``accuracy`` floats are ignored (the counts were always stored beside them),
their outcomes are None, and the suite labels renamed since (:data:`LEGACY_LABELS`) read under their new names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import TypeAdapter

from dard.data.fingerprint import DataProvenance
from dard.errors import DardError, shown
from dard.evaluation.outcomes import check_outcomes, decode_outcomes, encode_outcomes

__all__ = [
    "LEGACY_LABELS",
    "SANITY",
    "AttackResult",
    "Count",
    "EvalRecord",
    "canonical_label",
    "check_counts",
    "test_data_info",
    "worst_case_attacks",
]

#: suite labels renamed so that they cannot be read as another library's attack of the same name: ``tpgd`` (here
#: targeted least-likely PGD; in torchattacks TRADES' KL attack) and ``cw`` (here Linf margin PGD; elsewhere CW-L2)
LEGACY_LABELS: dict[str, str] = {"tpgd": "pgd-ll", "cw": "cw-linf"}
#: Sanity attacks of the suite: reported and flagged, but left out of the worst case and of the recorded
#: threat-model eps (:mod:`dard.evaluation.suite`).
SANITY = frozenset({"pgd-large"})


def canonical_label(label: str) -> str:
    """The current name of a suite label (an old label's new name; any other label unchanged)."""
    return LEGACY_LABELS.get(label, label)


def test_data_info(name: str, first_n: int, provenance: DataProvenance | None = None) -> dict[str, Any]:
    """The ``data`` block of a record of the first ``first_n`` test images of dataset ``name``, with the folder,
    fingerprint and official status of its files (:func:`dard.data.fingerprint.data_provenance`)."""
    info: dict[str, Any] = {"name": name, "split": "test", "n": first_n, "first_n": first_n}
    return {**info, **provenance.to_dict()} if provenance is not None else info


def _ratio(correct: int, total: int) -> float:
    return correct / total if total else 0.0


@dataclass
class Count:
    """``correct`` of ``total`` evaluated images; ``outcomes`` (None in older records) says which, in order."""

    correct: int
    total: int
    outcomes: str | None = None

    @property
    def accuracy(self) -> float:
        """``correct / total`` (0 for no images): for display and plots, never stored."""
        return _ratio(self.correct, self.total)

    def outcome_array(self) -> np.ndarray | None:
        """Per-image correctness (bool, ``total`` entries), or None when the record has no outcomes."""
        return None if self.outcomes is None else decode_outcomes(self.outcomes, self.total)

    @classmethod
    def of(cls, correct: torch.Tensor) -> Count:
        """The count of a per-image bool tensor, with its outcomes."""
        return cls(correct=int(correct.sum()), total=int(correct.numel()), outcomes=encode_outcomes(correct))


@dataclass
class AttackResult:
    """What one attack did: robust ``correct`` of ``total`` images and the attack's own bookkeeping.

    ``correct`` counts the images classified correctly both clean and under the attack (the RobustBench /
    AutoAttack convention, for every attack: a targeted push that turns a wrong image right does not count), so it
    never exceeds the clean count of the same images; ``outcomes`` says which images those are.
    """

    config: dict[str, Any]
    correct: int
    total: int
    max_perturbation: float
    seconds: float
    warnings: list[str] = field(default_factory=list)
    # Clean-correct images the attack turned wrong, and the clean-correct count (None in older records).
    fooled: int | None = None
    clean_correct: int | None = None
    # Clean-misclassified images classified correctly after the attack: not robust, but a sign of a broken
    # untargeted attack when many (None in records made before robust accuracy required clean correctness).
    corrected: int | None = None
    # AutoAttack: images still correct after each stage of its cascade, in order (None for other attacks).
    stages: dict[str, int] | None = None
    outcomes: str | None = None

    @property
    def accuracy(self) -> float:
        """Robust accuracy ``correct / total``: for display, never stored."""
        return _ratio(self.correct, self.total)

    @property
    def count(self) -> Count:
        """The robust count with its outcomes."""
        return Count(self.correct, self.total, self.outcomes)

    @property
    def success_rate(self) -> float | None:
        """Attack success rate: fooled / clean-correct images (None when unknown or no image was correct)."""
        if self.fooled is None or not self.clean_correct:
            return None
        return self.fooled / self.clean_correct


@dataclass
class EvalRecord:
    """Everything an evaluation measured; serialises to and from JSON.

    ``data`` names the images (dataset, split, ``n``, ``first_n``: the first N test images in order) and where
    they came from (folder, file fingerprint, whether they are the official files); ``threat_model`` the norm and
    eps every threat-model attack used; ``environment`` the software and device.
    """

    model: dict[str, Any]
    data: dict[str, Any]
    threat_model: dict[str, Any]
    clean: Count
    attacks: dict[str, AttackResult]
    worst_case: Count | None
    flags: list[str]
    seed: int | None
    environment: dict[str, Any]
    seconds: float

    def __post_init__(self) -> None:
        # Old labels read under their new names, so old and new records share a report column.
        if any(label in LEGACY_LABELS for label in self.attacks):
            self.attacks = {canonical_label(k): v for k, v in self.attacks.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalRecord:
        """Inverse of :meth:`to_dict` (also reads the records of older dard versions)."""
        return TypeAdapter(cls).validate_python(dict(d))

    @property
    def first_n(self) -> int:
        """How many test images, from the first on, were evaluated (older records: their ``n``)."""
        return int(self.data.get("first_n", self.data.get("n", self.clean.total)))

    def counts(self) -> dict[str, Count]:
        """``{'clean': Count, label: Count, ..., 'worst_case': Count}`` in evaluation order."""
        out = {"clean": self.clean, **{k: v.count for k, v in self.attacks.items()}}
        if self.worst_case is not None:
            out["worst_case"] = self.worst_case
        return out

    def accuracies(self) -> dict[str, float]:
        """``{'clean': acc, label: acc, ...}`` in evaluation order, derived from the counts."""
        return {k: c.accuracy for k, c in self.counts().items()}


def worst_case_attacks(rec: EvalRecord) -> tuple[str, ...]:
    """The attacks a record's worst case is taken over, as the suite counts it: every attack of the record but the
    sanity checks (:data:`SANITY`), all run on the record's images (an AutoAttack subset is a record of its own). A
    worst case over FGSM alone and one over seven attacks differ by the suite, not by the models."""
    return tuple(sorted(label for label in rec.attacks if label not in SANITY))


def check_counts(rec: EvalRecord, where: str, prefix: str = "") -> None:
    """DardError naming ``where`` (and the key, after ``prefix``) unless every count of a record read from a file is
    an integer from 0 to its total of at least one image (an attack's bookkeeping included), and every count with
    per-image outcomes has one per image of the record (``data.first_n``) marking exactly its correct images. An
    impossible count comes only from a damaged or hand-made file, and a report would print it as a result; reports
    pair records image by image on the outcomes and print the counts (older records without outcomes are not
    paired)."""
    counts: list[tuple[str, Any, Any]] = [("clean", rec.clean.correct, rec.clean.total)]
    counts += [(k, a.correct, a.total) for k, a in rec.attacks.items()]
    counts += [  # an attack's bookkeeping: counts of the same images (absent in older records)
        (f"{k}.{f}", v, a.total)
        for k, a in rec.attacks.items()
        for f, v in (("fooled", a.fooled), ("clean_correct", a.clean_correct), ("corrected", a.corrected))
        if v is not None
    ]
    if rec.worst_case is not None:
        counts.append(("worst_case", rec.worst_case.correct, rec.worst_case.total))
    for key, correct, total in counts:
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (correct, total))
        if not ints or not 0 <= correct <= total:
            raise DardError(f"{where}: {prefix}{key} is {shown(correct, 40)} of {shown(total, 40)} images, not a count")
        if total == 0:  # correct / total was shown as an accuracy of 0.00%
            raise DardError(f"{where}: {prefix}{key} is measured on 0 images: a record of no images has no accuracy")
    first_n = rec.data.get("first_n", rec.data.get("n"))
    for key, count in rec.counts().items():
        if count.outcomes is None:
            continue
        if first_n is not None and first_n != count.total:
            raise DardError(
                f"{where}: {prefix}{key} counts {count.total} images but its data says {shown(first_n, 40)} "
                "(data.first_n)"
            )
        try:
            check_outcomes(count.outcomes, count.correct, count.total)
        except DardError as e:
            raise DardError(f"{where}: {prefix}{key} {e}") from None
    _check_worst_case(rec, where, prefix)


def _check_worst_case(rec: EvalRecord, where: str, prefix: str) -> None:
    """DardError unless the worst case is what the suite makes of the record's other outcomes: the images correct
    clean and under every attack of :func:`worst_case_attacks`, all of the record's images (and an attack's correct
    images are correct clean). Reports print the worst case and pair it image by image, so one that disagrees
    would be a silent wrong number. Counts of another total are not compared; where the worst case or an attack
    has no outcomes (older records), its count must not exceed the attack's."""
    worst, labels = rec.worst_case, worst_case_attacks(rec)
    if worst is not None and not labels:
        raise DardError(f"{where}: {prefix}worst_case is recorded but the record has no attack it is taken over")
    clean = rec.clean.outcome_array()
    for label, result in rec.attacks.items():  # robust means correct clean and under the attack
        bits = result.count.outcome_array()
        if bits is not None and clean is not None and len(bits) == len(clean) and (bits & ~clean).any():
            i = int((bits & ~clean).argmax())
            raise DardError(f"{where}: {prefix}{label} marks image {i} correct, but clean marks it wrong")
    if worst is None:
        return
    over = [(label, rec.attacks[label].count) for label in labels if rec.attacks[label].total == worst.total]
    for label, c in over:
        if worst.correct > c.correct:
            raise DardError(
                f"{where}: {prefix}worst_case counts {worst.correct} images correct, more than {label} "
                f"({c.correct} of the same {c.total})"
            )
    have = worst.outcome_array()
    if have is None:
        return
    known = [(key, bits) for key, c in [("clean", rec.clean), *over] if (bits := c.outcome_array()) is not None]
    known = [(key, bits) for key, bits in known if len(bits) == len(have)]
    for key, bits in known:  # correct in the worst case: correct under each of them
        if (wrong := have & ~bits).any():
            raise DardError(
                f"{where}: {prefix}worst_case marks image {int(wrong.argmax())} correct, but {key} marks it wrong"
            )
    if len(known) == len(labels) + 1:  # and the reverse, where every one of them says
        missed = np.logical_and.reduce([bits for _, bits in known]) & ~have
        if missed.any():
            raise DardError(
                f"{where}: {prefix}worst_case marks image {int(missed.argmax())} wrong, but it is correct clean and "
                f"under every attack it is taken over ({', '.join(labels)})"
            )


def check_subset(rec: EvalRecord, subset: EvalRecord, where: str, prefix: str = "autoattack_subset.") -> None:
    """DardError naming ``where`` unless ``subset`` (an AutoAttack subset) is a record of the first images of
    ``rec``'s: the same data (dataset, split, files), no more images, and the same clean outcomes on them. The
    final evaluation makes it so (the subset takes the main pass's clean outcomes); a report shows the subset's
    AutoAttack beside the main record's numbers, so a damaged or hand-made file that disagrees would print two
    models' numbers as one's."""
    differ = sorted(
        k for k in set(rec.data) & set(subset.data) if k not in ("n", "first_n") and rec.data[k] != subset.data[k]
    )
    if differ:
        raise DardError(f"{where}: {prefix}data differs from the record's in {', '.join(differ)}: not its images")
    if subset.first_n > rec.first_n:
        raise DardError(
            f"{where}: {prefix}data counts {subset.first_n} images, more than the record's {rec.first_n}: "
            "not a subset of its images"
        )
    mine, main = subset.clean.outcome_array(), rec.clean.outcome_array()
    if mine is None or main is None or len(main) < len(mine):
        return  # older records without outcomes: nothing to compare image by image
    if (other := mine != main[: len(mine)]).any():
        i = int(other.argmax())
        state, theirs = ("correct", "wrong") if mine[i] else ("wrong", "correct")
        raise DardError(
            f"{where}: {prefix}clean marks image {i} {state}, but the record's clean marks it {theirs}: the subset "
            "is the record's first images, evaluated clean once"
        )
