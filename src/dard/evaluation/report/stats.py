"""The numbers of a report: runs grouped by everything but their seed, per-run accuracies and mean ± std per group.

The row dicts built here are the ``runs`` and ``groups`` of ``results.json`` as written.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dard.run_dir import CHECKPOINTS, EvalFile, RunRecord

DASH = "—"
_SEED_SUFFIX = re.compile(r"(-s\d+|_seed\d+)$")
_AA = "autoattack"


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


def group_runs(runs: Sequence[RunRecord], checkpoint: str) -> dict[tuple, list[RunRecord]]:
    """Runs that differ only in seed (name without its seed suffix, method, student, teacher and threat model),
    in order of first appearance."""
    groups: dict[tuple, list[RunRecord]] = {}
    for r in runs:
        rec = r.evals.get(checkpoint) or next(iter(r.evals.values()))
        eps = rec.threat_model.get("eps")
        key = (
            group_name(r),
            r.method.get("name"),
            r.student.get("arch"),
            teacher_arch(r),
            rec.threat_model.get("norm"),
            round(eps, 8) if isinstance(eps, (int, float)) else eps,
        )
        groups.setdefault(key, []).append(r)
    return groups


def autoattack_result(rec: EvalFile) -> dict[str, Any] | None:
    """``{"accuracy", "n"}`` of the AutoAttack subset evaluation of a record, None if it has none."""
    sub = rec.autoattack_subset
    if not sub:
        return None
    res = sub.attacks.get(_AA) or next(iter(sub.attacks.values()), None)
    if res is None:
        return None
    return {"accuracy": res.accuracy, "n": sub.data.get("n", res.total)}


def record_accuracies(rec: EvalFile | None) -> dict[str, Any]:
    """Flat numbers of one evaluation record: clean, each attack label, autoattack (subset), worst_case, epoch."""
    if rec is None:
        return {}
    out: dict[str, Any] = {"epoch": rec.model.get("epoch"), "clean": rec.clean.get("accuracy")}
    for label, res in rec.attacks.items():
        out[label] = res.accuracy
    aa = autoattack_result(rec)
    if aa is not None:
        out["autoattack_subset"] = aa["accuracy"]
        out["autoattack_subset_n"] = aa["n"]
    out["worst_case"] = (rec.worst_case or {}).get("accuracy")
    return out


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std" (sample; None below 2 values), "n", "values"}`` of the numeric entries of ``values``."""
    vals = [float(v) for v in values if isinstance(v, (int, float))]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) >= 2 else None,
        "n": len(vals),
        "values": vals,
    }


def format_summary(summary: Mapping[str, Any] | None, *, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` (sample std; the mean alone below 2 values) of a summary times ``scale``: by default a
    fraction shown as a percentage with 2 decimals."""
    if not summary or summary.get("mean") is None:
        return DASH
    text = f"{scale * summary['mean']:.{digits}f}"
    if summary.get("n", 0) >= 2 and summary.get("std") is not None:
        text += f" ± {scale * summary['std']:.{digits}f}"
    return text


def record_flags(rec: EvalFile) -> list[str]:
    """The sanity flags of a record, with those of its AutoAttack subset evaluation."""
    flags = [str(f) for f in rec.flags]
    if rec.autoattack_subset:
        flags += [f"autoattack subset: {f}" for f in rec.autoattack_subset.flags]
    return flags


def run_row(run: RunRecord, checkpoint: str) -> dict[str, Any]:
    """One run's entry of ``results.json``."""
    rec = run.evals[checkpoint]
    return {
        "name": run.name,
        "group": group_name(run),
        "path": str(run.path),
        "seed": run.seed,
        "method": run.method,
        "student": run.student.get("arch"),
        "teacher": teacher_arch(run),
        "data": run.data,
        "threat_model": rec.threat_model,
        **{w: record_accuracies(run.evals.get(w)) or None for w in CHECKPOINTS},
        "flags": {w: record_flags(run.evals[w]) for w in CHECKPOINTS if w in run.evals},
        "eps_sweep": rec.eps_sweep.to_dict() if rec.eps_sweep else None,
        "train_seconds": run.train_seconds,
        "train_images_per_s": run.train_images_per_s,
        "device": run.device,
    }


def group_row(key: tuple, members: Sequence[RunRecord], metric_keys: Sequence[str]) -> dict[str, Any]:
    """One group's entry of ``results.json``: mean ± std over its seeds of every metric, per checkpoint."""
    g: dict[str, Any] = {
        "name": key[0],
        "method": key[1],
        "student": key[2],
        "teacher": key[3],
        "threat_model": {"norm": key[4], "eps": key[5]},
        "runs": [m.name for m in members],
        "seeds": [m.seed for m in members],
        "n": len(members),
        "train_minutes": summarize([m.train_seconds / 60 for m in members if m.train_seconds is not None]),
        "train_images_per_s": summarize([m.train_images_per_s for m in members]),
        "devices": ordered_union([m.device] for m in members),
    }
    for w in CHECKPOINTS:
        accs = [a for a in (record_accuracies(m.evals.get(w)) for m in members) if a]
        g[w] = {k: summarize([a.get(k) for a in accs]) for k in metric_keys} if accs else None
        if g[w] is not None:
            g[w]["epochs"] = [a.get("epoch") for a in accs]
    return g
