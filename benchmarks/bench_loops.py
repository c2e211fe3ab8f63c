"""The timed pieces of bench.py: training loops (dard's variants and the peer-style reference), evaluation attacks,
the device's matmul rate and peak memory. Each loop is a closure ``run(n_steps) -> images``."""

from __future__ import annotations

import copy
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext

import torch
from torch import nn

import reference
from dard.config import parse_config
from dard.data import DeviceLoader, ImageSet
from dard.evaluation.suite import build_suite
from dard.methods import create_method
from dard.training import precision
from dard.training.distributed import DistInfo
from dard.training.loop import prepare_models

EPS, STEP = 8 / 255, 2 / 255
Loop = Callable[[int], int]

# dard speed variants (speed.* config; "cudagraphs" adds torch.compile's mode="reduce-overhead" on top of compile)
VARIANTS: dict[str, dict] = {
    "plain": {"channels_last": False},
    "cl": {"channels_last": True},
    "bf16": {"amp": "bf16", "channels_last": True},
    # bf16 on torch's own CPU kernels, also where the loop would run its products on fp32 kernels (a CPU without
    # native bf16: dard.training.precision), to show the two side by side
    "bf16-torch": {"amp": "bf16", "channels_last": True},
    "compile": {"amp": "bf16", "channels_last": True, "compile": True},
    "cudagraphs": {"amp": "bf16", "channels_last": True},
}
COMPILED = {"compile", "cudagraphs"}
TORCH_BF16_KERNELS = {"bf16-torch"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int | None = None) -> float:
    """FLOP/s of a large square matmul in ``dtype`` on this device (the practical peak the loops are compared to);
    ``n``: its side (default 8192 on CUDA, 1024 on a CPU)."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 10
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def peak_memory(device: torch.device) -> float:
    """GiB: CUDA peak allocated since the last reset, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def free_memory(device: torch.device) -> None:
    """After a failed variant: drop compiled graphs and cached blocks so the next one starts clean."""
    import torch._dynamo

    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def endless(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches from ``loader`` epoch after epoch (calling ``set_epoch`` when it has one)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def dard_loop(variant: str, student0: nn.Module, teacher0: nn.Module, data: ImageSet, batch: int, k: int, device):
    """DARD training steps through dard's own loop pieces with the variant's speed switches."""
    speed = dict(VARIANTS[variant])
    if device.type != "cuda" and variant in COMPILED:
        speed["amp"] = "none"
    cfg = parse_config({"device": str(device), "speed": speed})
    student, teacher = copy.deepcopy(student0).to(device), copy.deepcopy(teacher0).to(device)
    model, teacher_fn = prepare_models(cfg, student, teacher, device, DistInfo())
    mark_step = lambda: None  # noqa: E731
    if variant == "cudagraphs":  # CUDA graphs need static shapes and a step boundary per training iteration
        model = torch.compile(student, mode="reduce-overhead")
        teacher_fn = torch.compile(teacher, mode="reduce-overhead")
        mark_step = torch.compiler.cudagraph_mark_step_begin
    method = create_method("dard", attack={"steps": k})
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = DeviceLoader(
        data, batch, device=device, shuffle=True, augment=True, crop_padding=4, flip=True, drop_last=True
    )
    batches = endless(loader)

    def run(n: int) -> int:
        model.train()
        for _ in range(n):
            x, y = next(batches)
            if cfg.speed.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            mark_step()
            with nullcontext() if variant in TORCH_BF16_KERNELS else precision.product_kernels(cfg, device):
                with precision.autocast(cfg, device):
                    out = method(model, teacher_fn, x, y)
                opt.zero_grad(set_to_none=True)
                out.loss.float().backward()
            opt.step()
        return n * batch

    return run


def reference_loop(student0: nn.Module, teacher0: nn.Module, data: ImageSet, batch: int, k: int, device) -> Loop:
    """The peer-style DARD step of reference.py (fp32, per-image DataLoader, two teacher calls)."""
    student, teacher = copy.deepcopy(student0).to(device), copy.deepcopy(teacher0).to(device)
    teacher.eval()
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    batches = endless(reference.loader(data.x, data.y, batch))

    def run(n: int) -> int:
        student.train()
        for _ in range(n):
            x, y = next(batches)
            reference.dard_step(student, teacher, opt, x.to(device), y.to(device), eps=EPS, step=STEP, steps=k)
        return n * batch

    return run


def timed(run: Loop, n: int, device: torch.device) -> float:
    """Images per second of ``n`` steps of ``run``."""
    sync(device)
    t0 = time.perf_counter()
    count = run(n)
    sync(device)
    return count / (time.perf_counter() - t0)


def pgd20_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, peer: bool) -> None:
    """One PGD-20 evaluation pass over ``x``: dard's suite attack, or reference.py's peer loop."""
    attack = build_suite(["pgd20"], EPS, seed=0)["pgd20"]
    for i in range(0, len(y), batch):
        xb, yb = x[i : i + batch], y[i : i + batch]
        if peer:
            reference.pgd20_peer(model, xb, yb, EPS, STEP)
        else:
            attack(model, xb, yb)


def autoattack_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict:
    """AutoAttack standard (Linf 8/255) on ``x``: seconds, images/s and robust accuracy."""
    attack = build_suite(["autoattack"], EPS, seed=0)["autoattack"]
    sync(device)
    t0 = time.perf_counter()
    x_adv = attack(model, x, y)
    sync(device)
    secs = time.perf_counter() - t0
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    return {"n": len(y), "seconds": secs, "images_per_s": len(y) / secs, "clean_accuracy": clean, "robust": robust}
