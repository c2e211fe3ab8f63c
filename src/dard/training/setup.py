"""Setting up a run: its data splits, loss, teacher, speed switches and optimizer, and the config a run folder
recorded.

Shared by the training loop, the final evaluation and `dard experiment`'s per-run extras.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from torch import nn

import dard.training.distributed as dist
from dard.checkpoint import load_model, teacher_checkpoint
from dard.config import RunConfig, TeacherConfig
from dard.data import DatasetBundle, ImageSet, load_dataset, split_train_val
from dard.errors import DardError
from dard.io import sha256_file
from dard.models import library_prefix
from dard.run_dir import RunDir

T = TypeVar("T")


def at_key(key: str, build: Callable[[], T]) -> T:
    """``build()``, its DardError prefixed with the config key it came from."""
    try:
        return build()
    except DardError as e:
        raise DardError(f"{key}: {e}") from None


@dataclass
class Data:
    """The splits a run uses: train (for SGD), val (for checkpoint selection), test (final evaluation only)."""

    bundle: DatasetBundle
    train: ImageSet
    val: ImageSet
    test: ImageSet


def prepare_data(cfg: RunConfig, bundle: DatasetBundle | None = None, *, new_run: bool = False) -> Data:
    """Load the dataset (unless ``bundle`` is it, already loaded) and carve the fixed, seeded validation split out
    of the training set. ``new_run``: a subset larger than the images there are is refused (:func:`check_subsets`;
    a run folder's record, made when it was cut to them, reads as it was made)."""
    bundle = bundle or load_dataset(cfg.data.name, cfg.data.dir, download=cfg.data.download)
    val_size = cfg.data.val_size if cfg.data.val_size < 1 else int(cfg.data.val_size)
    try:
        train, val = split_train_val(bundle.train, val_size, seed=cfg.seed)
    except DardError as e:  # its one check, of val_size ("val_size 1437 leaves no training ..."): the config's key
        raise DardError(f"data.{e} of dataset '{cfg.data.name}'") from None
    if new_run:
        check_subsets(cfg, len(train), len(bundle.test))
    if cfg.data.train_subset is not None:
        train = train.subset(torch.arange(min(cfg.data.train_subset, len(train))))
    test = bundle.test
    if cfg.data.test_subset is not None:
        test = test.subset(torch.arange(min(cfg.data.test_subset, len(test))))
    if len(val) == 0:
        raise DardError("data.val_size leaves no validation images; checkpoint selection needs a held-out split")
    if cfg.optim.batch_size > len(train):  # every epoch drops its last, partial batch: no step would be taken
        raise DardError(
            f"optim.batch_size {cfg.optim.batch_size} exceeds the {len(train)} training images (after data.val_size"
            f"{' and data.train_subset' if cfg.data.train_subset is not None else ''})"
        )
    return Data(bundle, train, val, test)


def check_subsets(cfg: RunConfig, train: int, test: int) -> None:
    """``data.train_subset`` and ``data.test_subset`` within the ``train`` images left after ``data.val_size`` and
    the ``test`` images of the dataset, and ``eval.autoattack_subset`` within the test images evaluated: a larger
    one was cut to what there is, in silence, and the run trained and was measured on fewer images than its config
    says."""
    tested = min(test, cfg.data.test_subset or test)
    for key, n, there, what in (
        (
            "data.train_subset",
            cfg.data.train_subset,
            train,
            f"training images left after data.val_size {cfg.data.val_size:g}",
        ),
        ("data.test_subset", cfg.data.test_subset, test, "test images"),
        ("eval.autoattack_subset", cfg.eval.autoattack_subset, tested, "test images evaluated"),
    ):
        if n is not None and n > there:
            other = "leave it out to use them all" if key.startswith("data.") else "raise data.test_subset"
            raise DardError(
                f"{key} {n} exceeds the {there} {what} of dataset '{cfg.data.name}'; set it to {there} or fewer"
                + ("" if key == "eval.autoattack_subset" and tested == test else f", or {other}")
            )


def float_tensors(images: ImageSet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` on ``device``: images as float in [0, 1], labels as int64."""
    return images.x.to(device).float().div_(255), images.y.to(device)


def load_teacher(
    tcfg: TeacherConfig,
    bundle: DatasetBundle,
    device: torch.device,
    threat_model: str,
    *,
    in_use_ok: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """A frozen teacher in eval mode with no parameter gradients, from a dard checkpoint, external weights or a
    RobustBench zoo name (``--teacher robustbench:<name>``: the trained model for the dataset and ``threat_model``
    (the run's norm, ``"Linf"`` or ``"L2"``: one name may be in both of the zoo's tables),
    its weights from robustbench's loader in ``$DARD_MODEL_DIR`` or the cache folder); returns it with its
    provenance (recorded in run.json: the checkpoint file read and its epoch, not the folder named). A dard
    checkpoint is :func:`dard.checkpoint.teacher_checkpoint`'s (``in_use_ok``: its run folder may be locked)."""
    checkpoint: str | Path | None = tcfg.checkpoint or None
    if checkpoint is not None and library_prefix(str(checkpoint)) is None:
        checkpoint = teacher_checkpoint(checkpoint, in_use_ok=in_use_ok)
    loaded = load_model(
        bundle,
        device,
        checkpoint=checkpoint,
        arch=tcfg.arch,
        weights=tcfg.weights,
        normalize=tcfg.normalize if tcfg.weights else None,  # a checkpoint's or zoo model's own: never stated
        kwargs=tcfg.kwargs,
        what="teacher",
        threat_model=threat_model,
    )
    teacher = loaded.model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, loaded.info if loaded.epoch is None else {**loaded.info, "epoch": loaded.epoch}


def teacher_sha256(tcfg: TeacherConfig, dataset: str, threat_model: str, *, in_use_ok: bool = False) -> str | None:
    """SHA-256 of the teacher's weights file as it is read (a dard checkpoint's ``.safetensors``, ``teacher.weights``,
    a zoo model's file; of the ``name digest`` lines of a zoo ensemble's files), for run.json: a path alone does not
    say which weights a student learned from. None without a teacher, or for a zoo model whose weights are not (yet)
    in dard's model folder."""
    named = tcfg.checkpoint
    if named and library_prefix(named) == "robustbench:":
        from dard.models.robustbench import weight_paths

        files = weight_paths(named.split(":", 1)[1], dataset, threat_model)
        if not files or not all(p.is_file() for p in files):
            return None
    elif named:
        files = [teacher_checkpoint(named, in_use_ok=in_use_ok)]
    elif tcfg.weights:
        files = [Path(tcfg.weights)]
    else:
        return None
    try:
        digests = [sha256_file(p) for p in files]
    except OSError as e:
        raise DardError(f"cannot read the teacher's weights {files[0]}: {e.strerror or e}") from None
    if len(files) == 1:
        return digests[0]
    return hashlib.sha256("".join(f"{p.name} {d}\n" for p, d in zip(files, digests, strict=True)).encode()).hexdigest()


def prepare_models(
    cfg: RunConfig, student: nn.Module, teacher: nn.Module | None, device: torch.device, dist_info: dist.DistInfo
) -> tuple[nn.Module, nn.Module | None]:
    """Apply the speed switches and the multi-process wrapper; returns (model to train with, teacher to call).

    Order matters: channels_last and SyncBatchNorm change the module itself, ``torch.compile`` wraps it, and
    DistributedDataParallel wraps the compiled module, so attacks (which unwrap DDP: they need no gradient
    sync) still run the compiled graph.
    """
    if cfg.speed.channels_last:
        # Module.to(memory_format=...) works at runtime but is missing from torch's stubs
        student.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if dist_info.enabled and cfg.speed.sync_bn and device.type == "cuda":
        student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
    model = student
    if cfg.speed.compile:
        # mode only when not the default: other backends than inductor take none
        kw: dict[str, Any] = {} if cfg.speed.compile_mode == "default" else {"mode": cfg.speed.compile_mode}
        # a Module compiles to an OptimizedModule, itself a Module (the stubs say only Callable)
        model = cast(nn.Module, torch.compile(student, backend=cfg.speed.compile_backend, **kw))
        if teacher is not None:
            teacher = cast(nn.Module, torch.compile(teacher, backend=cfg.speed.compile_backend, **kw))
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model, teacher


def lr_lambda(cfg: RunConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Per-step LR multiplier for the configured schedule (linear warm-up, then step/cosine/constant, or onecycle:
    a linear decay from the peak to 0 at the last step)."""
    o = cfg.optim
    total = o.epochs * steps_per_epoch
    warm = o.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        epoch = step / steps_per_epoch
        if o.warmup_epochs and epoch < o.warmup_epochs:
            return (step + 1) / (o.warmup_epochs * steps_per_epoch)
        if o.schedule == "step":
            return o.gamma ** sum(epoch >= m for m in o.milestones)
        if o.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        if o.schedule == "onecycle":
            return max(total - step, 0) / max(total - warm, 1)
        return 1.0

    return factor


def build_optimizer(
    cfg: RunConfig, student: nn.Module, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """SGD over the student's parameters and its per-step LR schedule."""
    optimizer = torch.optim.SGD(
        student.parameters(),
        lr=cfg.optim.lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
        nesterov=cfg.optim.nesterov,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run folder recorded (:meth:`dard.run_dir.RunDir.read_run_config`)."""
    return RunDir(run_dir).read_run_config()
