"""What a training run says on stdout: a header before the first step and one line per epoch.

The header names the device, threads, precision and speed switches, the split sizes, the run folder and an
estimate of the time the run still needs (the cost model of :mod:`dard.training.cost`: at the run's own measured
rate when it resumes, else at the conservative default rate of the device). Each epoch line gives the loss,
accuracy, validation scores, the epoch's wall time and the time left at the throughput measured so far. Plain
lines, printed whether or not progress bars are on, so a log of `dard train > log` shows what is running.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from dard.attacks.threat import EPS_TOL, budget_text
from dard.config import RunConfig
from dard.errors import DardError, one_line
from dard.methods import METHODS, Method
from dard.run_dir import EpochMetrics, Progress, RunDir
from dard.runtime import device_name
from dard.training.cost import (
    DataSizes,
    RunCost,
    compile_seconds,
    default_rate,
    measured_eval_rate,
    measured_rate,
    run_cost,
    teacher_arch,
)
from dard.training.precision import bf16_on_fp32_kernels


def duration(seconds: float) -> str:
    """``seconds`` as ``42 s``, ``12 min`` or ``3.5 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class CostUnavailable:
    """Why a run has no cost estimate: the cost model could not build its model (the run trains all the same)."""

    reason: str


def estimate_cost(cfg: RunConfig, folder: RunDir, sizes: DataSizes) -> RunCost | CostUnavailable:
    """The cost of the rest of the run (:func:`dard.training.cost.run_cost`), or why there is none."""
    run = folder if folder.run_info.is_file() else None
    try:  # the estimate informs; a model the cost model cannot build must not stop the run
        return run_cost(cfg, sizes, teacher_arch(cfg, run), run)
    except DardError as e:
        return CostUnavailable(one_line(e, 120))


@dataclass
class Announcer:
    """The lines of one run (rank 0 only); ``final_eval``: whether the test evaluation follows the training."""

    cfg: RunConfig
    folder: RunDir
    sizes: DataSizes
    device: torch.device
    world_size: int = 1
    final_eval: bool = True
    method: Method | None = None  # to name a training attack at another eps than the threat model's

    cost: RunCost | CostUnavailable = field(init=False)

    def __post_init__(self) -> None:
        self.cost = estimate_cost(self.cfg, self.folder, self.sizes)

    def header(self, progress: Progress) -> list[str]:
        """The lines printed before the first step (or the first step after a resume)."""
        cfg, s = self.cfg, self.sizes
        amp = "bf16 autocast (weights fp32)" if cfg.speed.amp == "bf16" else "fp32"
        if bf16_on_fp32_kernels(cfg, self.device):
            amp = "bf16 autocast (weights fp32; products on fp32 kernels, rounded to bf16: no native bf16 here)"
        compiled = f"on ({cfg.speed.compile_backend}, {cfg.speed.compile_mode})" if cfg.speed.compile else "off"
        where = f"resumes at epoch {progress.epoch + 1}" if progress.epoch or progress.batch else "new"
        ranks = f"; {self.world_size} processes" if self.world_size > 1 else ""
        subset = f" (data.train_subset {cfg.data.train_subset})" if cfg.data.train_subset is not None else ""
        return [
            f"run folder {self.folder.path} ({where}); method {cfg.method.name}, model {cfg.model.arch}, "
            f"seed {cfg.seed}, {cfg.optim.epochs} epochs of {self.sizes.train // cfg.optim.batch_size} steps",
            f"device {self._device()}{ranks}; "
            f"precision {amp}; channels_last {'on' if cfg.speed.channels_last else 'off'}; compile {compiled}",
            f"data {cfg.data.name}: train {s.train}{subset}, val {s.val}, test {s.test} images; "
            f"eps {budget_text(cfg.eps, cfg.norm, named=True)}{self._training_eps()}",
            f"estimate {self._estimate(progress)}",
        ]

    @property
    def acc_input(self) -> str:
        """What the training accuracy of the epoch line is measured on: ``adv`` (the method's adversarial batch) or
        ``clean`` (:attr:`dard.methods.Method.logits_input`): AdaAD's 0.8 beside SAT's 0.4 said nothing of which."""
        method = self.method if self.method is not None else METHODS.get(self.cfg.method.name)
        return "adv" if method.logits_input == "x_adv" else "clean"

    def _training_eps(self) -> str:
        """`` (training attack at 10/255)`` where the method's attack runs at another eps than the threat model's
        (``method.params.attack.eps``, a deliberate choice the report also states); else empty."""
        spec = self.method.config().get("attack") if self.method is not None else None
        trained = spec.get("eps") if isinstance(spec, Mapping) else None
        if not isinstance(trained, (int, float)) or abs(trained - self.cfg.eps) <= EPS_TOL:
            return ""
        return f" (training attack at {budget_text(trained, self.cfg.norm)})"

    def _device(self) -> str:
        if self.device.type == "cpu":
            return device_name(self.device)  # "cpu (x86_64, 2 threads)"
        return f"{self.device} ({device_name(self.device)}), {torch.get_num_threads()} CPU threads"

    def _estimate(self, progress: Progress) -> str:
        if isinstance(self.cost, CostUnavailable):
            return f"unavailable ({self.cost.reason})"
        measured = measured_rate(self.folder, self.cost.train_macs) if self.folder.metrics.is_file() else None
        if measured:
            rate, basis = measured[0], f"its own throughput so far, {measured[1]:.0f} images/s"
        else:
            rate = default_rate(self.cfg, self.device.type)
            basis = f"the default rate for {self.device.type}, {rate / 1e9:.3g} GMAC/s: nothing measured yet"
        train = self.cost.train_seconds(rate, progress.epoch, progress.batch * self.cfg.optim.batch_size)
        train += compile_seconds(self.cfg) if train else 0.0
        test = self.cost.eval_seconds(rate, measured_eval_rate(self.folder, self.sizes)) if self.final_eval else 0.0
        return f"~{duration(train + test)} (train {duration(train)} + test evaluation {duration(test)}; {basis})"

    def epoch_line(self, row: EpochMetrics, started: float) -> str:
        """One finished epoch: its scores, its wall time (validation included) and the time left at its rate."""
        cfg = self.cfg
        val = f" val clean {row.val_clean:.3f} robust {row.val_robust:.3f}" if row.val_clean is not None else ""
        left = 0.0
        if isinstance(self.cost, RunCost) and row.images_per_s > 0:
            rate = row.images_per_s * self.cost.train_macs
            left = self.cost.train_seconds(rate, row.epoch) + (self.cost.eval_seconds(rate) if self.final_eval else 0.0)
        return (
            f"[{cfg.name}] epoch {row.epoch}: loss {row.train_loss:.4f} {self.acc_input} acc {row.train_acc:.3f}{val} "
            f"({duration(time.time() - started)}, {row.epoch} of {cfg.optim.epochs} epochs; ~{duration(left)} left)"
        )


def say(lines: list[str] | str, name: str | None = None) -> None:
    """Print lines to stdout without breaking a progress bar (``[name]`` before each when given), flushed."""
    for line in [lines] if isinstance(lines, str) else lines:
        tqdm.write(f"[{name}] {line}" if name else line)
    sys.stdout.flush()  # a log (stdout a file or pipe, block-buffered) shows each line as it happens
