"""The one training loop every method uses: SGD, schedules, validation-based selection, resume, final eval."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from dard.checkpoint import load_checkpoint, save_checkpoint
from dard.data import DatasetBundle, DeviceLoader, ImageSet, load_dataset, split_train_val
from dard.errors import DardError
from dard.evaluation.suite import attack_from_spec, build_suite, evaluate
from dard.io import write_json, write_text
from dard.methods import create_method
from dard.models import create_model
from dard.module_utils import unwrap_model
from dard.runtime import configure_threads, environment, resolve_device, seed_everything
from dard.training import distributed as dist
from dard.training.config import RunConfig, TeacherConfig, dump_config, parse_config
from dard.training.state import POINTER, load_state, save_state
from dard.weights import load_weights


@dataclass
class Data:
    """The splits a run uses: train (for SGD), val (for checkpoint selection), test (final evaluation only)."""

    bundle: DatasetBundle
    train: ImageSet
    val: ImageSet
    test: ImageSet


def prepare_data(cfg: RunConfig) -> Data:
    """Load the dataset and carve the fixed, seeded validation split out of the training set."""
    bundle = load_dataset(cfg.data.name, cfg.data.dir, download=cfg.data.download)
    val_size = cfg.data.val_size if cfg.data.val_size < 1 else int(cfg.data.val_size)
    train, val = split_train_val(bundle.train, val_size, seed=cfg.seed)
    if cfg.data.train_subset is not None:
        train = train.subset(torch.arange(min(cfg.data.train_subset, len(train))))
    test = bundle.test
    if cfg.data.test_subset is not None:
        test = test.subset(torch.arange(min(cfg.data.test_subset, len(test))))
    if len(val) == 0:
        raise DardError("data.val_size leaves no validation images; checkpoint selection needs a held-out split")
    return Data(bundle, train, val, test)


def model_spec(arch: str, bundle: DatasetBundle, normalize: bool) -> dict[str, Any]:
    """How to rebuild a model: stored in every checkpoint's JSON."""
    return {
        "arch": arch,
        "num_classes": bundle.num_classes,
        "in_channels": bundle.image_shape[0],
        "mean": list(bundle.mean) if normalize else None,
        "std": list(bundle.std) if normalize else None,
    }


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Instantiate a model from a spec dict."""
    return create_model(
        spec["arch"],
        num_classes=spec["num_classes"],
        in_channels=spec["in_channels"],
        mean=spec["mean"],
        std=spec["std"],
    )


def load_teacher(tcfg: TeacherConfig, bundle: DatasetBundle, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """A frozen teacher in eval mode with no parameter gradients, from a dard checkpoint or external weights."""
    if tcfg.checkpoint:
        teacher, meta = load_checkpoint(tcfg.checkpoint, device)
        info = {"source": str(tcfg.checkpoint), **meta["model"]}
    else:
        spec = model_spec(str(tcfg.arch), bundle, tcfg.normalize)
        teacher = build_model(spec)
        load_weights(teacher, str(tcfg.weights))
        teacher = teacher.to(device)
        info = {"source": str(tcfg.weights), **spec}
    if info.get("num_classes") != bundle.num_classes:
        raise DardError(
            f"teacher has {info.get('num_classes')} classes but dataset '{bundle.name}' has {bundle.num_classes}"
        )
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, info


def lr_lambda(cfg: RunConfig, steps_per_epoch: int):
    """Per-step LR multiplier for the configured schedule (linear warm-up, then step/cosine/constant)."""
    o = cfg.optim
    total = o.epochs * steps_per_epoch

    def factor(step: int) -> float:
        epoch = step / steps_per_epoch
        if o.warmup_epochs and epoch < o.warmup_epochs:
            return (step + 1) / (o.warmup_epochs * steps_per_epoch)
        if o.schedule == "step":
            return o.gamma ** sum(epoch >= m for m in o.milestones)
        if o.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        return 1.0

    return factor


def build_method(cfg: RunConfig):
    """The configured loss object; the run's eps is the default budget of its training attack."""
    from dard.methods import method_params

    params = dict(cfg.method.params)
    if "attack" in method_params(cfg.method.name):
        attack = dict(params.get("attack") or {})
        attack.setdefault("eps", cfg.eps)
        params["attack"] = attack
    return create_method(cfg.method.name, **params)


