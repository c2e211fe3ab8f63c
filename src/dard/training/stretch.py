"""A run's stretches: where each resume ran (commit, device, threads), logged in ``run.json``'s ``stretches``
(:class:`dard.run_dir.RunInfo`) once the stretch has done something, so that a resume that fails leaves the
folder as it found it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from dard.run_dir import RunDir
from dard.runtime import environment


@dataclass
class PendingStretch:
    """The entry a resumed run adds to run.json (None: a new run, another rank, or already logged)."""

    folder: RunDir
    entry: dict[str, Any] | None = None

    @classmethod
    def of(cls, folder: RunDir, resume: bool, device: torch.device, world_size: int, main: bool) -> PendingStretch:
        """The pending entry of a run resumed from its snapshot (after the resume's checks have read it)."""
        progress = folder.read_progress() if resume and main and folder.run_info.is_file() else None
        if progress is None:
            return cls(folder)
        env = {**environment(device), "world_size": world_size}
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        return cls(folder, {"time": when, "step": progress.global_step, "environment": env})

    def log(self) -> None:
        """Add the entry to run.json, once."""
        if self.entry is None:
            return
        info = self.folder.read_info()
        info.stretches = [*(info.stretches or []), self.entry]
        self.folder.write_info(info)
        self.entry = None
