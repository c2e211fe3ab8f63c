"""The typed files of a run folder: what each JSON file holds, and how it is read back (strictly) and written.

Each type has ``from_dict`` (strict, see :mod:`dard.run_dir.files`) and ``to_dict`` (the JSON that is written);
``to_dict(from_dict(d)) == d`` for every file dard writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field

from dard.errors import DardError, shown
from dard.evaluation.outcomes import check_outcomes
from dard.evaluation.record import AttackResult, EvalRecord, check_counts, check_subset
from dard.evaluation.record import Count as ImageCount
from dard.names import check_label
from dard.run_dir.files import from_plain


def _without_none(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``d`` without the optional ``keys`` whose value is None (absent from the file rather than null)."""
    return {k: v for k, v in d.items() if not (k in keys and v is None)}


_R = TypeVar("_R", bound="_Record")


class _Record:
    """``from_dict``/``to_dict`` for a dataclass whose optional fields in ``_OPTIONAL`` are left out when None."""

    _OPTIONAL: tuple[str, ...] = ()
    if TYPE_CHECKING:  # every subclass is a dataclass (for asdict below)
        __dataclass_fields__: ClassVar[dict[str, Any]]

    @classmethod
    def from_dict(cls: type[_R], data: Mapping[str, Any], where: str = "record") -> _R:
        """Strictly validated instance of ``data``; DardError naming ``where`` otherwise."""
        return from_plain(data, cls, where)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict that is written."""
        return _without_none(asdict(self), self._OPTIONAL)


# ------------------------------------------------------------------------------------------------ eval/


@dataclass
class EpsSweep(_Record):
    """PGD robust counts at several eps (the ``eps_sweep`` of ``eval/best.json``): eps as ``"%.6f"`` -> images
    correct of ``total``. Older files hold accuracies as floats instead (``accuracy``); the eval file they belong to
    turns them into counts where its image count gives exact ones."""

    attack: str
    correct: dict[str, int] | None = None
    total: int | None = None
    accuracy: dict[str, float] | None = None

    _OPTIONAL = ("correct", "total", "accuracy")

    def accuracies(self) -> dict[str, float]:
        """eps -> accuracy, derived from the counts (an older file's floats when it has no counts)."""
        if self.correct is not None and self.total:
            return {eps: c / self.total for eps, c in self.correct.items()}
        return dict(self.accuracy or {})

    def with_counts(self, total: int) -> EpsSweep:
        """An older float-only sweep with counts of ``total`` images, if every float is a count of them (else as is)."""
        if self.correct is not None or not self.accuracy or total < 1:
            return self
        counts = {eps: round(acc * total) for eps, acc in self.accuracy.items()}
        if any(abs(counts[eps] / total - acc) > 1e-6 for eps, acc in self.accuracy.items()):
            return self
        return EpsSweep(self.attack, correct=counts, total=total)


@dataclass
class EvalFile(_Record, EvalRecord):
    """``eval/<checkpoint>.json``: the suite's :class:`EvalRecord` plus the extras the final evaluation adds to the
    first evaluated checkpoint: AutoAttack on a test subset and a PGD-20 eps sweep (None when not run)."""

    autoattack_subset: EvalRecord | None = None
    eps_sweep: EpsSweep | None = None

    _OPTIONAL = ("autoattack_subset", "eps_sweep")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eps_sweep is not None:
            self.eps_sweep = self.eps_sweep.with_counts(self.clean.total)

    def check_values(self, where: str) -> None:
        """DardError naming ``where`` unless every count is one of its images (:func:`check_counts`), in the
        record and its AutoAttack subset, the subset is of the record's first images (:func:`check_subset`), and
        the sweep's accuracies lie in [0, 1]."""
        check_counts(self, where)
        if self.autoattack_subset is not None:
            check_counts(self.autoattack_subset, where, "autoattack_subset.")
            check_subset(self, self.autoattack_subset, where)
        for eps, acc in self.eps_sweep.accuracies().items() if self.eps_sweep else []:
            if not (isinstance(acc, (int, float)) and 0 <= acc <= 1):  # NaN fails the comparison too
                raise DardError(f"{where}: eps_sweep accuracy at {eps} is {shown(acc, 40)}, not in [0, 1]")

    @classmethod
    def of(
        cls, record: EvalRecord, *, autoattack_subset: EvalRecord | None = None, eps_sweep: EpsSweep | None = None
    ) -> EvalFile:
        """An eval file holding ``record`` and the given extras."""
        base = {f.name: getattr(record, f.name) for f in fields(EvalRecord)}
        return cls(**base, autoattack_subset=autoattack_subset, eps_sweep=eps_sweep)


@dataclass
class EvalPart:
    """One evaluation's progress (:class:`EvalProgress`): its clean count and the attacks finished, by label."""

    clean: ImageCount
    attacks: dict[str, AttackResult]

    def counts(self) -> dict[str, ImageCount]:
        return {"clean": self.clean, **{k: a.count for k, a in self.attacks.items()}}


@dataclass
class EvalProgress(_Record):
    """``eval/progress-<checkpoint>.json``: the part of a checkpoint's test evaluation done so far, so that an
    evaluation stopped between attacks (a deadline, a killed process) continues there. It holds for the weights
    (``weights_digest``), images (``data``) and ``seed`` it names, and its attacks only for the clean outcomes
    beside them (:class:`dard.evaluation.resume.EvalResume`); removed once ``eval/<checkpoint>.json`` is written.
    ``suite``: the checkpoint's suite; ``autoattack_subset``: the AutoAttack subset's (clean count and attacks)."""

    weights_digest: str
    data: dict[str, Any]
    seed: int | None
    suite: EvalPart | None = None
    autoattack_subset: EvalPart | None = None

    _OPTIONAL = ("suite", "autoattack_subset")

    def check_values(self, where: str) -> None:
        """DardError naming ``where`` unless every count is one of its own per-image outcomes (a damaged file
        would otherwise be reused as a result)."""
        for name, part in (("suite", self.suite), ("autoattack_subset", self.autoattack_subset)):
            for key, count in part.counts().items() if part is not None else ():
                if not 0 <= count.correct <= count.total:
                    raise DardError(f"{where}: {name}.{key} is {count.correct} of {count.total} images, not a count")
                if count.outcomes is None:
                    raise DardError(f"{where}: {name}.{key} has no per-image outcomes")
                try:
                    check_outcomes(count.outcomes, count.correct, count.total)
                except DardError as e:
                    raise DardError(f"{where}: {name}.{key} {e}") from None


@dataclass
class CompareFile(_Record):
    """``eval/compare-<checkpoint>.json``: the experiment's attack comparison, cached with the spec it was made for."""

    spec: dict[str, Any]
    record: EvalRecord

    def check_values(self, where: str) -> None:
        """Its record's counts are counts of its images (:func:`check_counts`): the report prints success rates."""
        check_counts(self.record, where, "record.")


#: the numbers of a label gap file: fractions (mean TV distance, agreement, top probabilities) over ``n`` images
LABEL_GAP_FRACTIONS = ("tv", "top1_agreement", "teacher_top_prob_clean", "teacher_top_prob_adv")


@dataclass
class LabelGapFile(_Record):
    """``eval/label-gap-<checkpoint>.json``: the teacher's soft-label gap under the student's own training attack."""

    spec: dict[str, Any]
    attack: dict[str, Any]
    gap: dict[str, float | int]

    def check_values(self, where: str) -> None:
        """Every fraction the report shows is there and in [0, 1] (a missing one failed as an internal error)."""
        for key in LABEL_GAP_FRACTIONS:
            value = self.gap.get(key)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):  # NaN fails the comparison too
                raise DardError(f"{where}: gap.{key} is {shown(value, 40)}, not a fraction in [0, 1]")


