"""Which runs an experiment's per-run extras leave out, and why: one rule for each extra, read by
:func:`dard.experiment.extras.run_extras` (what it measures) and by the report (its sections name the runs left
out, which a reader could not tell from runs that were never there)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from dard.attacks.threat import NORM_NAMES
from dard.config import RunConfig
from dard.config.read import build_method
from dard.errors import DardError
from dard.experiment.reuse import distils, missing_teacher_weights
from dard.models import library_prefix
from dard.models.robustbench import weight_paths
from dard.report.markdown import md_text
from dard.run_dir import RunDir, RunRecord

#: why a run distilling from no teacher has no teacher-side extra
NO_TEACHER = "it distils from no teacher"


def gap_measures(cfg: RunConfig) -> bool:
    """Whether ``label_gap`` measures a planned run: it distils, and its training attack takes the true labels, as
    the gap's attack is given them (dard, pgdard, ard). RSLAD's and AdaAD's kl_pgd takes the teacher's
    probabilities or the teacher itself: given labels, it failed after the whole experiment had trained."""
    return distils(cfg) and getattr(build_method(cfg).attack, "target_kind", "labels") == "labels"


def label_gap_skip(cfg: RunConfig, folder: RunDir, checkpoint: str) -> str | None:
    """Why ``label_gap`` leaves the run out; None when it measures it."""
    if not distils(cfg):
        return NO_TEACHER
    if not gap_measures(cfg):
        attack = build_method(cfg).config().get("attack") or {}
        return f"its training attack ({attack.get('name', '?')}) takes no labels"
    if not folder.weights(checkpoint).exists():
        return f"its folder holds no {checkpoint} weights (imported without them)"
    return missing_teacher_weights(cfg)


def teacher_quality_skip(cfg: RunConfig, folder: RunDir) -> str | None:
    """Why ``teacher_quality`` leaves the run out; None when it measures it (a teacher whose weights are there: a
    dard checkpoint, external weights or a zoo model's files)."""
    if not distils(cfg):
        return NO_TEACHER
    why = _teacher_weights_missing(cfg)
    if why is not None:
        return why
    if not folder.is_evaluated():
        return "it has no final evaluation"
    return None


def measured_teacher(cfg: RunConfig) -> bool:
    """Whether ``teacher_quality`` can measure a planned run's teacher: it distils, and the teacher's weights are
    there (for the budget's estimate, before the run has trained)."""
    return distils(cfg) and _teacher_weights_missing(cfg) is None


def _teacher_weights_missing(cfg: RunConfig) -> str | None:
    """Why the teacher's weights cannot be read here; None when they can."""
    named = str(cfg.teacher.checkpoint or "")
    if cfg.teacher.weights is not None:
        return None if Path(cfg.teacher.weights).is_file() else "its teacher's weights file is not there"
    if library_prefix(named) == "robustbench:":
        try:
            files = weight_paths(named.split(":", 1)[1], cfg.data.name, NORM_NAMES[cfg.norm])
        except DardError as e:  # robustbench not installed here, say
            return f"its zoo teacher cannot be looked up here: {e}"
        return (
            None
            if files and all(p.is_file() for p in files)
            else "its zoo teacher's weights are not in the model folder"
        )
    return None if own_teacher(cfg) else "its teacher's checkpoint is not there"


def own_teacher(cfg: RunConfig) -> bool:
    """Whether a planned run distils from a dard checkpoint file that is there (not a zoo model by name)."""
    named = str(cfg.teacher.checkpoint or "")
    return distils(cfg) and bool(named) and not library_prefix(named) and Path(named).is_file()


def compare_skip(folder: RunDir, checkpoint: str) -> str | None:
    """Why ``compare_attacks`` leaves the run out; None when it measures it."""
    return None if folder.weights(checkpoint).exists() else f"its folder holds no {checkpoint} weights"


def left_out_lines(
    runs: Sequence[RunRecord], has: Callable[[RunDir], bool], why: Callable[[RunConfig, RunDir], str | None]
) -> list[str]:
    """The report's line naming the runs without a result (``has``), grouped by the reason ``why`` gives (read
    from each run's recorded config); [] when every run has one."""
    by_reason: dict[str, list[str]] = {}
    for run in runs:
        folder = RunDir(run.path)
        if has(folder):
            continue
        try:
            reason = why(folder.read_run_config(), folder) or "not measured yet"
        except DardError:
            reason = "its config.yaml does not read"
        by_reason.setdefault(reason, []).append(md_text(run.path.name))
    if not by_reason:
        return []
    parts = [f"{', '.join(names)} ({md_text(reason)})" for reason, names in by_reason.items()]
    return ["", f"Left out: {'; '.join(parts)}."]
