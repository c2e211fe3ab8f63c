"""`dard experiment --time-budget`: the planned runs, one at a time, within a wall-clock budget.

Teachers first, then the students seed by seed (every student of the first seed before any of the second), so
that a budget that runs out leaves one whole comparison rather than three seeds of its first method. Before a
run starts, its remaining cost (training, validation, test evaluation and a fixed start-up) is estimated with
:mod:`dard.training.budget` at a device rate taken, in this order, from

1. the run's own measured throughput (a run resumed from a snapshot),
2. an earlier run in the same runs folder on the same device: the same architecture and method first, then the
   same architecture, then any (scaled by their multiply-accumulates per image),
3. the conservative default for the device type (:data:`dard.training.budget.DEFAULT_MACS_PER_S`),

and the basis is printed with the decision. A run that would not finish is not started, unless its weights and
resume state are small enough to travel to the next job (``partial_under`` MiB): then it trains until the budget
ends and stops with a snapshot. A run that fits trains until the deadline less its evaluation's estimate; the
test evaluation then runs only if it still fits (otherwise "trained; test evaluation pending"). Each run's
records are exported to ``export_dir`` (``<run>.tar.gz``, :mod:`dard.run_dir.archive`) as soon as it stops or
finishes, and the report covers the finished runs. A later invocation continues where this one stopped.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dard.errors import DardError
from dard.experiment.report import write_experiment_report
from dard.experiment.runner import _checked_runs, missing_teacher_weights, run_extras, run_status
from dard.experiment.spec import Experiment, deep_merge, parse_run_config
from dard.run_dir import RunDir
from dard.training.budget import (
    DataSizes,
    TrainingStopped,
    arch_macs,
    compile_seconds,
    default_rate,
    measured_rate,
    run_cost,
    startup_seconds,
    teacher_arch,
    train_passes,
)
from dard.training.config import RunConfig

MARGIN_S = 15.0  # kept back at the end of a budget by default: the last snapshot and the export
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | float) -> float:
    """Seconds in ``text``: a number (seconds) or number-unit pairs, e.g. ``8m``, ``90s``, ``1h30m``, ``2.5h``."""
    raw = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d*)?", raw):
        return float(raw)
    parts = re.findall(r"(\d+(?:\.\d*)?)([smhd])", raw)
    if not parts or "".join(n + u for n, u in parts) != raw:
        raise DardError(f"time budget '{text}' is not a duration such as 8m, 90s, 1h30m or 480 (seconds)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass
class BudgetOptions:
    """A wall-clock budget (``seconds`` from ``started``) and what to do within it."""

    seconds: float
    partial_under: float | None = None  # MiB: runs whose weights + resume state fit may stop mid-way
    export_dir: Path | None = None  # each run's archive, written as it stops or finishes
    margin_s: float = MARGIN_S  # kept back at the end
    started: float = field(default_factory=time.time)

    @property
    def deadline(self) -> float:
        """When work must be done: the budget's end less the margin (``time.time()``)."""
        return self.started + self.seconds - self.margin_s

    def left(self) -> float:
        return self.deadline - time.time()


@dataclass
class Estimate:
    """Seconds a run still needs, the rate's basis, and the MiB its weights and resume state take."""

    train_s: float
    eval_s: float
    startup_s: float
    basis: str
    weights_mib: float

    @property
    def total(self) -> float:
        return self.startup_s + self.train_s + self.eval_s

    def text(self) -> str:
        return (
            f"~{self.total:.0f} s (start {self.startup_s:.0f} + train {self.train_s:.0f} + "
            f"test evaluation {self.eval_s:.0f}; rate from {self.basis})"
        )


