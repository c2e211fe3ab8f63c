"""The numbers of a report: runs grouped by everything but their seed, per-run accuracies and mean ± std per group.

The row dicts built here are the ``runs`` and ``groups`` of ``results.json`` as written.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from dard.evaluation.record import EvalRecord
from dard.evaluation.rounding import rounded
from dard.evaluation.table import ci_text
from dard.report.columns import AA_CLEAN, AA_KEY, AA_PGD
from dard.run_dir import CHECKPOINTS, EvalFile, RunRecord

DASH = "—"
_SEED_SUFFIX = re.compile(r"(-s\d+|_seed\d+)$")
_AA = "autoattack"
_PGD = "pgd20"


def seedless_name(name: str) -> str:
    """``name`` without a trailing seed suffix (``-s<digits>`` or ``_seed<digits>``)."""
    return _SEED_SUFFIX.sub("", name)


def group_name(run: RunRecord) -> str:
    """The recorded run name without a trailing seed suffix (``-s<digits>`` or ``_seed<digits>``).

    Falls back to ``<method>-<student arch>`` when the run has no name.
    """
    stripped = seedless_name(str(run.info.name or ""))
    if stripped:
        return stripped
    return f"{run.method.get('name', '?')}-{run.student.get('arch', '?')}"


def teacher_arch(run: RunRecord) -> str | None:
    return run.teacher.get("arch") if isinstance(run.teacher, Mapping) else None


def ordered_union(lists: Iterable[Iterable[str]]) -> list[str]:
    """Every item of ``lists`` once, in order of first appearance."""
    seen: dict[str, None] = {}
    for items in lists:
        for x in items:
            seen.setdefault(x, None)
    return list(seen)


def autoattack_result(rec: EvalFile) -> dict[str, Any] | None:
    """``{"accuracy", "correct", "n", "clean", "clean_correct", "seconds", "stages"}`` of the AutoAttack subset
    evaluation of a record (``clean``: the clean accuracy of the same subset; ``stages``: the robust accuracy after
    each stage of its cascade, absent in older records), None if it has none."""
    sub = rec.autoattack_subset
    if not sub:
        return None
    res = sub.attacks.get(_AA) or next(iter(sub.attacks.values()), None)
    if res is None:
        return None
    stages = {k: v / max(res.total, 1) for k, v in (res.stages or {}).items()}
    return {
        "accuracy": res.accuracy,
        "correct": res.correct,
        "n": sub.data.get("n", res.total),
        "clean": sub.clean.accuracy,
        "clean_correct": sub.clean.correct,
        "seconds": res.seconds,
        "stages": stages,
    }


def _above_own_clean(rec: EvalRecord) -> dict[str, str]:
    """Count keys of ``rec`` (attack labels, worst_case) with more images correct than its clean count of the same
    images -> why."""
    clean = rec.clean
    return {
        key: f"{key}: {c.correct} robust above {clean.correct} clean of the same {c.total} images"
        for key, c in rec.counts().items()
        if key != "clean" and c.total == clean.total and c.correct > clean.correct
    }


def above_clean(rec: EvalFile) -> dict[str, str]:
    """The robust accuracies of a record that count more images correct than its clean accuracy on the same images
    (possible only in records made before robust accuracy required clean correctness): metric key -> why it is
    not shown. Compared as counts, so an exact tie is not flagged; AutoAttack against its own subset's clean."""
    out = _above_own_clean(rec)
    sub = _above_own_clean(rec.autoattack_subset) if rec.autoattack_subset is not None else {}
    out.update({key: sub[label] for key, label in ((AA_KEY, _AA), (AA_PGD, _PGD)) if label in sub})
    return out


