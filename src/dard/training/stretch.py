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


def other_process_count(folder: RunDir, world_size: int) -> list[str]:
    """The line a resume says when it runs with another process count (``world_size``) than the run's latest stretch
    did (run.json): it went on in silence, and the global batch, learning rate and data order are the same, but the
    terms that depend on a process's shard are not (docs/gpu.md)."""
    before = folder.read_info().latest_environment().get("world_size") if folder.run_info.is_file() else None
    if (before or 1) == world_size:
        return []
    count = lambda n: f"{n} process{'' if n == 1 else 'es'}"  # noqa: E731
    return [
        f"resumed with {count(world_size)} where the run trained with {count(before or 1)}: the global batch, the "
        "learning rate and the data order go on as they were; what depends on each process's share of a batch "
        "(set-reduced Dice, random attack starts, BatchNorm statistics on CPUs) does not (docs/gpu.md)"
    ]
