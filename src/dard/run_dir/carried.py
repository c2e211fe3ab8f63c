"""What a run carries when it travels (``dard export``, ``dard import`` from an archive or a folder): which of its
files may go, which must, and which kept checkpoints go whole.

A finished run carries its records (config, run.json, metrics, evaluation records, checkpoints' metadata) and may
leave its weights behind; an unfinished one must carry its resume state too (:func:`missing_files`). A checkpoint
kept by ``keep_epochs`` (``epoch-005``: the teachers of a teacher-quality ladder) travels as a pair or not at all
(:func:`kept_to_carry`): its metadata alone says nothing that another record does not, and its weights alone would
be read without the metadata that describes them.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from dard.errors import DardError
from dard.run_dir.layout import CHECKPOINTS, RunDir, kept_epoch
from dard.run_dir.pair import of_two_saves
from dard.run_dir.records import Progress


def record_names(run: RunDir) -> list[str]:
    """The record files a run folder may hold, relative to it: config, run.json, metrics, evaluations, the cached
    extras (the teacher measured on its own too: a report on the copy measured it again) and the checkpoints'
    metadata (never weights)."""
    paths = [run.config, run.run_info, run.metrics, run.teacher_quality_file]
    for c in CHECKPOINTS:
        paths += [run.checkpoint_meta(c), run.eval_file(c), run.compare_file(c), run.label_gap_file(c)]
        paths.append(run.eval_progress_file(c))  # an unfinished evaluation's finished attacks travel too
    return [_rel(run, p) for p in paths]


def weight_names(run: RunDir) -> list[str]:
    """The checkpoints' weights files of a run folder, relative to it."""
    return [_rel(run, run.weights(c)) for c in CHECKPOINTS]


def snapshot_names(run: RunDir) -> list[str]:
    """The resume pointer and the files of the snapshot it points at, relative to the run folder."""
    if not run.has_snapshot():
        return []
    snap = run.resume_snapshot()
    return [_rel(run, p) for p in (run.pointer, snap.weights, snap.optimizer, snap.progress)]


@dataclass(frozen=True)
class KeptCheckpoint:
    """One checkpoint kept by ``keep_epochs``: its name (``epoch-005``), its two files relative to the run folder
    (weights, metadata), and why it stays behind (empty if it travels)."""

    name: str
    weights: str
    meta: str
    why_not: str = ""


def kept_to_carry(run: RunDir) -> list[KeptCheckpoint]:
    """The run's kept checkpoints, each with why it cannot travel, if it cannot: one of its two files is missing,
    the two are of two saves (:func:`dard.run_dir.pair.of_two_saves`), or (an unfinished run) its epoch is past
    the one the resume snapshot has finished, so a resume sets it aside (:mod:`dard.training.state`)."""
    progress = None if run.is_evaluated() else run.read_progress()
    out = []
    for name in run.kept_checkpoints():
        weights, meta = run.weights(name), run.checkpoint_meta(name)
        why = ""
        if not (weights.is_file() and meta.is_file()):
            why = f"{(meta if weights.is_file() else weights).name} is missing"
        elif of_two_saves(weights, meta):
            why = "its two files are of two saves"
        elif progress is not None and set_aside_by_resume(name, progress):
            why = f"past epoch {progress.epoch}, where the resume snapshot is: a resume sets it aside"
        out.append(KeptCheckpoint(name, _rel(run, weights), _rel(run, meta), why))
    return out


def set_aside_by_resume(name: str, progress: Progress) -> bool:
    """Whether a resume from the snapshot ``progress`` sets aside the checkpoint ``name`` kept by ``keep_epochs``
    (``epoch-005``): its epoch is past those the snapshot has finished, so it was written after the snapshot (a run
    killed between the two) and training writes it again. The one rule behind what export and import carry and what
    a resume sets aside (:func:`dard.training.state.unrecorded_checkpoints`)."""
    epoch = kept_epoch(name)
    return epoch is not None and epoch > progress.epoch


def missing_files(finished: bool, files: Collection[str]) -> list[str]:
    """What a run carrying ``files`` (relative to its folder) lacks to be what it claims: a finished run its config,
    run.json, metrics, best checkpoint's metadata and evaluation record (its weights may stay behind); an
    unfinished one its config, run.json, resume pointer and a whole snapshot (weights, optimizer, progress), the
    only thing it can be continued from. Export and import alike: a run with only its config.yaml was placed as
    finished and refused by the report later."""
    probe = RunDir("r")
    if finished:
        need = [probe.config, probe.run_info, probe.metrics, probe.checkpoint_meta("best"), probe.eval_file("best")]
        return [_rel(probe, p) for p in need if _rel(probe, p) not in files]
    lacking = [_rel(probe, p) for p in (probe.config, probe.run_info, probe.pointer) if _rel(probe, p) not in files]
    snap = probe.snapshot(0)
    parts = [p.name for p in (snap.weights, snap.optimizer, snap.progress)]
    folders = {name.split("/")[0] for name in files if name.startswith("state-")}
    if not any(all(f"{folder}/{part}" in files for part in parts) for folder in folders):
        lacking.append(f"a whole resume snapshot (state-<step>/{', '.join(parts)})")
    return lacking


def check_carried(where: str, finished: bool, files: Collection[str]) -> None:
    """DardError naming ``where`` if :func:`missing_files` finds anything lacking, if an unfinished run carries a
    test evaluation record (whose presence makes a run folder finished), or if a kept checkpoint comes without the
    other file of its pair."""
    lacking = missing_files(finished, files)
    if lacking:
        state = "finished" if finished else "unfinished"
        raise DardError(f"{where} is {state} but lacks {', '.join(lacking)}: nothing usable to carry")
    evaluated = _rel(RunDir("r"), RunDir("r").eval_file("best"))
    if not finished and evaluated in files:
        raise DardError(f"{where} is not finished by its manifest but has {evaluated}")
    stems = [Path(f).stem for f in files if "/" not in f and kept_epoch(Path(f).stem) is not None]
    halves = sorted(stem for stem in set(stems) if stems.count(stem) != 2)
    if halves:
        raise DardError(f"{where} carries one file of kept checkpoint {halves[0]}; it travels whole or not at all")


def allowed(rel: str) -> bool:
    """Whether ``rel`` names a file a run folder may hold (records, weights, kept checkpoints, one snapshot's
    files)."""
    probe = RunDir("r")
    if rel in record_names(probe) or rel in weight_names(probe) or rel == "resume.json":
        return True
    if "/" not in rel and rel.endswith((".safetensors", ".json")) and kept_epoch(Path(rel).stem) is not None:
        return True
    parts = rel.split("/")
    if len(parts) != 2 or not re.fullmatch(r"state-\d{1,18}", parts[0]):
        return False
    snap = probe.snapshot(int(parts[0].removeprefix("state-")))
    return rel in {_rel(probe, p) for p in (snap.weights, snap.optimizer, snap.progress)}


def _rel(run: RunDir, path: Path) -> str:
    return path.relative_to(run.path).as_posix()