class Estimator:
    """Estimates for the runs of one runs folder on one device (``label``: its name as run.json records it; None
    when planning for a device type this machine does not have)."""

    def __init__(self, runs_root: Path, device_type: str, label: str | None) -> None:
        self.runs_root, self.device_type, self.label = runs_root, device_type, label
        self._sizes: dict[tuple, DataSizes] = {}

    def sizes(self, cfg: RunConfig) -> DataSizes:
        """The run's split sizes (its dataset loaded once per experiment)."""
        from dard.training.setup import prepare_data

        key = (cfg.data.model_dump_json(), cfg.seed)
        if key not in self._sizes:
            self._sizes[key] = DataSizes.of(prepare_data(cfg, _bundle(cfg.data.name, cfg.data.dir, cfg.data.download)))
        return self._sizes[key]

    def estimate(self, name: str, cfg: RunConfig, teacher: str | None) -> Estimate:
        folder = RunDir(self.runs_root / name)
        sizes = self.sizes(cfg)
        cost = run_cost(cfg, sizes, teacher_arch(cfg, folder if folder.is_run() else None) or teacher, folder)
        rate, basis = self._rate(folder, cfg, cost.train_macs, sizes)
        progress = folder.read_progress() if folder.is_run() else None
        epoch, batch = (progress.epoch, progress.batch) if progress else (0, 0)
        trained = epoch >= cfg.optim.epochs
        train_s = 0.0 if trained else cost.train_seconds(rate, epoch, batch * cfg.optim.batch_size)
        train_s += compile_seconds(cfg) if train_s else 0.0
        # what travels: best, last, the snapshot's weights and its momentum, 4 float32 bytes per parameter each
        mib = 16 * _params(cfg.model.arch, sizes.classes, sizes.shape[0]) / 2**20
        return Estimate(train_s, cost.eval_seconds(rate), startup_seconds(self.device_type), basis, mib)

    def _rate(self, folder: RunDir, cfg: RunConfig, train_macs: float, sizes: DataSizes) -> tuple[float, str]:
        own = measured_rate(folder, train_macs) if folder.is_run() and self._same_device(folder) else None
        if own:
            return own[0], f"its own throughput so far ({own[1]:.0f} images/s)"
        found: list[tuple[int, str, float, float]] = []  # (rank, name, MACs/s, images/s)
        for other in sorted(p for p in self.runs_root.glob("*") if p.is_dir() and p != folder.path):
            run = RunDir(other)
            if not (run.run_info.is_file() and self._same_device(run)):
                continue
            info = run.read_info()
            student = info.student or {}
            if int(student.get("num_classes", -1)) != sizes.classes or not student.get("arch"):
                continue  # another dataset: its MACs per image are not comparable
            s_pass, t_pass = train_passes(info.method)
            t_arch = (info.teacher or {}).get("arch")
            macs = s_pass * arch_macs(student["arch"], sizes.classes, sizes.shape)
            macs += t_pass * (arch_macs(t_arch, sizes.classes, sizes.shape) if t_arch else 0)
            got = measured_rate(run, macs)
            if got:
                same_arch = student["arch"] == cfg.model.arch
                rank = 0 if same_arch and info.method.get("name") == cfg.method.name else 1 if same_arch else 2
                found.append((rank, other.name, got[0], got[1]))
        if found:
            rank, other, rate, ips = min(found)
            how = ["same architecture and method", "same architecture", "scaled by MACs per image"][rank]
            return rate, f"earlier run {other} on {self.label} ({ips:.0f} images/s; {how})"
        rate = default_rate(cfg, self.device_type)
        return rate, f"the default for {self.device_type} ({rate / 1e12:.3g} TMAC/s; nothing measured on it yet)"

    def _same_device(self, run: RunDir) -> bool:
        recorded = run.read_info().environment.get("device_name")
        return self.label is not None and _device_key(str(recorded)) == _device_key(self.label)


def _device_key(name: str) -> str:
    """A device name without a CPU's thread count (runs of one machine use 1 or all threads)."""
    return re.sub(r", \d+ threads?\)$", ")", name)


@functools.lru_cache(maxsize=8)
def _bundle(name: str, folder: str | None, download: bool) -> Any:
    from dard.data import load_dataset

    return load_dataset(name, folder, download=download)


@functools.lru_cache(maxsize=32)
def _params(arch: str, classes: int, channels: int) -> int:
    from dard.models import create_model
    from dard.models.cost import count_parameters

    return count_parameters(create_model(arch, num_classes=classes, in_channels=channels))