def record_accuracies(rec: EvalFile | None) -> dict[str, Any]:
    """Flat numbers of one evaluation record: clean, each attack label, autoattack (subset), worst_case, epoch."""
    if rec is None:
        return {}
    out: dict[str, Any] = {"epoch": rec.model.get("epoch"), "clean": rec.clean.accuracy}
    for label, res in rec.attacks.items():
        out[label] = res.accuracy
    aa = autoattack_result(rec)
    if aa is not None:
        out[AA_KEY] = aa["accuracy"]
        out[AA_CLEAN] = aa["clean"]
        out["autoattack_subset_n"] = aa["n"]
        pgd = rec.autoattack_subset.attacks.get(_PGD) if rec.autoattack_subset else None
        out[AA_PGD] = pgd.accuracy if pgd is not None else None
    out["worst_case"] = rec.worst_case.accuracy if rec.worst_case is not None else None
    for key in above_clean(rec):  # robust above clean on the same images is never printed (flagged instead)
        out[key] = None
    return out


def record_points(rec: EvalFile | None) -> dict[str, int]:
    """The number of test points behind each accuracy of :func:`record_accuracies` (for confidence intervals)."""
    if rec is None:
        return {}
    out = {"clean": rec.clean.total}
    out.update({label: res.total for label, res in rec.attacks.items()})
    aa = autoattack_result(rec)
    if aa is not None:
        out[AA_KEY] = out[AA_CLEAN] = out[AA_PGD] = int(aa["n"])
    if rec.worst_case:
        out["worst_case"] = rec.worst_case.total
    return out


def record_seconds(rec: EvalFile | None) -> dict[str, float]:
    """Wall time of each attack of a record (and of its AutoAttack subset run), in seconds."""
    if rec is None:
        return {}
    out = {label: res.seconds for label, res in rec.attacks.items()}
    aa = autoattack_result(rec)
    if aa is not None:
        out["autoattack_subset"] = aa["seconds"]
    return out


def record_stages(rec: EvalFile | None) -> dict[str, float]:
    """AutoAttack's robust accuracy after each stage (APGD-CE, APGD-T, FAB-T, Square), from the subset run or an
    ``autoattack`` label of the suite; {} when not recorded (older records)."""
    if rec is None:
        return {}
    aa = autoattack_result(rec)
    if aa is not None and aa["stages"]:
        return dict(aa["stages"])
    res = rec.attacks.get(_AA)
    return {k: v / max(res.total, 1) for k, v in (res.stages or {}).items()} if res is not None else {}


def summarize(values: Sequence[float | None], points: int | None = None) -> dict[str, Any]:
    """``{"mean", "std" (sample; None below 2 values), "n", "values"}`` of the numeric entries of ``values``; with
    ``points`` (the test points behind each value, for accuracies) also ``"points"``."""
    vals = [float(v) for v in values if isinstance(v, (int, float))]
    out: dict[str, Any] = {
        "mean": _mean(vals) if vals else None,
        "std": statistics.stdev(vals) if len(vals) >= 2 else None,
        "n": len(vals),
        "values": vals,
    }
    if points is not None:
        out["points"] = points
    return out


def _mean(values: Sequence[float]) -> float:
    """The mean of the decimal forms of ``values``: two seeds at 28.01% and 29.00% are 28.505%, which
    :func:`statistics.fmean` of the binary floats put a hair below (shown 28.50, not 28.51)."""
    return float(sum(Decimal(repr(v)) for v in values) / len(values))


def format_summary(summary: Mapping[str, Any] | None, *, scale: float = 100.0, digits: int = 2, marks: str = "") -> str:
    """``mean ± std`` (sample std; the mean alone below 2 values) of a summary times ``scale``: by default a
    fraction shown as a percentage with 2 decimals. An accuracy measured on fewer than 10,000 test points
    (``points``) is followed by its Wilson 95% interval ``[lo, hi]`` at the mean (the test-set sampling error of
    one run). ``marks`` (significance marks) follow the number, before the interval."""
    if not summary or summary.get("mean") is None:
        return DASH
    text = rounded(summary["mean"], digits, scale=scale)
    if summary.get("n", 0) >= 2 and summary.get("std") is not None:
        text += f" ± {rounded(summary['std'], digits, scale=scale)}"
    text += f" {marks}" if marks else ""
    ci = ci_text(summary["mean"], summary["points"]) if summary.get("points") else ""
    return f"{text} {ci}" if ci else text


