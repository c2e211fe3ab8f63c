"""What the rest of a run costs: passes x MACs / rate.

Estimates count *passes*: one forward of a network over one image. An attack step is a forward plus an
input-gradient backward (2 passes), a training forward and backward through the weights 3. Each method states what
a training image costs it (:meth:`dard.methods.Method.passes`) and each attack what one run of it costs
(:meth:`dard.attacks.Attack.passes`). Passes times the network's multiply-accumulates per image
(:func:`dard.models.cost.macs_per_image`) give MACs, and a device rate in MACs per second gives seconds. The rate
comes from a measured training throughput (the run's own, or an earlier run's on the same device:
:mod:`dard.experiment.estimate`), else from :data:`DEFAULT_MACS_PER_S`. docs/gpu.md states the constants' sources.
The deadline itself is :mod:`dard.training.deadline`'s.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dard.attacks import ATTACKS
from dard.checkpoint import checkpoint_meta
from dard.config import RunConfig
from dard.config.read import build_method
from dard.errors import DardError
from dard.evaluation.labels import AUTOATTACK_SUBSET_SUITE, DEFAULT_SUITE
from dard.evaluation.record import AttackResult, canonical_label
from dard.methods import METHODS
from dard.methods.base import StepPasses
from dard.models import create_model, library_prefix
from dard.models.cost import macs_per_image
from dard.run_dir import CHECKPOINTS, RunDir
from dard.training.setup import Data

#: Conservative device rates (MACs/s) when no run has been measured on the device (docs/gpu.md): CUDA with bf16,
#: 10% of the 798 TFLOP/s bf16 matmul measured on an H100 (40 TMAC/s = 80 TFLOP/s: 4.4x the ~70 s per PGD-10
#: ResNet-18 epoch commonly reported on older GPUs); CUDA fp32 a quarter of that; a CPU about a fifth of what the
#: cpu-scale runs measured (21-27 GMAC/s on 1-2 threads).
DEFAULT_MACS_PER_S = {"cuda-bf16": 40e12, "cuda": 10e12, "cpu": 5e9}
#: Evaluation runs in fp32 and eager: taken at this fraction of a bf16 or compiled training step's rate.
EVAL_SPEED_FACTOR = 0.5
#: Seconds a run spends before its first step (data, models) and, with speed.compile, compiling.
STARTUP_S = {"cpu": 5.0, "cuda": 20.0}
COMPILE_S = 60.0
#: The attack of ``eval.eps_sweep`` (:mod:`dard.training.final_eval`): PGD-20 at each eps.
EPS_SWEEP_ATTACK = {"name": "pgd", "steps": 20}


def attack_passes(spec: Mapping[str, Any]) -> float:
    """Passes per image of one evaluation attack (its class's :meth:`~dard.attacks.Attack.passes`) and the forward
    that scores it."""
    return ATTACKS.get(str(spec["name"])).passes(spec) + 1.0


def train_passes(method: Mapping[str, Any]) -> StepPasses:
    """Passes per training image of a resolved method config (``Method.config()``, as run.json records it), as its
    method class states them."""
    return METHODS.get(str(method["name"])).passes(method)


def arch_macs(arch: str, num_classes: int, shape: tuple[int, int, int], kwargs: Mapping[str, Any] | None = None) -> int:
    """MACs per image of architecture ``arch`` (built with factory ``kwargs``, a config's ``model.kwargs``) for
    images of ``shape`` (C, H, W) and ``num_classes`` classes."""
    return _arch_macs(arch, num_classes, shape, json.dumps(dict(kwargs or {}), sort_keys=True))


@functools.lru_cache(maxsize=64)
def _arch_macs(arch: str, num_classes: int, shape: tuple[int, int, int], kwargs_json: str) -> int:
    # cached by the kwargs' JSON text: a mapping (perhaps holding lists) cannot be a cache key itself
    # a throw-away model: its random initialisation must not draw from the run's RNG (it is built when a run starts
    # or resumes, and a resumed run must continue the RNG stream exactly where the snapshot left it)
    with torch.random.fork_rng(devices=[]):
        model = create_model(arch, num_classes=num_classes, in_channels=shape[0], **json.loads(kwargs_json))
        return macs_per_image(model, shape)


@dataclass(frozen=True)
class DataSizes:
    """What a cost estimate needs of a run's data: split sizes, classes and the image shape (C, H, W)."""

    train: int
    val: int
    test: int
    classes: int
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, data: Data) -> DataSizes:
        b = data.bundle
        return cls(len(data.train), len(data.val), len(data.test), b.num_classes, b.image_shape)


@dataclass
class RunCost:
    """The work of one run, in MACs: per training image, per validation, for the test evaluation left."""

    train_macs: float  # per training image
    images_per_epoch: int
    epochs: int
    val_macs: float  # one validation
    val_every: int
    eval_macs: float  # the test evaluation still to do
    amp: bool
    compile: bool

    def eval_rate(self, rate: float) -> float:
        """The evaluation's MACs/s given the training rate."""
        return rate * (EVAL_SPEED_FACTOR if self.amp or self.compile else 1.0)

    def train_seconds(self, rate: float, epoch: int = 0, batch_images: int = 0) -> float:
        """Seconds of training left from ``epoch`` (finished) and ``batch_images`` into the next, with validation."""
        images = (self.epochs - epoch) * self.images_per_epoch - batch_images
        vals = sum(1 for e in range(epoch + 1, self.epochs + 1) if e % self.val_every == 0 or e == self.epochs)
        return max(images, 0) * self.train_macs / rate + vals * self.val_macs / self.eval_rate(rate)

    def eval_seconds(self, rate: float, eval_rate: float | None = None) -> float:
        """Seconds of test evaluation left, at a measured ``eval_rate`` or else one derived from ``rate``."""
        return self.eval_macs / (eval_rate or self.eval_rate(rate))


def run_cost(
    cfg: RunConfig,
    sizes: DataSizes,
    teacher_arch: str | None,
    folder: RunDir | None = None,
    teacher_kwargs: Mapping[str, Any] | None = None,
) -> RunCost:
    """The cost of ``cfg`` on data of ``sizes`` with a teacher of ``teacher_arch`` (None: no teacher; built with
    ``teacher_kwargs``, by default the ones its checkpoint records); the evaluations already written in ``folder``
    are not counted again."""
    method = build_method(cfg).config()
    s_macs = arch_macs(cfg.model.arch, sizes.classes, sizes.shape, cfg.model.kwargs)
    if teacher_kwargs is None and teacher_arch:
        teacher_kwargs = recorded_teacher_kwargs(cfg, folder)
    t_macs = arch_macs(teacher_arch, sizes.classes, sizes.shape, teacher_kwargs) if teacher_arch else 0
    done = set(folder.read_evals()) if folder is not None and folder.eval_dir.is_dir() else set()
    evals = [c for c in cfg.eval.checkpoints if c not in done]
    test = sizes.test * (1 + sum(attack_passes(a) for a in _suite(cfg.eval.attacks)))
    first = cfg.eval.checkpoints[0] in evals
    subset = min(cfg.eval.autoattack_subset or 0, sizes.test)
    extras = subset * sum(attack_passes(a) for a in _suite(AUTOATTACK_SUBSET_SUITE)) if first else 0.0
    extras += len(cfg.eval.eps_sweep) * sizes.test * attack_passes(EPS_SWEEP_ATTACK) if first else 0.0
    extras -= sum(_attacks_passes(r) for c in evals for r in _progress_results(folder, c))  # already measured
    batches = sizes.train // cfg.optim.batch_size
    return RunCost(
        train_macs=train_passes(method).macs(s_macs, t_macs),
        images_per_epoch=batches * cfg.optim.batch_size,
        epochs=cfg.optim.epochs,
        val_macs=sizes.val * (1 + attack_passes(cfg.val.attack)) * s_macs,
        val_every=cfg.val.every,
        eval_macs=max(len(evals) * test + extras, 0.0) * s_macs,
        amp=cfg.speed.amp == "bf16",
        compile=cfg.speed.compile,
    )


def _progress_results(folder: RunDir | None, checkpoint: str) -> list[AttackResult]:
    """The attacks an unfinished evaluation of ``checkpoint`` has finished (eval/progress-<checkpoint>.json)."""
    progress = folder.read_eval_progress(checkpoint) if folder is not None and folder.eval_dir.is_dir() else None
    parts = (progress.suite, progress.autoattack_subset) if progress is not None else ()
    return [r for part in parts if part is not None for r in part.attacks.values()]


def _attacks_passes(result: AttackResult) -> float:
    """Image-passes (as :func:`attack_passes` counts them) an attack's result cost; 0 for an attack this version
    does not know."""
    try:
        return result.total * attack_passes(result.config)
    except DardError:
        return 0.0


def _suite(names: list[str]) -> list[Mapping[str, Any]]:
    return [DEFAULT_SUITE.get(canonical_label(n), {"name": n}) for n in names]


def teacher_arch(cfg: RunConfig, folder: RunDir | None = None) -> str | None:
    """The teacher's architecture: from the run's run.json, else its checkpoint's metadata or ``teacher.arch``;
    None when there is no teacher or its checkpoint is not written yet."""
    if folder is not None and folder.run_info.is_file():
        recorded = folder.read_info().teacher
        if recorded:
            return str(recorded.get("arch"))
    if library_prefix(cfg.teacher.checkpoint) == "robustbench:":  # a zoo teacher by name: its architecture
        return str(cfg.teacher.checkpoint)
    if cfg.teacher.checkpoint:
        try:
            return str(checkpoint_meta(cfg.teacher.checkpoint)[1]["model"]["arch"])
        except DardError:
            return None
    return cfg.teacher.arch


def recorded_teacher_kwargs(cfg: RunConfig, folder: RunDir | None = None) -> dict[str, Any]:
    """The factory arguments the teacher was built with (a ``timm:`` ViT's ``img_size``, ...), as
    :func:`teacher_arch` finds its architecture: from the run's run.json, else its checkpoint's metadata, else
    ``teacher.kwargs`` (a teacher given as ``teacher.arch`` + ``teacher.weights``)."""
    if folder is not None and folder.run_info.is_file():
        recorded = folder.read_info().teacher
        if recorded:
            return dict(recorded.get("kwargs") or {})
    if cfg.teacher.checkpoint and library_prefix(cfg.teacher.checkpoint) is None:
        try:
            return dict(checkpoint_meta(cfg.teacher.checkpoint)[1]["model"].get("kwargs") or {})
        except DardError:
            return {}
    return dict(cfg.teacher.kwargs)


def measured_rate(folder: RunDir, train_macs: float) -> tuple[float, float] | None:
    """(MACs/s, training images/s) measured by a run so far: its last full epoch, else its resume snapshot."""
    rows = folder.read_metrics() if folder.metrics.is_file() else []
    if rows and rows[-1].images_per_s > 0:
        return rows[-1].images_per_s * train_macs, rows[-1].images_per_s
    progress = folder.read_progress()
    if progress is None or not progress.train_seconds or not progress.global_step:
        return None
    cfg_batch = folder.read_run_config().optim.batch_size
    ips = progress.global_step * cfg_batch / progress.train_seconds
    return (ips * train_macs, ips) if ips > 0 else None


def measured_eval_rate(folder: RunDir, sizes: DataSizes) -> float | None:
    """MACs/s of a run's recorded test evaluations (the suite and its AutoAttack subset, counted in passes as
    :func:`run_cost` counts them), None when it has none."""
    evals = folder.read_evals() if folder.eval_dir.is_dir() else {}
    macs, seconds = 0.0, 0.0
    if folder.run_info.is_file():  # the attacks an unfinished evaluation has finished, timed one by one
        student = folder.read_info().student or {}
        arch = student.get("arch")
        m = arch_macs(str(arch), sizes.classes, sizes.shape, student.get("kwargs")) if arch else 0
        for result in (r for c in CHECKPOINTS for r in _progress_results(folder, c)):
            macs, seconds = macs + _attacks_passes(result) * m, seconds + result.seconds
    for rec in evals.values():
        arch = rec.model.get("arch")
        if not arch or rec.model.get("num_classes") != sizes.classes:
            continue
        m = arch_macs(str(arch), sizes.classes, sizes.shape, rec.model.get("kwargs"))
        for part in (rec, rec.autoattack_subset):
            if part is not None and part.seconds > 0:
                try:
                    passes = sum(attack_passes(a.config) for a in part.attacks.values())
                except DardError:  # an attack this version does not know: its cost is unknown
                    continue
                macs += int(part.data.get("n", 0)) * (1 + passes) * m
                seconds += part.seconds
    return macs / seconds if macs and seconds else None


def default_rate(cfg: RunConfig, device_type: str) -> float:
    """The conservative rate for a device type with no measured run (MACs/s)."""
    if device_type == "cuda":
        return DEFAULT_MACS_PER_S["cuda-bf16" if cfg.speed.amp == "bf16" else "cuda"]
    return DEFAULT_MACS_PER_S.get(device_type, DEFAULT_MACS_PER_S["cpu"])


def startup_seconds(device_type: str) -> float:
    """The fixed cost of starting (or resuming) a run on a device type: data, models, teacher."""
    return STARTUP_S.get(device_type, STARTUP_S["cuda"])


def compile_seconds(cfg: RunConfig) -> float:
    """Compiling the models before the first training steps (speed.compile), in each process that trains."""
    return COMPILE_S if cfg.speed.compile else 0.0


def evaluation_rate(cfg: RunConfig, folder: RunDir, sizes: DataSizes, device_type: str) -> float:
    """The run's test-evaluation MACs/s: as its evaluations so far measured it, else derived from its training
    rate (else the device's default)."""
    cost = run_cost(cfg, sizes, teacher_arch(cfg, folder), folder)
    measured = measured_rate(folder, cost.train_macs)
    rate = measured[0] if measured else default_rate(cfg, device_type)
    return measured_eval_rate(folder, sizes) or cost.eval_rate(rate)
