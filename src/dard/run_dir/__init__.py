"""The run folder: the one owner of its layout (:class:`RunDir`) and of the schema of every file in it.

Training writes a run folder and reports, experiments, checkpoint resolution and the CLI read it, all through this
package; no other module spells its file names. Readers are strict about types and turn a missing, truncated,
non-UTF-8 or wrongly typed file into one :class:`dard.errors.DardError` line naming the file.
"""

from dard.run_dir.layout import CHECKPOINTS, RunDir, enclosing_run, kept_epoch_name
from dard.run_dir.lock import FolderLock
from dard.run_dir.records import (
    CheckpointProvenance,
    CompareFile,
    EpochMetrics,
    EpsSweep,
    EvalFile,
    EvalPart,
    EvalProgress,
    LabelGapFile,
    Progress,
    ResumePointer,
    RunInfo,
    TeacherQualityFile,
)
from dard.run_dir.run_record import RunRecord
from dard.run_dir.snapshot import Snapshot

__all__ = [
    "CHECKPOINTS",
    "CheckpointProvenance",
    "CompareFile",
    "EpochMetrics",
    "EpsSweep",
    "EvalFile",
    "EvalPart",
    "EvalProgress",
    "FolderLock",
    "LabelGapFile",
    "Progress",
    "ResumePointer",
    "RunDir",
    "RunInfo",
    "RunRecord",
    "Snapshot",
    "TeacherQualityFile",
    "enclosing_run",
    "kept_epoch_name",
]
