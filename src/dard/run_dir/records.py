"""The typed files of a run folder: what each JSON file holds, and how it is read back (strictly) and written.

Each type has ``from_dict`` (strict, see :mod:`dard.run_dir.files`) and ``to_dict`` (the JSON that is written);
``to_dict(from_dict(d)) == d`` for every file dard writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from dard.errors import DardError, shown
from dard.evaluation.suite import EvalRecord
from dard.run_dir.files import from_plain


def _without_none(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``d`` without the optional ``keys`` whose value is None (absent from the file rather than null)."""
    return {k: v for k, v in d.items() if not (k in keys and v is None)}


class _Record:
    """``from_dict``/``to_dict`` for a dataclass whose optional fields in ``_OPTIONAL`` are left out when None."""

    _OPTIONAL: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "record"):
        """Strictly validated instance of ``data``; DardError naming ``where`` otherwise."""
        return from_plain(data, cls, where)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict that is written."""
        return _without_none(asdict(self), self._OPTIONAL)


# ------------------------------------------------------------------------------------------------ eval/


@dataclass
class EpsSweep(_Record):
    """PGD accuracy at several eps (the ``eps_sweep`` of ``eval/best.json``): eps as ``"%.6f"`` -> accuracy."""

    attack: str
    accuracy: dict[str, float]


@dataclass
class EvalFile(_Record, EvalRecord):
    """``eval/<checkpoint>.json``: the suite's :class:`EvalRecord` plus the extras the final evaluation adds to the
    first evaluated checkpoint: AutoAttack on a test subset and a PGD-20 eps sweep (None when not run)."""

    autoattack_subset: EvalRecord | None = None
    eps_sweep: EpsSweep | None = None

    _OPTIONAL = ("autoattack_subset", "eps_sweep")

    def check_values(self, where: str) -> None:
        """DardError naming ``where`` unless every accuracy is a finite number in [0, 1] (a NaN or a 750% accuracy
        comes only from a damaged or hand-made file, and a report would print it as a result)."""
        records = [("", self)] + ([("autoattack_subset.", self.autoattack_subset)] if self.autoattack_subset else [])
        values = []
        for p, r in records:
            values.append((f"{p}clean", r.clean.get("accuracy")))
            values += [(f"{p}{k}", a.accuracy) for k, a in r.attacks.items()]
            if r.worst_case is not None:
                values.append((f"{p}worst_case", r.worst_case.get("accuracy")))
        values += [(f"eps_sweep.{k}", v) for k, v in (self.eps_sweep.accuracy.items() if self.eps_sweep else [])]
        for key, value in values:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
            if not ok:  # NaN fails the comparison too
                raise DardError(f"{where}: accuracy {key} is {shown(value, 40)}, not a number in [0, 1]")

    @classmethod
    def of(
        cls, record: EvalRecord, *, autoattack_subset: EvalRecord | None = None, eps_sweep: EpsSweep | None = None
    ) -> EvalFile:
        """An eval file holding ``record`` and the given extras."""
        base = {f.name: getattr(record, f.name) for f in fields(EvalRecord)}
        return cls(**base, autoattack_subset=autoattack_subset, eps_sweep=eps_sweep)


@dataclass
class CompareFile(_Record):
    """``eval/compare-<checkpoint>.json``: the experiment's attack comparison, cached with the spec it was made for."""

    spec: dict[str, Any]
    record: EvalRecord


@dataclass
class LabelGapFile(_Record):
    """``eval/label-gap-<checkpoint>.json``: the teacher's soft-label gap under the student's own training attack."""

    spec: dict[str, Any]
    attack: dict[str, Any]
    gap: dict[str, float | int]


# ------------------------------------------------------------------------------------------------ run.json


def _empty_if_null(value: Any) -> Any:
    return {} if value is None else value


def _method_dict(value: Any) -> Any:
    """Older run.json files name the method by a string; newer ones hold its resolved config."""
    return {"name": value} if isinstance(value, str) else _empty_if_null(value)


@dataclass
class RunInfo(_Record):
    """``run.json``: what a run is, written once when it starts (every field defaults, for older folders)."""

    name: str | None = None
    seed: int | None = None
    method: Annotated[dict[str, Any], BeforeValidator(_method_dict)] = field(default_factory=dict)
    student: dict[str, Any] | None = None  # the model spec (arch, num_classes, in_channels, mean, std)
    teacher: dict[str, Any] | None = None  # its provenance and model spec; None without a teacher
    environment: Annotated[dict[str, Any], BeforeValidator(_empty_if_null)] = field(default_factory=dict)
    data: Annotated[dict[str, Any], BeforeValidator(_empty_if_null)] = field(default_factory=dict)
    # what `dard train --resume` changed later (optim.epochs, eval.*): one entry per resume that changed something
    changes: list[dict[str, Any]] | None = None
    # SHA-256 of config.yaml's bytes as dard last wrote them (a resume refuses a config edited by hand); absent in
    # older run folders, which resume as before
    config_sha256: str | None = None

    _OPTIONAL = ("changes", "config_sha256")


# ------------------------------------------------------------------------------------------------ progress


# Bounds of the numbers a run folder records: a step, epoch or count is never negative, and every float is finite
# (NaN or inf seconds or accuracies come only from a damaged file; pydantic's JSON reader would accept them).
Count = Annotated[int, Field(ge=0)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


@dataclass
class EpochMetrics(_Record):
    """One row of ``metrics.jsonl`` (and of the resume state's history): an epoch's training numbers, and its
    validation numbers on the epochs that validate."""

    epoch: Count
    lr: NonNegative
    train_loss: Finite
    train_acc: Fraction
    images_per_s: NonNegative
    train_seconds: NonNegative | None = None  # cumulative training-loop wall time (s); absent in older runs
    val_clean: Fraction | None = None
    val_robust: Fraction | None = None

    _OPTIONAL = ("train_seconds", "val_clean", "val_robust")


@dataclass
class Progress(_Record):
    """``state-<step>/progress.json``: where training stands, for resuming and for `dard experiment --plan`."""

    epoch: Count = 0  # epochs finished
    batch: Count = 0  # steps of the current epoch finished (a mid-epoch snapshot)
    global_step: Count = 0
    best_score: Finite | None = None
    best_epoch: Count | None = None
    history: list[EpochMetrics] = field(default_factory=list)
    train_seconds: NonNegative | None = None  # cumulative training-loop wall time (s); absent in older runs
    # rank-summed loss/correct/seen of the epoch a mid-epoch snapshot cut
    partial: dict[str, Finite | int] | None = None

    _OPTIONAL = ("partial",)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict that is written."""
        out = super().to_dict()
        out["history"] = [row.to_dict() for row in self.history]
        return out


@dataclass
class ResumePointer(_Record):
    """``resume.json``: the name of the last complete snapshot folder."""

    snapshot: str
