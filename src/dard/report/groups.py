"""Which runs form one row of a report: the same resolved config but for the seed, on one dataset and threat model.

Runs are grouped by their seedless name and a hash of their recorded config without the seed, the name and the keys
that do not change the numbers (:mod:`dard.config.identity`, the definition `dard experiment` reuses runs by), so
two runs that differ in anything else (``method.params.lam``, epochs, the teacher's architecture) are two rows
even when they share a name. Rows that share a name get the differing keys appended, so every row's (and plot
legend's) name is unique. A table never mixes datasets, copies of one dataset's files (the records' data
fingerprints) or threat models, and a group never holds one seed twice.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dard.config.identity import NOT_IDENTITY, SEEDLESS, config_diff, config_identity, identity_hash, without_keys
from dard.errors import DardError
from dard.report.stats import group_name, teacher_arch
from dard.run_dir import RunRecord

__all__ = ["RunGroup", "check_one_table", "group_runs", "run_identity"]

_MAX_KEYS = 3  # differing keys shown in a row name


@dataclass
class RunGroup:
    """Runs that differ only in their seed: one row of a report."""

    name: str  # unique among the report's rows: the seedless run name, plus the differing keys where needed
    base_name: str  # the seedless run name
    key: str  # hash of the identity
    identity: dict[str, Any]
    members: list[RunRecord]


def run_identity(run: RunRecord) -> dict[str, Any]:
    """What must match for two runs to share a row: the recorded config without seed, name and the keys that do
    not change the numbers, and the teacher's architecture (its checkpoint path is not part of the config's
    identity). Runs without a config.yaml fall back to their run.json (method config, student, data name)."""
    if run.config is not None:
        try:
            config = config_identity(run.config, drop=SEEDLESS)
        except DardError:  # a config of another dard version: compare it as recorded
            config = without_keys(run.config, (*NOT_IDENTITY, *SEEDLESS))
    else:
        config = {"method": run.method, "student": run.student, "data": run.data.get("name")}
    return {"config": config, "teacher": teacher_arch(run)}


def group_runs(runs: Sequence[RunRecord]) -> list[RunGroup]:
    """The runs' groups in order of first appearance, with unique names; a group holding a seed twice is a
    one-line DardError."""
    groups: dict[tuple[str, str], RunGroup] = {}
    for r in runs:
        identity = run_identity(r)
        base, key = group_name(r), identity_hash(identity)
        g = groups.setdefault((base, key), RunGroup(base, base, key, identity, []))
        g.members.append(r)
    for g in groups.values():
        twice = [s for s, k in Counter(m.seed for m in g.members).items() if k > 1 and s is not None]
        if twice:
            paths = ", ".join(str(m.path) for m in g.members if m.seed == twice[0])
            raise DardError(
                f"'{g.base_name}' has seed {twice[0]} more than once ({paths}): the same run given twice, or a "
                "copy; give each run once"
            )
    out = list(groups.values())
    _unique_names(out)
    return out


def _unique_names(groups: list[RunGroup]) -> None:
    """Append the differing config keys (then a counter, if still needed) to names shared by several groups."""
    by_name: dict[str, list[RunGroup]] = {}
    for g in groups:
        by_name.setdefault(g.base_name, []).append(g)
    for same in by_name.values():
        if len(same) < 2:
            continue
        keys = list(
            dict.fromkeys(k for a in same for b in same if a is not b for k in config_diff(a.identity, b.identity))
        )
        for g in same:
            shown = [f"{k.removeprefix('config.')}={_value(g.identity, k)}" for k in keys[:_MAX_KEYS]]
            g.name = f"{g.base_name} ({', '.join(shown)})" if shown else g.base_name
    seen: Counter[str] = Counter()
    for g in groups:
        seen[g.name] += 1
        if seen[g.name] > 1:
            g.name = f"{g.name} #{seen[g.name]}"


def _value(identity: Mapping[str, Any], dotted: str) -> str:
    node: Any = identity
    for k in dotted.split("."):
        node = node.get(k) if isinstance(node, Mapping) else None
    return node if isinstance(node, str) else json.dumps(node, separators=(",", ":"))


def check_one_table(runs: Sequence[RunRecord], checkpoint: str) -> None:
    """A one-line DardError unless every run was evaluated on one dataset, one split of it (where the records say),
    one copy of its files (where the records have a data fingerprint) and one threat model."""
    checks = (
        ("datasets", _dataset),
        ("splits", _split),
        ("copies of the data", _data_copy),
        ("threat models", _threat),
    )
    for what, value in checks:
        seen: dict[str, list[str]] = {}
        for r in runs:
            v = value(r, checkpoint)
            if v is not None:
                seen.setdefault(v, []).append(r.name)
        if len(seen) > 1:
            parts = "; ".join(
                f"{v} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" for v, names in seen.items()
            )
            raise DardError(f"runs on different {what} cannot share one table: {parts}; report them separately")


def _dataset(run: RunRecord, checkpoint: str) -> str:
    rec = run.evals[checkpoint]
    return str(rec.data.get("name") or run.data.get("name") or "?")


def _split(run: RunRecord, checkpoint: str) -> str | None:
    """The split the record's images came from (dard's records say ``test``; a record of a validation split in a
    column of test accuracies is another test set)."""
    split = run.evals[checkpoint].data.get("split")
    return None if split is None else str(split)


def _data_copy(run: RunRecord, checkpoint: str) -> str | None:
    """The fingerprint of the files the record's images came from (None in older records and built-in data): a
    development copy (CIFAR-10 rebuilt from JPEGs) loads under the official name, and a row's mean or a column
    over both would mix two test sets."""
    data = run.evals[checkpoint].data
    fingerprint = data.get("fingerprint")
    if not isinstance(fingerprint, str):
        return None
    return f"{fingerprint[:12]} (official: {data.get('official', '?')})"


def _threat(run: RunRecord, checkpoint: str) -> str:
    tm = run.evals[checkpoint].threat_model
    eps = tm.get("eps")
    eps_text = f"{eps:.8g}" if isinstance(eps, (int, float)) else str(eps)
    return f"{tm.get('norm', '?')} eps {eps_text}"
