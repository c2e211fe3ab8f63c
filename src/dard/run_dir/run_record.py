"""A finished run folder read as one typed record: what reports are made of."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dard.errors import DardError
from dard.io import file_kind
from dard.run_dir.layout import RunDir
from dard.run_dir.records import EpochMetrics, EvalFile, RunInfo


@dataclass
class RunRecord:
    """A finished run: its ``run.json`` and the numbers derived from it and the other files.

    ``evals`` maps ``"best"`` / ``"last"`` to the evaluation records present in ``eval/``; ``train_seconds`` is the
    training loop's wall time and ``train_images_per_s`` its throughput (None when not recorded); ``device`` names
    where it trained; ``config`` is the recorded run config (a mapping, parsed by whoever needs it).
    """

    path: Path
    name: str
    seed: int | None
    method: dict[str, Any]
    student: dict[str, Any]
    teacher: dict[str, Any] | None
    data: dict[str, Any]
    info: RunInfo  # run.json as written (every field at its default when the file is absent)
    metrics: list[EpochMetrics]
    evals: dict[str, EvalFile]
    train_seconds: float | None
    train_images_per_s: float | None
    device: str
    config: dict[str, Any] | None = None  # config.yaml as recorded (None for a folder without one)

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        """Read a finished run folder; DardError if it is missing, holds no evaluation record or a malformed file."""
        run = RunDir(path)
        if not run.path.is_dir():
            there = os.path.lexists(run.path)  # a FIFO or a file is said as what it is, not "not found"
            what = f"it is {file_kind(os.lstat(run.path).st_mode)}, not a folder" if there else "folder not found"
            raise DardError(f"{run.path} is not a finished dard run ({what})")
        evals = run.read_evals()
        if not evals:
            raise DardError(f"{run.path} is not a finished dard run (no {run.eval_file('best').relative_to(run.path)})")
        info = run.read_info() if run.holds(run.run_info, "run record") else RunInfo()  # a FIFO is not absent
        first = next(iter(evals.values()))
        student = info.student or {k: v for k, v in first.model.items() if k not in ("checkpoint", "epoch")}
        metrics = run.read_metrics()
        train_seconds = _train_seconds(run, metrics)
        return cls(
            path=run.path,
            name=str(info.name or run.path.name),
            seed=info.seed if info.seed is not None else first.seed,
            method=dict(info.method),
            student=dict(student),
            teacher=info.teacher,
            data=dict(info.data),
            info=info,
            metrics=metrics,
            evals=evals,
            train_seconds=train_seconds,
            train_images_per_s=_train_throughput(train_seconds, info.data, metrics),
            device=_device_text(info),
            config=run.read_config() if run.holds(run.config, "run config") else None,
        )


def _train_seconds(run: RunDir, metrics: Sequence[EpochMetrics]) -> float | None:
    """Wall time of the training loop (validation and test evaluation excluded), or None if not recorded.

    Rows of ``metrics.jsonl`` carry it cumulatively; runs written before they did have it only in their final
    resume snapshot.
    """
    for row in reversed(metrics):
        if row.train_seconds is not None:
            return float(row.train_seconds)
    progress = run.read_progress()
    return None if progress is None or progress.train_seconds is None else float(progress.train_seconds)


def _train_throughput(seconds: float | None, data: dict[str, Any], metrics: Sequence[EpochMetrics]) -> float | None:
    """Training images per second over the whole run (all processes), from the recorded training time."""
    n = data.get("train")
    epochs = max((row.epoch for row in metrics), default=0)
    if not seconds or not isinstance(n, int) or not epochs:
        return None
    return n * epochs / seconds


def _device_text(info: RunInfo) -> str:
    """Where a run trained, from its run.json environment (with the process count under torchrun): a CPU's model
    beside its device name where the record has it, ``cpu (x86_64, 2 threads; AMD EPYC 7B13, emulated bf16)``, as
    every CPU's device name reads alike while their speeds differ 30-fold (records before ``cpu_model``: as they
    were)."""
    env = info.environment
    text = str(env.get("device_name") or env.get("device") or "?")
    model, native = env.get("cpu_model"), env.get("cpu_native_bf16")
    if str(env.get("device", "")).startswith("cpu") and isinstance(model, str) and model.strip():
        bf16 = f", {'native' if native else 'emulated'} bf16" if isinstance(native, bool) else ""
        text = f"{text[:-1]}; {model.strip()}{bf16})" if text.endswith(")") else f"{text} ({model.strip()}{bf16})"
    world = env.get("world_size") or 1
    return f"{text} x {world} processes" if world > 1 else text
