"""The layout of a run folder: every file name in one place, with typed readers and atomic writers.

::

    <run>/config.yaml                  the resolved run config (YAML), written when the run starts
    <run>/run.json                     RunInfo: name, seed, method config, student/teacher, environment, data sizes,
                                       each resume's environment (stretches)
    <run>/metrics.jsonl                one EpochMetrics per finished epoch
    <run>/best.safetensors, best.json  the checkpoint selected on the validation split (dard.checkpoint format)
    <run>/last.safetensors, last.json  the last epoch's checkpoint
    <run>/epoch-<E>.safetensors, .json the checkpoint of epoch E (keep_epochs), epoch-005 (three digits at least)
    <run>/state-<step>/                a resume snapshot: student.safetensors, optim.pt, progress.json (Progress)
    <run>/resume.json                  ResumePointer: the last complete snapshot
    <run>/eval/<checkpoint>.json       EvalFile: the test-split evaluation of a checkpoint
    <run>/eval/compare-<checkpoint>.json, eval/label-gap-<checkpoint>.json   experiment extras (cached)
    <run>/eval/progress-<checkpoint>.json   EvalProgress: an unfinished test evaluation's finished attacks
    <run>/eval/teacher.json            TeacherQualityFile: the run's teacher on its own (experiment extra, cached)
    <run>/.dard.lock                   the exclusive lock, while a process writes the folder (dard.run_dir.lock)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from dard.config import RunConfig, parse_config
from dard.errors import DardError
from dard.io import check_target, is_temp_name, set_aside, write_bytes, write_json, write_text
from dard.reading import read_file_bytes
from dard.run_dir.files import own_file, read_json_file, read_jsonl_file
from dard.run_dir.lock import LOCK_NAME, FolderLock
from dard.run_dir.records import (
    CompareFile,
    EpochMetrics,
    EvalFile,
    EvalProgress,
    LabelGapFile,
    Progress,
    ResumePointer,
    RunInfo,
    TeacherQualityFile,
)
from dard.run_dir.snapshot import Snapshot
from dard.yaml_files import MAX_YAML_BYTES, read_yaml_mapping

CHECKPOINTS = ("best", "last")
T = TypeVar("T")
_SNAPSHOT = re.compile(r"state-\d+")
_KEPT = re.compile(r"epoch-(\d{3,18})")


class RunDir:
    """A run folder: the named paths of its files, and typed, strict readers and atomic writers for them.

    Every reader turns a missing or malformed file into a one-line :class:`DardError` naming it (see
    :mod:`dard.run_dir.files`), except :meth:`read_progress`, which answers None for "no usable resume state".
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._config_sha256: str | None = None  # of the config.yaml this object wrote (recorded in run.json)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------------------------------- paths
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def run_info(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    def eval_file(self, checkpoint: str) -> Path:
        return self.eval_dir / f"{checkpoint}.json"

    def compare_file(self, checkpoint: str) -> Path:
        return self.eval_dir / f"compare-{checkpoint}.json"

    def label_gap_file(self, checkpoint: str) -> Path:
        return self.eval_dir / f"label-gap-{checkpoint}.json"

    def eval_progress_file(self, checkpoint: str) -> Path:
        return self.eval_dir / f"progress-{checkpoint}.json"

    @property
    def teacher_quality_file(self) -> Path:
        return self.eval_dir / "teacher.json"

    def checkpoint(self, which: str) -> Path:
        """The checkpoint ``which`` (best/last) without suffix, as :func:`dard.checkpoint.save_checkpoint` takes it."""
        return self.path / which

    def weights(self, which: str) -> Path:
        return self.path / f"{which}.safetensors"

    def checkpoint_meta(self, which: str) -> Path:
        """The checkpoint's JSON metadata (its format is :mod:`dard.checkpoint`'s)."""
        return self.path / f"{which}.json"

    @property
    def pointer(self) -> Path:
        return self.path / "resume.json"

    def snapshot(self, global_step: int) -> Snapshot:
        return Snapshot(self.path / f"state-{int(global_step):09d}")

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot folder present (complete or not)."""
        return [Snapshot(p) for p in sorted(self.path.glob("state-*")) if _SNAPSHOT.fullmatch(p.name)]

    @property
    def lock_file(self) -> Path:
        """The exclusive lock's file (:mod:`dard.run_dir.lock`), present while a process writes the folder."""
        return self.path / LOCK_NAME

    def lock(self) -> FolderLock:
        """The folder's exclusive lock, taken by every writer (training, final evaluation, `dard eval --out` into
        ``eval/``, experiment extras) around its writes: a context manager, or ``acquire(create=)``/``release()``."""
        return FolderLock(self.path, "run folder", subfolders=(self.eval_dir.name,))

    # ------------------------------------------------------------------------------------------- state
    def is_empty(self) -> bool:
        """Absent, or an empty folder but for a lock and a killed writer's temp files: a fresh run may start here."""
        if not self.path.is_dir():
            return not self.path.exists()
        return not any(p.name != LOCK_NAME and not is_temp_name(p.name) for p in self.path.iterdir())

    def is_run(self) -> bool:
        """Whether a run was started here (its config is recorded)."""
        return self.config.exists()

    def require_run(self) -> None:
        """DardError unless a run was started here."""
        if not self.is_run():
            raise DardError(f"{self.path} is not a dard run folder (no {self.config.name})")

    def is_trained(self) -> bool:
        """Whether training finished far enough to have a selected checkpoint."""
        return self.weights("best").exists()

    def is_evaluated(self) -> bool:
        """Whether the test evaluation of the selected checkpoint is written (the run is finished)."""
        return self.eval_file("best").exists()

    def has_snapshot(self) -> bool:
        return self.pointer.exists()

    def files(self) -> list[Path]:
        """Every file path this layout defines that is present or may be written (snapshots: those present)."""
        paths = [self.config, self.run_info, self.metrics, self.pointer, self.lock_file, self.teacher_quality_file]
        for c in CHECKPOINTS:
            paths += [self.weights(c), self.checkpoint_meta(c), self.eval_file(c)]
            paths += [self.compare_file(c), self.label_gap_file(c), self.eval_progress_file(c)]
        for name in self.kept_checkpoints():
            paths += [self.weights(name), self.checkpoint_meta(name)]
        for snap in self.snapshots():
            paths += [snap.weights, snap.optimizer, snap.progress]
        return paths

    def kept_checkpoints(self) -> list[str]:
        """The checkpoints kept by ``keep_epochs`` present (either file), by name: ``epoch-005``, in epoch order."""
        epochs = {kept_epoch(p.stem) for p in self.path.glob("epoch-*") if p.suffix in (".safetensors", ".json")}
        return [kept_epoch_name(e) for e in sorted(e for e in epochs if e is not None)]

    def check_files(self) -> None:
        """The write rule (:func:`dard.io.check_target`) over the whole folder, before a writer starts: a link,
        FIFO or device where one of its files or folders belongs is a one-line DardError, and nothing is written."""
        for path in self.files():
            check_target(path, self.path)

    # ------------------------------------------------------------------------------------------- reading
    def holds(self, path: Path, what: str) -> bool:
        """Whether the run's file ``path`` is there, a regular file of the run (:func:`files.own_file`)."""
        return own_file(path, self.path, what)

    def read_config(self) -> dict[str, Any]:
        """The recorded run config as a plain mapping, as written (:meth:`read_run_config` validates it)."""
        if not self.holds(self.config, "run config"):
            self.require_run()
        return read_yaml_mapping(self.config, "run config")

    def read_run_config(self) -> RunConfig:
        """The recorded run config, validated (not built: :func:`dard.config.parse_config`), the one way to read it;
        options added since the run was made count at their defaults. A DardError names ``config.yaml``."""
        data = self.read_config()
        try:
            return parse_config(data, build=False)
        except DardError as e:
            raise DardError(f"{self.config}: {e}") from None

    def read_info(self) -> RunInfo:
        self.holds(self.run_info, "run record")
        return read_json_file(self.run_info, RunInfo, "run record")

    def read_metrics(self) -> list[EpochMetrics]:
        """The rows of metrics.jsonl ([] when absent), one per epoch in increasing order: dard writes them so, and a
        repeated row would count twice in a report's curves and in how far along an import judges the run."""
        rows = read_jsonl_file(self.metrics, EpochMetrics, "metrics") if self.holds(self.metrics, "metrics") else []
        for i, (before, row) in enumerate(zip(rows, rows[1:]), start=2):
            if row.epoch <= before.epoch:
                raise DardError(f"{self.metrics}: row {i} is epoch {row.epoch}, after epoch {before.epoch}")
        return rows

    def read_eval(self, checkpoint: str) -> EvalFile:
        self.holds(self.eval_file(checkpoint), "evaluation record")
        return read_json_file(self.eval_file(checkpoint), EvalFile, "evaluation record")

    def read_evals(self) -> dict[str, EvalFile]:
        """The evaluation records present, by checkpoint (best first)."""
        return {w: self.read_eval(w) for w in CHECKPOINTS if self.holds(self.eval_file(w), "evaluation record")}

    # the optional files: None when absent
    def read_compare(self, checkpoint: str) -> CompareFile | None:
        """The cached attack comparison of ``checkpoint``."""
        return self._optional(self.compare_file(checkpoint), CompareFile, "attack comparison")

    def read_label_gap(self, checkpoint: str) -> LabelGapFile | None:
        """The cached teacher soft-label gap of ``checkpoint``."""
        return self._optional(self.label_gap_file(checkpoint), LabelGapFile, "label gap")

    def read_eval_progress(self, checkpoint: str) -> EvalProgress | None:
        """The unfinished test evaluation of ``checkpoint``."""
        return self._optional(self.eval_progress_file(checkpoint), EvalProgress, "evaluation progress")

    def read_teacher_quality(self) -> TeacherQualityFile | None:
        """The cached measurement of the run's teacher on its own."""
        return self._optional(self.teacher_quality_file, TeacherQualityFile, "teacher quality")

    def _optional(self, path: Path, kind: type[T], what: str) -> T | None:
        """``path`` read as ``kind`` (strictly), None when it is absent."""
        return read_json_file(path, kind, what) if self.holds(path, what) else None

    def resume_snapshot(self) -> Snapshot:
        """The snapshot ``resume.json`` points at (DardError if there is no pointer or it is malformed)."""
        if not self.has_snapshot():
            raise DardError(
                f"{self.path} has no {self.pointer.name}: nothing to resume (was it started by `dard train`?)"
            )
        self.holds(self.pointer, "resume pointer")
        name = read_json_file(self.pointer, ResumePointer, "resume pointer").snapshot
        if not _SNAPSHOT.fullmatch(name):
            raise DardError(f"{self.pointer}: snapshot {name!r} is not a snapshot folder name (state-<step>)")
        return Snapshot(self.path / name)

    def read_progress(self) -> Progress | None:
        """The progress of the snapshot ``resume.json`` points at, or None if there is none or it is unreadable."""
        try:
            return self.resume_snapshot().read_progress()
        except DardError:
            return None

    # ------------------------------------------------------------------------------------------- writing
    def write_config(self, text: str) -> Path:
        """Write config.yaml; the next :meth:`write_info` records the SHA-256 of exactly these bytes."""
        data = text.encode("utf-8")
        self._config_sha256 = hashlib.sha256(data).hexdigest()
        return write_bytes(self.config, data, root=self.path)

    def write_info(self, info: RunInfo) -> Path:
        """Write run.json (with the hash of the config.yaml this object wrote, if it wrote one)."""
        if self._config_sha256 is not None:
            info.config_sha256 = self._config_sha256
        return write_json(self.run_info, info.to_dict(), root=self.path)

    def check_config_unchanged(self) -> None:
        """DardError if config.yaml's bytes differ from those run.json records dard wrote (folders from before
        the hash was recorded pass): a resume continues the run as recorded, not a config edited since."""
        if not self.run_info.is_file():
            return
        want = self.read_info().config_sha256
        if want is None:
            return
        # bounded as every reader of a config is (a FIFO there blocked, a huge file was read whole: dard export)
        raw = read_file_bytes(
            self.config, "run config", MAX_YAML_BYTES, f" (a run config may have {MAX_YAML_BYTES} bytes)"
        )
        have = hashlib.sha256(raw).hexdigest()
        if have != want:
            raise DardError(
                f"{self.config} was changed after dard wrote it (its SHA-256 is not the one {self.run_info.name} "
                f"records), so the run cannot be continued as recorded; restore it, or start over with "
                f"`dard train --config {self.config} --out NEW_FOLDER`"
            )

    def write_metrics(self, rows: Sequence[EpochMetrics]) -> Path:
        return write_text(self.metrics, "".join(json.dumps(row.to_dict()) + "\n" for row in rows), root=self.path)

    def write_eval(self, checkpoint: str, record: EvalFile) -> Path:
        return write_json(self.eval_file(checkpoint), record.to_dict(), root=self.path)

    def write_eval_progress(self, checkpoint: str, progress: EvalProgress) -> Path:
        return write_json(self.eval_progress_file(checkpoint), progress.to_dict(), root=self.path)

    def remove_eval_progress(self, checkpoint: str) -> None:
        """Remove the progress file once the evaluation it led to is written (a link is removed, not followed)."""
        self.eval_progress_file(checkpoint).unlink(missing_ok=True)

    def write_compare(self, checkpoint: str, cached: CompareFile) -> Path:
        return write_json(self.compare_file(checkpoint), cached.to_dict(), root=self.path)

    def write_label_gap(self, checkpoint: str, cached: LabelGapFile) -> Path:
        return write_json(self.label_gap_file(checkpoint), cached.to_dict(), root=self.path)

    def write_teacher_quality(self, cached: TeacherQualityFile) -> Path:
        return write_json(self.teacher_quality_file, cached.to_dict(), root=self.path)

    def set_aside(self, path: Path) -> Path | None:
        """Keep a file that no longer describes the run under a new name (``best.json`` -> ``best.superseded-1.json``,
        the first number free) instead of overwriting it; returns the new path (None if ``path`` is absent)."""
        return set_aside(path, self.path)

    def point_at(self, snapshot: Snapshot) -> Path:
        """Make ``snapshot`` (complete by now) the one a resume starts from."""
        return write_json(self.pointer, ResumePointer(snapshot.path.name).to_dict(), root=self.path)


def kept_epoch_name(epoch: int) -> str:
    """The checkpoint name of an epoch kept by ``keep_epochs`` (``epoch-010``), for :meth:`RunDir.checkpoint`."""
    return f"epoch-{int(epoch):03d}"


def kept_epoch(name: str) -> int | None:
    """The epoch of the kept checkpoint named ``name`` as :func:`kept_epoch_name` spells it, else None."""
    m = _KEPT.fullmatch(name)
    return int(m[1]) if m and kept_epoch_name(int(m[1])) == name else None


def enclosing_run(path: str | Path) -> RunDir | None:
    """The run folder ``path`` lies inside (its nearest ancestor holding both config.yaml and run.json), or None;
    as written (a link inside the run leading out of it does not take the path out) and once resolved."""
    for parent in [*Path(os.path.abspath(path)).parents, *Path(path).resolve().parents]:
        run = RunDir(parent)
        if run.config.is_file() and run.run_info.is_file():
            return run
    return None