def float_tensors(images: ImageSet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` on ``device``: images as float in [0, 1], labels as int64."""
    return images.x.to(device).float().div_(255), images.y.to(device)


def validate(model: nn.Module, data: ImageSet, cfg: RunConfig, device: torch.device) -> dict[str, float]:
    """Clean and robust accuracy on the validation split (attack from ``cfg.val.attack``, fixed seed)."""
    attack = attack_from_spec(cfg.val.attack, cfg.eps, cfg.seed)
    x, y = float_tensors(data, device)
    rec = evaluate(model, x, y, {"robust": attack}, batch_size=cfg.val.batch_size, device=device, progress=False)
    return {"val_clean": rec.clean["accuracy"], "val_robust": rec.attacks["robust"].accuracy}


def selection_score(metrics: dict[str, float], select_by: str) -> float:
    """The number the best checkpoint maximises (validation split only)."""
    if select_by == "clean":
        return metrics["val_clean"]
    if select_by == "sum":
        return metrics["val_clean"] + metrics["val_robust"]
    return metrics["val_robust"]


def _amp(cfg: RunConfig, device: torch.device):
    if cfg.speed.amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def prepare_models(
    cfg: RunConfig, student: nn.Module, teacher: nn.Module | None, device: torch.device, dinfo: dist.DistInfo
) -> tuple[nn.Module, nn.Module | None]:
    """Apply the speed switches and the multi-process wrapper; returns (model to train with, teacher to call).

    Order matters: channels_last and SyncBatchNorm change the module itself, ``torch.compile`` wraps it, and
    DistributedDataParallel wraps the compiled module, so attacks (which unwrap DDP: they need no gradient
    sync) still run the compiled graph.
    """
    if cfg.speed.channels_last:
        student.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)
    if dinfo.enabled and cfg.speed.sync_bn and device.type == "cuda":
        student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
    model = student
    if cfg.speed.compile:
        model = torch.compile(student, backend=cfg.speed.compile_backend)
        teacher = torch.compile(teacher, backend=cfg.speed.compile_backend) if teacher is not None else None
    if dinfo.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model, teacher


def train(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, final_eval: bool = True) -> Path:
    """Train (or resume) a run in ``run_dir`` and evaluate its best and last checkpoints on the test split.

    With ``final_eval=False`` the test evaluation is left out; resuming the finished run later does only that.
    Launched by ``torchrun``, every rank calls this; rank 0 alone writes files and evaluates.
    """
    device = resolve_device(cfg.device)
    dinfo, device = dist.setup(device)
    try:
        run_dir, data = _train(cfg, Path(run_dir), resume, device, dinfo)
    finally:
        dist.teardown(dinfo)
    # Rank 0 evaluates alone once every rank has left the process group (they leave together, after the last
    # snapshot's barrier): no collective can time out during a long AutoAttack, and no rank shuts the group
    # down while another still holds it.
    if final_eval and dinfo.is_main:
        final_evaluation(cfg, run_dir, data, device)
    return run_dir


def _train(
    cfg: RunConfig, run_dir: Path, resume: bool, device: torch.device, dinfo: dist.DistInfo
) -> tuple[Path, Data]:
    main = dinfo.is_main
    # Every rank checks the folder before any rank writes to it (the barrier below), so all agree.
    if resume:
        if not (run_dir / "config.yaml").exists():
            raise DardError(f"{run_dir} is not a dard run folder (no config.yaml)")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise DardError(
            f"run folder {run_dir} already exists and is not empty; use --resume {run_dir} or another --out"
        )
    if cfg.optim.batch_size % dinfo.world_size:
        raise DardError(
            f"optim.batch_size {cfg.optim.batch_size} (the global batch) must be divisible by the "
            f"{dinfo.world_size} processes"
        )
    dist.barrier(dinfo)
    if device.type == "cpu":
        configure_threads(cfg.speed.threads)
    torch.backends.cudnn.benchmark = cfg.speed.cudnn_benchmark
    seed_everything(cfg.seed)

    data = prepare_data(cfg)
    bundle = data.bundle
    spec = model_spec(cfg.model.arch, bundle, cfg.model.normalize)
    student = build_model(spec).to(device)
    method = build_method(cfg)
    teacher, teacher_info = None, None
    if method.needs_teacher:
        if not cfg.teacher.given:
            raise DardError(
                f"method '{cfg.method.name}' needs a teacher: "
                "set teacher.checkpoint (or teacher.arch + teacher.weights)"
            )
        teacher, teacher_info = load_teacher(cfg.teacher, bundle, device)
    model, teacher_fn = prepare_models(cfg, student, teacher, device, dinfo)
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
        rank=dinfo.rank,
        world_size=dinfo.world_size,
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise DardError(f"batch size {cfg.optim.batch_size} exceeds the {len(data.train)} training images")
    optimizer = torch.optim.SGD(
        student.parameters(),
        lr=cfg.optim.lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
        nesterov=cfg.optim.nesterov,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))

    progress: dict[str, Any] = {
        "epoch": 0,
        "batch": 0,
        "global_step": 0,
        "best_score": None,
        "best_epoch": None,
        "history": [],
        "train_seconds": 0.0,
    }
    if resume and (run_dir / POINTER).exists():
        progress = load_state(run_dir, model=student, optimizer=optimizer, scheduler=scheduler)
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", dump_config(cfg))
        write_json(
            run_dir / "run.json",
            {
                "name": cfg.name,
                "seed": cfg.seed,
                "method": method.config(),
                "student": spec,
                "teacher": teacher_info,
                "environment": {**environment(device), "world_size": dinfo.world_size},
                "data": {"name": bundle.name, "train": len(data.train), "val": len(data.val), "test": len(data.test)},
            },
        )
    if main:
        write_text(run_dir / "metrics.jsonl", "".join(_jsonl(h) for h in progress["history"]))

    def snapshot() -> None:
        if main:
            save_state(run_dir, model=student, optimizer=optimizer, scheduler=scheduler, progress=progress)
        dist.barrier(dinfo)

    zero = {"loss": 0.0, "correct": 0.0, "seen": 0}
    for epoch in range(progress["epoch"], cfg.optim.epochs):
        loader.set_epoch(epoch)
        model.train()
        sums = dict(zero)
        if progress["batch"] and main:  # resumed mid-epoch: rank 0 saved the global sums so far
            sums = dict(progress.get("partial", sums))
        t0 = mark = time.time()  # t0: this epoch's throughput; mark: training time not yet added to progress
        bar = tqdm(
            total=steps_per_epoch,
            initial=progress["batch"],
            desc=f"{cfg.name} epoch {epoch + 1}/{cfg.optim.epochs}",
            disable=not (cfg.progress and main),
            leave=False,
        )
        for batch_idx, (x, y) in enumerate(loader.iter_from(progress["batch"]), start=progress["batch"]):
            if cfg.speed.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _amp(cfg, device):
                out = method(model, teacher_fn, x, y)
            loss = out.loss.float()
            finite = bool(torch.isfinite(loss))
            if not finite or dinfo.enabled:
                last = (
                    "the last good checkpoint is kept in " + str(run_dir)
                    if (run_dir / POINTER).exists()
                    else "no checkpoint was written yet"
                )
                what = f"loss is {loss.item()}" if not finite else "loss is not finite on another process"
                dist.agree(
                    finite,
                    f"{what} at epoch {epoch + 1} step {batch_idx + 1}; stopping ({last}); lower optim.lr?",
                    dinfo,
                    device,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            n = y.shape[0]
            sums["loss"] += loss.item() * n
            sums["correct"] += (out.logits.argmax(1) == y).sum().item()
            sums["seen"] += n
            progress["global_step"] += 1
            progress["batch"] = batch_idx + 1
            elapsed = time.time() - t0
            bar.update(1)
            bar.set_postfix(
                loss=f"{sums['loss'] / sums['seen']:.3f}",
                acc=f"{sums['correct'] / sums['seen']:.3f}",
                img_s=f"{sums['seen'] * dinfo.world_size / max(elapsed, 1e-9):.0f}",
            )
            if (
                cfg.checkpoint_every_steps
                and progress["global_step"] % cfg.checkpoint_every_steps == 0
                and progress["batch"] < steps_per_epoch
            ):
                progress["partial"] = dist.sum_over_ranks(sums, dinfo, device)
                # so that a resumed run still counts the time spent before the kill
                progress["train_seconds"] += time.time() - mark
                snapshot()
                mark = time.time()
        bar.close()
        progress["train_seconds"] += time.time() - mark
        total = dist.sum_over_ranks(sums, dinfo, device)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": total["loss"] / max(total["seen"], 1),
            "train_acc": total["correct"] / max(total["seen"], 1),
            "images_per_s": total["seen"] / max(time.time() - t0, 1e-9),
            "train_seconds": round(progress["train_seconds"], 3),
        }  # cumulative, no validation
        if main:
            if (epoch + 1) % cfg.val.every == 0 or epoch + 1 == cfg.optim.epochs:
                row.update(validate(student, data.val, cfg, device))
                score = selection_score(row, cfg.val.select_by)
                if progress["best_score"] is None or score > progress["best_score"]:
                    progress["best_score"], progress["best_epoch"] = score, epoch + 1
                    save_checkpoint(
                        run_dir / "best",
                        student,
                        spec,
                        {"epoch": epoch + 1, "metrics": row, "selected_by": f"val_{cfg.val.select_by}"},
                    )
            save_checkpoint(run_dir / "last", student, spec, {"epoch": epoch + 1, "metrics": row})
        progress["history"].append(row)
        progress.update(epoch=epoch + 1, batch=0)
        progress.pop("partial", None)
        if main:
            write_text(run_dir / "metrics.jsonl", "".join(_jsonl(h) for h in progress["history"]))
        snapshot()
        if cfg.progress and main:
            val = f" val clean {row['val_clean']:.3f} robust {row['val_robust']:.3f}" if "val_clean" in row else ""
            tqdm.write(f"[{cfg.name}] epoch {epoch + 1}: loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}{val}")

    return run_dir, data


def final_evaluation(cfg: RunConfig, run_dir: Path, data: Data, device: torch.device) -> None:
    """Evaluate the selected checkpoints on the test split with the suite; writes ``eval/<ckpt>*.json``."""
    x, y = float_tensors(data.test, device)
    env = environment(device)
    for which in cfg.eval.checkpoints:
        out = run_dir / "eval" / f"{which}.json"
        if out.exists():  # resumed after the evaluation already finished
            continue
        model, meta = load_checkpoint(run_dir / f"{which}.safetensors", device)
        info = {**meta["model"], "checkpoint": f"{which}", "epoch": meta.get("epoch")}
        dinfo = {"name": data.bundle.name, "split": "test", "n": int(x.shape[0])}
        attacks = build_suite(cfg.eval.attacks, cfg.eps, seed=cfg.seed)
        rec = evaluate(
            model,
            x,
            y,
            attacks,
            batch_size=cfg.eval.batch_size,
            device=device,
            progress=cfg.progress,
            model_info=info,
            data_info=dinfo,
            seed=cfg.seed,
            environment=env,
        )
        result = rec.to_dict()
        # The expensive parts (AutoAttack, the eps sweep) run for the first listed checkpoint only (best).
        if cfg.eval.autoattack_subset and which == cfg.eval.checkpoints[0]:
            k = min(cfg.eval.autoattack_subset, x.shape[0])
            aa = evaluate(
                model,
                x[:k],
                y[:k],
                build_suite(["autoattack"], cfg.eps, seed=cfg.seed),
                batch_size=cfg.eval.batch_size,
                device=device,
                progress=cfg.progress,
                model_info=info,
                data_info={**dinfo, "n": k},
                seed=cfg.seed,
                environment=env,
            )
            result["autoattack_subset"] = aa.to_dict()
        if cfg.eval.eps_sweep and which == cfg.eval.checkpoints[0]:
            sweep = {}
            for eps in cfg.eval.eps_sweep:
                r = evaluate(
                    model,
                    x,
                    y,
                    build_suite(["pgd20"], eps, seed=cfg.seed),
                    batch_size=cfg.eval.batch_size,
                    device=device,
                    progress=False,
                )
                sweep[f"{eps:.6f}"] = r.attacks["pgd20"].accuracy
            result["eps_sweep"] = {"attack": "pgd20", "accuracy": sweep}
        write_json(out, result)


def _jsonl(row: dict[str, Any]) -> str:
    import json

    return json.dumps(row) + "\n"


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run folder recorded."""
    import yaml

    p = Path(run_dir) / "config.yaml"
    if not p.exists():
        raise DardError(f"{run_dir} is not a dard run folder (no config.yaml)")
    return parse_config(yaml.safe_load(p.read_text(encoding="utf-8")))