def _ordered(exp: Experiment, runs_root: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, role, config) of every run: teachers, then students seed by seed (in file order within a seed)."""
    teachers, students = _checked_runs(exp, runs_root)
    rows = [(name, "teacher", cfg) for name, cfg in teachers.items()]
    seeds = exp.spec.seeds
    rows += [(name, "student", cfg) for name, _, cfg in sorted(students, key=lambda s: seeds.index(s[1]))]
    return rows


def _teacher_archs(rows: list[tuple[str, str, dict[str, Any]]], runs_root: Path) -> dict[str, str]:
    """Planned teacher checkpoint path -> its architecture (a student's estimate before its teacher exists)."""
    return {
        str(RunDir(runs_root / name).weights("best")): str((cfg.get("model") or {}).get("arch"))
        for name, role, cfg in rows
        if role == "teacher"
    }


def plan_budget(exp: Experiment, runs_root: Path, budget: BudgetOptions, device: str) -> list[str]:
    """One line per run: its status, estimate and what a budgeted invocation would do with it, in the order it
    takes the runs (assuming each run that fits finishes in its estimate)."""
    estimator, device = _estimator(runs_root, device)
    rows = _ordered(exp, runs_root)
    archs = _teacher_archs(rows, runs_root)
    lines, left = [], budget.seconds - budget.margin_s
    for name, role, raw in rows:
        cfg = parse_run_config(deep_merge(raw, {"device": device}), name)
        status = run_status(runs_root / name, cfg.optim.epochs)
        if RunDir(runs_root / name).is_evaluated():
            lines.append(f"{name}: {status}")
            continue
        est = estimator.estimate(name, cfg, archs.get(str(cfg.teacher.checkpoint)))
        what = _decide(est, left, budget)
        left -= est.total if what == "fits" else max(left, 0.0) if what == "partial" else 0.0
        lines.append(f"{name} ({role}): {status}; needs {est.text()}; {_DECISIONS[what]}")
    return lines


_DECISIONS = {"fits": "fits", "partial": "would start and stop part-way", "no": "would not start"}


def _decide(est: Estimate, left: float, budget: BudgetOptions) -> str:
    """``fits`` (the whole run), ``partial`` (starts, stops at the deadline: small enough to travel) or ``no``."""
    if est.total <= left:
        return "fits"
    small = budget.partial_under is not None and est.weights_mib <= budget.partial_under
    return "partial" if small and est.train_s > 0 and left > est.startup_s else "no"


def _estimator(runs_root: Path, device: str) -> tuple[Estimator, str]:
    """The estimator for ``device`` and the device string runs get. Planning for CUDA on a machine without it
    (``--plan --device cuda``) uses the CUDA defaults."""
    import torch

    from dard.runtime import device_name, resolve_device

    if device.startswith("cuda") and not torch.cuda.is_available():
        return Estimator(runs_root, "cuda", None), device
    dev = resolve_device(device)
    return Estimator(runs_root, dev.type, device_name(dev)), device


def run_within_budget(
    exp: Experiment, runs_root: Path, results_dir: Path, budget: BudgetOptions, *, device: str, command: str = ""
) -> Path | None:
    """Run what fits of ``exp`` within ``budget`` (module docstring); returns report.md (None: nothing finished)."""
    estimator, device = _estimator(runs_root, device)
    rows = _ordered(exp, runs_root)
    archs = _teacher_archs(rows, runs_root)
    for name, role, raw in rows:
        _run_one(name, role, parse_run_config(deep_merge(raw, {"device": device}), name), raw, runs_root, budget,
                 estimator, archs)  # fmt: skip
    finished = [runs_root / name for name, _, _ in rows if RunDir(runs_root / name).is_evaluated()]
    if not finished:
        print("[budget] no run has finished yet: no report", flush=True)
        return None
    if budget.left() > 0:
        run_extras(exp, runs_root, finished, device=device)
    pending = [f"{name}: {run_status(runs_root / name, parse_run_config(raw, name).optim.epochs)}"
               for name, _, raw in rows if not RunDir(runs_root / name).is_evaluated()]  # fmt: skip
    notes = [f"- Not finished yet ({len(pending)}): " + "; ".join(pending) + "."] if pending else []
    return write_experiment_report(exp, finished, results_dir, command=command, notes=notes)


def _say(name: str, text: str) -> None:
    print(f"[budget] {name}: {text}", flush=True)


def _run_one(
    name: str,
    role: str,
    cfg: RunConfig,
    raw: dict[str, Any],
    runs_root: Path,
    budget: BudgetOptions,
    estimator: Estimator,
    archs: dict[str, str],
) -> None:
    """Train and/or evaluate one run as far as the budget allows, then export its records."""
    from dard.training import train

    folder = RunDir(runs_root / name)
    if folder.is_evaluated():
        return _say(name, "done (reused)")
    if cfg.teacher.checkpoint and not Path(cfg.teacher.checkpoint).exists():
        why = missing_teacher_weights(raw) or f"its teacher {Path(cfg.teacher.checkpoint).parent.name} is not trained"
        return _say(name, f"not started: {why}")
    est = estimator.estimate(name, cfg, archs.get(str(cfg.teacher.checkpoint)))
    left = budget.left()
    what = _decide(est, left, budget)
    if what == "no":
        return _say(name, f"not started: needs {est.text()}, {max(left, 0):.0f} s left")
    fits = what == "fits"
    _say(name, f"{'starting' if fits else 'starting (will stop part-way)'}: needs {est.text()}, {left:.0f} s left")
    try:
        if est.train_s > 0:
            stop_at = budget.deadline - (est.eval_s if fits else 0.0)
            train(cfg, folder.path, resume=folder.is_run(), final_eval=False, stop_at=stop_at)
        est = estimator.estimate(name, cfg, archs.get(str(cfg.teacher.checkpoint)))  # now at its own rate
        if est.eval_s + est.startup_s > budget.left():
            raise TrainingStopped(folder.path, cfg.optim.epochs, 0, evaluation_pending=True)
        train(cfg, folder.path, resume=True, final_eval=True)
        _say(name, "done")
    except TrainingStopped as stop:
        _say(name, f"stopped at the budget: {run_status(folder.path, cfg.optim.epochs)} ({stop})")
    _export(folder, budget)


def _export(folder: RunDir, budget: BudgetOptions) -> None:
    """Write the run's archive to the export folder, if one is given and the run has something to carry."""
    if budget.export_dir is None:
        return
    from dard.run_dir.archive import ExportOptions, export_runs

    try:
        path = export_runs([folder.path], budget.export_dir / f"{folder.path.name}.tar.gz", ExportOptions())
        _say(folder.path.name, f"exported to {path}")
    except DardError as e:  # e.g. an unfinished run whose resume state is too large to carry
        _say(folder.path.name, f"not exported: {e}")
