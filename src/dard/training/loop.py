"""The one training loop every method uses: SGD steps, validation-based checkpoint selection, snapshots to resume
from, then the final evaluation (:mod:`dard.training.final_eval`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import dard.training.distributed as dist
import dard.training.precision as precision
from dard.attacks import Attack
from dard.checkpoint import save_checkpoint
from dard.config import RunConfig, dump_config
from dard.config.read import build_method
from dard.data import DeviceLoader
from dard.methods import Method
from dard.module_utils import unwrap_model
from dard.progress import progress_bar
from dard.run_dir import EpochMetrics, Progress, RunDir, RunInfo, kept_epoch_name
from dard.runtime import configure_threads, environment, resolve_device
from dard.training.announce import Announcer, say
from dard.training.cost import DataSizes
from dard.training.deadline import TrainingStopped, past_deadline
from dard.training.final_eval import final_evaluation
from dard.training.preflight import RunParts, open_run
from dard.training.setup import Data, build_optimizer, prepare_models
from dard.training.state import load_state, save_state, settle_checkpoints
from dard.training.step_sums import StepSums, read_back
from dard.training.stretch import PendingStretch, other_process_count
from dard.training.validation import selection_score, validate


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    final_eval: bool = True,
    stop_at: float | None = None,
    announce: bool = True,
    own_teacher: bool = False,
) -> Path:
    """Train (or resume) a run in ``run_dir`` and evaluate its best and last checkpoints on the test split.

    With ``final_eval=False`` the test evaluation is left out; resuming the finished run later does only that.
    ``stop_at`` (a ``time.time()`` deadline): stop at the first step boundary after it with a resume snapshot
    (:class:`TrainingStopped`); then evaluate attack by attack while each attack's estimate fits before it, keeping
    each finished attack (otherwise :class:`TrainingStopped` with ``evaluation_pending``; a resume continues).
    ``announce``: print the run's header and a line per epoch (:mod:`dard.training.announce`).
    ``own_teacher``: the teacher is the caller's, trained to the end (its run folder may be locked meanwhile).
    Launched by ``torchrun``, every rank calls this; rank 0 alone writes files and evaluates.
    """
    device = resolve_device(cfg.device)
    dist_info, device = dist.setup(device)
    folder = RunDir(run_dir)
    if device.type == "cpu":
        configure_threads(cfg.speed.threads)  # before the data loads: its statistics' rounding depends on it
    torch.backends.cudnn.benchmark = cfg.speed.cudnn_benchmark
    try:
        # everything checked first; rank 0 holds the run folder's lock until the final evaluation is written
        # make_method: this module's build_method, looked up at each call (a wrapper set on it wraps the method trained)
        opened = open_run(
            cfg,
            folder,
            resume=resume,
            device=device,
            dist_info=dist_info,
            make_method=build_method,
            own_teacher=own_teacher,
        )
        with opened as parts:
            data = parts.data
            # logged at its first snapshot, else when it stops or ends: a resume that fails changes nothing
            stretch = PendingStretch.of(folder, resume, device, dist_info.world_size, dist_info.is_main)
            try:
                try:
                    speak = announce and dist_info.is_main
                    _train(cfg, folder, resume, device, dist_info, parts, stop_at, speak, final_eval, stretch)
                finally:
                    dist.teardown(dist_info)
                # Rank 0 evaluates alone once every rank has left the process group (they leave together, after
                # the last snapshot's barrier): no collective can time out during a long AutoAttack, and no rank
                # shuts the group down while another still holds it.
                if final_eval and dist_info.is_main:  # attack by attack, as far as stop_at allows
                    final_evaluation(cfg, folder.path, data, device, parts.eval_attacks, stop_at=stop_at)
            except TrainingStopped:
                stretch.log()
                raise
            stretch.log()
    except BaseException as e:  # the checks failed before training: leave the group too (a no-op if left)
        dist.leave_after(e, dist_info, folder.path)  # another rank gone: this one's line is not a dard bug's
        raise
    return folder.path


@dataclass
class _Run:
    """Everything a run holds while it trains."""

    cfg: RunConfig
    folder: RunDir
    device: torch.device
    dist_info: dist.DistInfo
    data: Data
    spec: dict[str, Any]  # how to rebuild the student (stored in its checkpoints)
    student: nn.Module  # the plain module: checkpoints, validation
    model: nn.Module  # what a training step calls (compiled and/or DDP-wrapped student)
    teacher: nn.Module | None
    teacher_info: dict[str, Any] | None
    teacher_sha256: str | None
    method: Method
    val_attack: Attack
    loader: DeviceLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    progress: Progress
    stop_at: float | None = None  # wall-clock deadline (time.time())
    announcer: Announcer | None = None  # the header and epoch lines (rank 0, when announced)
    stretch: PendingStretch | None = None  # a resume's entry for run.json, logged with the first snapshot

    @property
    def main(self) -> bool:
        return self.dist_info.is_main

    def snapshot(self) -> None:
        """Rank 0 writes a resume snapshot; every rank waits for it."""
        if self.main:
            if self.stretch is not None:
                self.stretch.log()
            save_state(
                self.folder,
                model=self.student,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                progress=self.progress,
            )
        dist.barrier(self.dist_info)


def _train(
    cfg: RunConfig,
    folder: RunDir,
    resume: bool,
    device: torch.device,
    dist_info: dist.DistInfo,
    parts: RunParts,
    stop_at: float | None = None,
    announce: bool = False,
    final_eval: bool = True,
    stretch: PendingStretch | None = None,
) -> None:
    run = _set_up(cfg, folder, device, dist_info, parts)
    run.stop_at, run.stretch = stop_at, stretch
    _start_or_resume(run, resume)
    if announce:
        sizes = DataSizes.of(parts.data)
        run.announcer = Announcer(cfg, folder, sizes, device, dist_info.world_size, final_eval, parts.method)
        say(run.announcer.header(run.progress), cfg.name)
    for epoch in range(run.progress.epoch, cfg.optim.epochs):
        sums, t0, resumed, stopped = _train_epoch(run, epoch)
        if not stopped:
            _end_epoch(run, epoch, sums, t0, resumed)
        if stopped or (epoch + 1 < cfg.optim.epochs and past_deadline(run.stop_at, dist_info, device, True)):
            raise TrainingStopped(folder.path, run.progress.epoch, run.progress.batch)


def _set_up(cfg: RunConfig, folder: RunDir, device: torch.device, dist_info: dist.DistInfo, parts: RunParts) -> _Run:
    """Speed switches, loader and optimizer around the student, teacher and method :func:`open_run` built."""
    data, bundle = parts.data, parts.data.bundle
    model, teacher_fn = prepare_models(cfg, parts.student, parts.teacher, device, dist_info)
    student = unwrap_model(model)  # SyncBatchNorm conversion may have replaced the module
    loader = DeviceLoader(
        data.train,
        cfg.optim.batch_size,
        device=device,
        shuffle=True,
        augment=cfg.data.augment,
        crop_padding=bundle.crop_padding,
        flip=bundle.flip,
        drop_last=True,
        seed=cfg.seed,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
    )
    assert len(loader) > 0  # prepare_data refused a batch larger than the training images
    optimizer, scheduler = build_optimizer(cfg, student, len(loader))
    return _Run(
        cfg=cfg,
        folder=folder,
        device=device,
        dist_info=dist_info,
        data=data,
        spec=parts.spec,
        student=student,
        model=model,
        teacher=teacher_fn,
        teacher_info=parts.teacher_info,
        teacher_sha256=parts.teacher_sha256,
        method=parts.method,
        val_attack=parts.val_attack,
        loader=loader,
        optimizer=optimizer,
        scheduler=scheduler,
        progress=Progress(train_seconds=0.0),
    )


def _start_or_resume(run: _Run, resume: bool) -> None:
    """Restore the last snapshot, or record the new run (config.yaml, run.json); then metrics.jsonl so far."""
    restored = resume and run.folder.has_snapshot()
    if restored:
        run.progress = load_state(run.folder, model=run.student, optimizer=run.optimizer, scheduler=run.scheduler)
    if run.main and resume and run.progress.epoch < run.cfg.optim.epochs:  # epochs to train: checkpoints written again
        said = settle_checkpoints(run.folder, run.progress)  # (no snapshot: killed before its first, it starts over)
        say(said + other_process_count(run.folder, run.dist_info.world_size), run.cfg.name)
    if run.main and not restored:
        run.folder.path.mkdir(parents=True, exist_ok=True)
        run.folder.write_config(dump_config(run.cfg))
        data = run.data
        run.folder.write_info(
            RunInfo(
                name=run.cfg.name,
                seed=run.cfg.seed,
                method=run.method.config(),
                student=run.spec,
                teacher=run.teacher_info,
                teacher_sha256=run.teacher_sha256,
                environment={**environment(run.device), "world_size": run.dist_info.world_size},
                data={"name": data.bundle.name, "train": len(data.train), "val": len(data.val), "test": len(data.test)},
            )
        )
    if run.main:
        run.folder.write_metrics(run.progress.history)


def _train_epoch(run: _Run, epoch: int) -> tuple[dict[str, Any], float, float, bool]:
    """One epoch of training steps (from the step a resumed snapshot stopped at); returns this rank's running
    sums (loss, correct, seen), the epoch's start time, the images those sums held at the start (a resume's), and
    whether it stopped at the deadline (with a snapshot)."""
    cfg, progress = run.cfg, run.progress
    assert progress.train_seconds is not None  # _set_up and _start_or_resume make it a number
    run.loader.set_epoch(epoch)
    run.model.train()
    # resumed mid-epoch: rank 0 saved the global sums so far
    sums = StepSums(progress.partial if progress.batch and run.main else None, first_step=progress.batch)
    # images of this epoch trained before a resume (rank 0 holds their global count): not in this stretch's rate
    resumed = float(sums.host["seen"])
    t0 = mark = time.time()  # t0: this epoch's throughput; mark: training time not yet added to progress
    steps = len(run.loader)
    bar = progress_bar(
        total=steps,
        initial=progress.batch,
        desc=f"{cfg.name} epoch {epoch + 1}/{cfg.optim.epochs}",
        enabled=cfg.progress and run.main,
    )
    stopped = False
    for batch_idx, (x, y) in enumerate(run.loader.iter_from(progress.batch), start=progress.batch):
        loss, logits = _step(run, x, y)
        sums.add(loss, logits, y)
        progress.global_step += 1
        progress.batch = batch_idx + 1
        bar.update(1)
        every, more = cfg.checkpoint_every_steps, progress.batch < steps
        snapshot = bool(every) and progress.global_step % every == 0 and more
        read = snapshot or not more or sums.pending >= cfg.speed.sync_every
        stopped = more and past_deadline(run.stop_at, run.dist_info, run.device, at_read_back=read)
        if read or stopped:
            # the one host sync; nothing is written before it, so a non-finite loss never reaches the disk
            read_back(sums, run.folder, epoch, progress.batch, run.dist_info, run.device)
            bar.set_postfix(
                loss=f"{sums.host['loss'] / max(sums.host['seen'], 1):.3f}",
                acc=f"{sums.host['correct'] / max(sums.host['seen'], 1):.3f}",
                img_s=f"{(sums.host['seen'] - resumed) * run.dist_info.world_size / max(time.time() - t0, 1e-9):.0f}",
            )
        if snapshot or stopped:
            progress.partial = dist.sum_over_ranks(sums.host, run.dist_info, run.device)
            progress.train_seconds += time.time() - mark  # so that a resumed run still counts the time before a kill
            run.snapshot()
            mark = time.time()
        if stopped:
            break
    bar.close()
    progress.train_seconds += time.time() - mark
    return sums.host, t0, resumed, stopped


def _step(run: _Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch, without a host sync (the loop checks the loss at its read-backs). Returns
    (loss, logits)."""
    if run.cfg.speed.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if run.cfg.speed.compile and run.device.type == "cuda":
        torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs (compile_mode reduce-overhead): a new iteration
    with precision.product_kernels(run.cfg, run.device):
        with precision.autocast(run.cfg, run.device):
            out = run.method(run.model, run.teacher, x, y)
        loss = out.loss.float()
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    return loss, out.logits