# ------------------------------------------------------------------------------------------------ run.json


@dataclass
class TeacherQualityFile(_Record):
    """``eval/teacher.json``: the run's teacher on its own (clean and PGD-20 on the first test images), for the
    experiment spec and the teacher weights (``teacher["weights_digest"]``) it was measured with."""

    spec: dict[str, Any]
    teacher: dict[str, Any]
    record: EvalRecord

    def check_values(self, where: str) -> None:
        """Its record's counts are counts of its images (:func:`check_counts`): the report prints them."""
        check_counts(self.record, where, "record.")


def _empty_if_null(value: Any) -> Any:
    return {} if value is None else value


def _method_dict(value: Any) -> Any:
    """Older run.json files name the method by a string; newer ones hold its resolved config."""
    return {"name": value} if isinstance(value, str) else _empty_if_null(value)


def _run_label(value: str) -> str:
    try:
        return check_label(value, "run name")
    except DardError as e:  # as pydantic's ValueError, whose message then names the file and key
        raise ValueError(str(e)) from None


@dataclass
class RunInfo(_Record):
    """``run.json``: what a run is, written once when it starts (every field defaults, for older folders)."""

    name: Annotated[str, AfterValidator(_run_label)] | None = None
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
    # one entry per resume from a snapshot: when, the global step it resumed at and the environment it ran in
    # (commit, device, threads), which may differ from the first start's `environment`
    stretches: list[dict[str, Any]] | None = None
    # SHA-256 of the teacher's weights file as read (`sha256sum` of it; :func:`dard.training.setup.teacher_sha256`):
    # two students of teachers with one name but other weights are told apart; absent in older run folders
    teacher_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None

    _OPTIONAL = ("changes", "config_sha256", "stretches", "teacher_sha256")

    def check_values(self, where: str) -> None:
        """DardError naming ``where`` unless the numbers a report reads from the free-form sections are counts: the
        data's split sizes and each environment's process count (``"world_size": "x"`` or a 30-digit image count
        was an internal error of `dard report`)."""
        envs = [self.environment, *(s.get("environment") for s in self.stretches or [] if isinstance(s, dict))]
        fields = [(f"data.{k}", self.data.get(k), 0) for k in ("train", "val", "test")]
        fields += [("environment.world_size", e.get("world_size"), 1) for e in envs if isinstance(e, dict)]
        for key, value, low in fields:
            if value is not None and not (type(value) is int and low <= value <= 10**12):
                raise DardError(f"{where}: {key} is {shown(value, 40)}, not a count of at least {low}")

    def latest_environment(self) -> dict[str, Any]:
        """The environment of the run's latest stretch (its first start's when it never resumed)."""
        latest = (self.stretches or [{}])[-1].get("environment")
        return latest if isinstance(latest, dict) else self.environment


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
class CheckpointProvenance(_Record):
    """What a dard checkpoint's JSON (``best.json``, ``last.json``, ``epoch-NNN.json``) records beside its model
    spec: the epochs finished when it was saved, that epoch's metrics row and, for ``best``, the validation score
    that selected it. Eval records and teacher tables quote these, so a file's word is checked before it is."""

    epoch: Count | None = None
    metrics: EpochMetrics | None = None
    selected_by: Literal["val_robust", "val_clean", "val_sum"] | None = None


@dataclass
class ResumePointer(_Record):
    """``resume.json``: the name of the last complete snapshot folder."""

    snapshot: str