def record_flags(rec: EvalFile) -> list[str]:
    """The sanity flags of a record, with those of its AutoAttack subset evaluation."""
    flags = [str(f) for f in rec.flags]
    if rec.autoattack_subset:
        flags += [f"autoattack subset: {f}" for f in rec.autoattack_subset.flags]
    flags += [
        f"{why}: not shown (a record made before robust accuracy required clean correctness)"
        for why in above_clean(rec).values()
    ]
    return flags


def run_row(run: RunRecord, checkpoint: str, group: str | None = None) -> dict[str, Any]:
    """One run's entry of ``results.json`` (``group``: the name of its row)."""
    rec = run.evals[checkpoint]
    return {
        "name": run.name,
        "group": group or group_name(run),
        "path": str(run.path),
        "seed": run.seed,
        "method": run.method,
        "student": run.student.get("arch"),
        "teacher": teacher_arch(run),
        # which teacher file it learned from (the SHA-256 of its weights: None in older run.json files)
        "teacher_source": run.teacher.get("source") if isinstance(run.teacher, Mapping) else None,
        "teacher_sha256": run.info.teacher_sha256,
        "data": run.data,
        "threat_model": rec.threat_model,
        **{w: record_accuracies(run.evals.get(w)) or None for w in CHECKPOINTS},
        "points": {w: record_points(run.evals[w]) for w in CHECKPOINTS if w in run.evals},
        "attack_seconds": record_seconds(rec),
        "autoattack_stages": record_stages(rec) or None,
        "flags": {w: record_flags(run.evals[w]) for w in CHECKPOINTS if w in run.evals},
        "eps_sweep": rec.eps_sweep.to_dict() if rec.eps_sweep else None,
        "train_seconds": run.train_seconds,
        "train_images_per_s": run.train_images_per_s,
        "device": run.device,
    }


def group_row(
    name: str, key: str, members: Sequence[RunRecord], metric_keys: Sequence[str], checkpoint: str
) -> dict[str, Any]:
    """One group's entry of ``results.json``: mean ± std over its seeds of every metric, per checkpoint (with the
    test points behind each accuracy), attack times and AutoAttack stages at ``checkpoint``."""
    first = members[0]
    g: dict[str, Any] = {
        "name": name,
        "identity": key,
        "method": first.method.get("name"),
        "student": first.student.get("arch"),
        "teacher": teacher_arch(first),
        "threat_model": dict(first.evals[checkpoint].threat_model),
        "runs": [m.name for m in members],
        "seeds": [m.seed for m in members],
        "n": len(members),
        "train_minutes": summarize([m.train_seconds / 60 for m in members if m.train_seconds is not None]),
        "train_images_per_s": summarize([m.train_images_per_s for m in members]),
        "devices": ordered_union([m.device] for m in members),
    }
    for w in CHECKPOINTS:
        recs = [m.evals[w] for m in members if w in m.evals]
        accs = [record_accuracies(r) for r in recs]
        points = [record_points(r) for r in recs]
        g[w] = {k: summarize([a.get(k) for a in accs], _points(points, k)) for k in metric_keys} if accs else None
        if g[w] is not None:
            g[w]["epochs"] = [a.get("epoch") for a in accs]
    recs = [m.evals[checkpoint] for m in members]
    points = [record_points(r) for r in recs]
    g["eps_sweep"] = _summaries([r.eps_sweep.accuracies() for r in recs if r.eps_sweep]) or None
    g["attack_seconds"] = _summaries([record_seconds(r) for r in recs])
    aa_points = _points(points, "autoattack_subset") or _points(points, _AA)
    g["autoattack_stages"] = _summaries([record_stages(r) for r in recs], aa_points)
    return g


def _points(per_run: Sequence[Mapping[str, int]], key: str) -> int | None:
    """The test points behind metric ``key`` in every run (the smallest, if they differ); None if unknown."""
    values = [p[key] for p in per_run if key in p]
    return min(values) if values else None


def _summaries(per_run: Sequence[Mapping[str, float]], points: int | None = None) -> dict[str, Any]:
    """Mean ± std over runs of every key any run has."""
    keys = ordered_union(d.keys() for d in per_run)
    return {k: summarize([d.get(k) for d in per_run], points) for k in keys}