def _end_epoch(run: _Run, epoch: int, sums: dict[str, Any], t0: float, resumed: float = 0.0) -> None:
    """The epoch's metrics row (summed over ranks), validation and checkpoints on rank 0, then a snapshot.
    ``resumed``: the epoch's images trained before a resume, left out of the rate of this stretch since ``t0``."""
    progress = run.progress
    assert progress.train_seconds is not None  # _set_up and _start_or_resume make it a number
    total = dist.sum_over_ranks(sums, run.dist_info, run.device)
    row = EpochMetrics(
        epoch=epoch + 1,
        lr=run.optimizer.param_groups[0]["lr"],
        train_loss=total["loss"] / max(total["seen"], 1),
        train_acc=total["correct"] / max(total["seen"], 1),
        images_per_s=(total["seen"] - resumed) / max(time.time() - t0, 1e-9),
        train_seconds=round(progress.train_seconds, 3),  # cumulative, no validation
    )
    if run.main:
        _validate_and_checkpoint(run, row)
    progress.history.append(row)
    progress.epoch, progress.batch, progress.partial = epoch + 1, 0, None
    if run.main:
        run.folder.write_metrics(progress.history)
    run.snapshot()
    if run.announcer is not None:
        say(run.announcer.epoch_line(row, t0))


def _validate_and_checkpoint(run: _Run, row: EpochMetrics) -> None:
    """Validate on the configured epochs (and the last), keep the best checkpoint by the selection score, and
    always write the last one."""
    cfg, progress, epoch = run.cfg, run.progress, row.epoch
    if epoch % cfg.val.every == 0 or epoch == cfg.optim.epochs:
        val = validate(run.student, run.data.val, run.val_attack, cfg.val.batch_size, run.device)
        row.val_clean, row.val_robust = val.clean, val.robust
        score = selection_score(val, cfg.val.select_by)
        if progress.best_score is None or score > progress.best_score:
            progress.best_score, progress.best_epoch = score, epoch
            meta = {"epoch": epoch, "metrics": row.to_dict(), "selected_by": f"val_{cfg.val.select_by}"}
            save_checkpoint(run.folder.checkpoint("best"), run.student, run.spec, meta)
    meta = {"epoch": epoch, "metrics": row.to_dict()}
    save_checkpoint(run.folder.checkpoint("last"), run.student, run.spec, meta)
    if epoch in cfg.keep_epochs:
        save_checkpoint(run.folder.checkpoint(kept_epoch_name(epoch)), run.student, run.spec, meta)
