"""The plain-text table of an evaluation, as `dard eval` and the end of `dard train` print it."""

from __future__ import annotations

from collections.abc import Mapping

from dard.attacks.threat import NORM_NAMES, budget_text
from dard.evaluation.intervals import CI_BELOW, wilson_interval
from dard.evaluation.rounding import percent
from dard.evaluation.suite import EvalRecord

__all__ = ["ci_text", "format_evaluations", "format_table", "threat_text"]

#: AutoAttack's stage names as its paper writes them
STAGE_NAMES = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square", "apgd-dlr": "APGD-DLR"}


def ci_text(accuracy: float, n: int, *, digits: int = 1) -> str:
    """``[lo, hi]`` in %: the Wilson 95% interval of ``accuracy`` on ``n`` points; empty from :data:`CI_BELOW` points
    on (where it is within about a point)."""
    if n >= CI_BELOW or n < 1:
        return ""
    lo, hi = wilson_interval(accuracy, n)
    return f"[{percent(lo, digits)}, {percent(hi, digits)}]"


def threat_text(norm: str, eps: float) -> str:
    """``Linf eps=0.03137 (8.00/255)``, ``L2 eps=0.5``: the threat model as the tables head it."""
    name = NORM_NAMES.get(norm.lower(), norm)
    if norm.lower() == "l2":
        return f"{name} eps={budget_text(eps, norm)}"
    return f"{name} eps={eps:.5f} ({budget_text(eps, norm, levels='.2f')})"


def format_table(record: EvalRecord) -> str:
    """The record's accuracies with their 95% intervals, counts, perturbation sizes and times, one row per attack
    (AutoAttack's stages indented under it), then the worst case."""
    rows = [("clean", record.clean.accuracy, record.clean.correct, record.clean.total, "", "")]
    for label, r in record.attacks.items():
        size = budget_text(r.max_perturbation, str(r.config.get("norm", "linf")), levels=".2f")  # in the attack's norm
        rows.append((label, r.accuracy, r.correct, r.total, size, f"{r.seconds:.1f}"))
        for stage, correct in (r.stages or {}).items():
            rows.append((f"  {STAGE_NAMES.get(stage, stage)}", correct / max(r.total, 1), correct, r.total, "", ""))
    if record.worst_case is not None:
        w = record.worst_case
        rows.append(("worst-case", w.accuracy, w.correct, w.total, "", ""))
    lines = [f"{'attack':<12} {'accuracy':>9} {'95% CI':>14} {'correct':>11} {'max |d|':>10} {'seconds':>8}"]
    for label, acc, c, n, pert, sec in rows:
        lines.append(f"{label:<12} {percent(acc):>8}% {ci_text(acc, n):>14} {f'{c}/{n}':>11} {pert:>10} {sec:>8}")
    return "\n".join(lines)


def format_evaluations(evals: Mapping[str, EvalRecord]) -> str:
    """The test tables of a run's evaluated checkpoints (``{"best": EvalFile, ...}``), each followed by its AutoAttack
    subset table and its flags: what the end of `dard train` prints."""
    parts = []
    for which, rec in evals.items():
        shared = rec.model.get("checkpoint")
        if shared != which and which in (rec.model.get("checkpoints") or []) and shared in evals:
            parts.append(f"test evaluation, {which} checkpoint: the same weights as {shared}, evaluated once (above)")
            continue
        eps = float(rec.threat_model.get("eps", 0.0))
        parts.append(
            f"test evaluation, {which} checkpoint (epoch {rec.model.get('epoch')}): {rec.data.get('name')} "
            f"test, {rec.clean.total} images, {threat_text(str(rec.threat_model.get('norm', 'linf')), eps)}"
        )
        parts.append(format_table(rec))
        subset = getattr(rec, "autoattack_subset", None)  # an EvalFile's extra
        if subset is not None:
            parts.append(f"AutoAttack on the first {subset.clean.total} test images:")
            parts.append(format_table(subset))
        flags = [*rec.flags, *(f"autoattack subset: {f}" for f in (subset.flags if subset else []))]
        parts += [f"WARNING: {f}" for f in flags]
    return "\n".join(parts)
