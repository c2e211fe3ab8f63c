"""A resume snapshot folder of a run (``<run>/state-<step>/``), laid out by :mod:`dard.run_dir.layout`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dard.io import write_json
from dard.run_dir.files import own_file, read_json_file
from dard.run_dir.records import Progress


@dataclass(frozen=True)
class Snapshot:
    """One resume snapshot folder ``state-<global_step>/`` (its tensors are read and written by
    :mod:`dard.training.state`)."""

    path: Path

    @property
    def weights(self) -> Path:
        return self.path / "student.safetensors"

    @property
    def optimizer(self) -> Path:
        """Optimizer, scheduler and RNG states (``torch.save`` of tensors and plain containers)."""
        return self.path / "optim.pt"

    @property
    def progress(self) -> Path:
        return self.path / "progress.json"

    def read_progress(self) -> Progress:
        """The snapshot's progress (strict: a DardError naming the file if it is missing or malformed, or not a
        regular file of the run: :func:`own_file`)."""
        own_file(self.progress, self.path.parent, "resume progress")
        return read_json_file(
            self.progress, Progress, "resume progress", required=("epoch", "batch", "global_step", "history")
        )

    def write_progress(self, progress: Progress) -> Path:
        return write_json(self.progress, progress.to_dict(), root=self.path.parent)
