"""Benchmark: dard's DARD training step and robustness evaluation against a peer-style reference loop.

    python benchmarks/bench.py                      # CPU defaults: ResNet-20 student, ResNet-56 teacher, DPGD-10
    python benchmarks/bench.py --student resnet18   # the paper's pair (on a GPU)

In one process and on the same images it times (after warm-up, alternating the two so drift hits both):
- training steps of ``dard`` (DeviceLoader, autograd w.r.t. the input only, one concatenated teacher call, and
  each speed variant: plain fp32, channels_last, bf16 autocast, torch.compile) and of ``reference.py`` (fp32,
  per-image DataLoader, ``loss.backward()`` in the attack, two teacher calls); images/s and their ratio;
- evaluation: PGD-20 (dard's suite attack vs the reference loop) and AutoAttack standard on N images;
- peak memory, and achieved FLOP/s = useful multiply-adds x 2 x images/s, as a fraction of the device's peak
  (measured here with a large matmul in the loop's precision; the nominal datasheet figure is printed beside
  it on known GPUs).

Figures go to ``benchmarks/results/<device>.json`` and ``<device>.md``. Timings are never asserted by tests.
"""

from __future__ import annotations

import argparse
import copy
import re
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402
from dard.data import DeviceLoader, ImageSet  # noqa: E402
from dard.evaluation.suite import build_suite  # noqa: E402
from dard.io import write_json, write_text  # noqa: E402
from dard.methods import create_method  # noqa: E402
from dard.models import create_model  # noqa: E402
from dard.models.cost import macs_per_image  # noqa: E402
from dard.runtime import configure_threads, device_name, environment, resolve_device  # noqa: E402
from dard.training import parse_config  # noqa: E402
from dard.training.distributed import DistInfo  # noqa: E402
from dard.training.loop import _amp, prepare_models  # noqa: E402

EPS, STEP = 8 / 255, 2 / 255
# Nominal dense peak FLOP/s by device-name pattern (bf16 on GPUs), for comparison with the measured matmul peak.
NOMINAL = {r"H100": 790e12, r"H200": 989e12, r"A100": 312e12}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_peak(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large matmul in ``dtype`` on this device (the practical peak)."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 50 if device.type == "cuda" else 10
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


def images(n: int, data_dir: str | None) -> tuple[ImageSet, ImageSet]:
    """(training, evaluation) images: CIFAR-10 train and test when a folder is given, else random uint8 images
    (training speed ignores content)."""
    if data_dir:
        from dard.data import load_dataset

        bundle = load_dataset("cifar10", data_dir)
        return bundle.train.subset(torch.arange(n)), bundle.test
    g = torch.Generator().manual_seed(0)
    rand = ImageSet(
        torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)
    )
    return rand, rand


def endless(loader):
    """Batches from ``loader`` epoch after epoch (calling ``set_epoch`` when it has one)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def dard_trainer(variant: dict, student0, teacher0, data: ImageSet, args, device):
    """A closure running ``n`` DARD training steps with dard's own loop pieces and the variant's switches."""
    cfg = parse_config({"device": str(device), "speed": variant})
    student, teacher = copy.deepcopy(student0).to(device), copy.deepcopy(teacher0).to(device)
    model, teacher_fn = prepare_models(cfg, student, teacher, device, DistInfo())
    method = create_method("dard", attack={"steps": args.attack_steps})
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = DeviceLoader(data, args.batch_size, device=device, shuffle=True, augment=True, drop_last=True)
    batches = endless(loader)

    def run(n: int) -> int:
        model.train()
        for _ in range(n):
            x, y = next(batches)
            if cfg.speed.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _amp(cfg, device):
                out = method(model, teacher_fn, x, y)
            opt.zero_grad(set_to_none=True)
            out.loss.float().backward()
            opt.step()
        return n * args.batch_size

    return run


def reference_trainer(student0, teacher0, data: ImageSet, args, device):
    student, teacher = copy.deepcopy(student0).to(device), copy.deepcopy(teacher0).to(device)
    teacher.eval()
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    batches = endless(reference.loader(data.x, data.y, args.batch_size))

    def run(n: int) -> int:
        student.train()
        for _ in range(n):
            x, y = next(batches)
            reference.dard_step(
                student, teacher, opt, x.to(device), y.to(device), eps=EPS, step=STEP, steps=args.attack_steps
            )
        return n * args.batch_size

    return run


def timed(run, n: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    count = run(n)
    sync(device)
    return count / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", default="resnet20")
    p.add_argument("--teacher", default="resnet56")
    p.add_argument("--attack-steps", type=int, default=10, help="DPGD steps per training batch (K)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="timed training steps per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (median reported)")
    p.add_argument("--eval-n", type=int, default=256, help="images for the PGD-20 timing")
    p.add_argument("--aa-n", type=int, default=32, help="images for the AutoAttack timing (0: skip)")
    p.add_argument(
        "--variants",
        default=None,
        help="comma-separated dard variants: plain, cl, bf16, compile (default: plain,cl,bf16 on CPU; "
        "plain,bf16,compile on CUDA)",
    )
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: random images)")
    p.add_argument(
        "--eval-checkpoint",
        help="dard checkpoint timed by the PGD-20/AutoAttack evaluation (default: the "
        "randomly initialised student; a trained model gives realistic AutoAttack times)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    if device.type == "cpu":
        configure_threads(args.threads)
    torch.manual_seed(0)
    variants_all = {
        "plain": {"channels_last": False},
        "cl": {"channels_last": True},
        "bf16": {"amp": "bf16", "channels_last": True},
        "compile": {"amp": "bf16" if device.type == "cuda" else "none", "channels_last": True, "compile": True},
    }
    names = (args.variants or ("plain,bf16,compile" if device.type == "cuda" else "plain,cl,bf16")).split(",")
    student = create_model(args.student, num_classes=10, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])
    teacher = create_model(args.teacher, num_classes=10, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26]).eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    s_macs, t_macs = macs_per_image(student), macs_per_image(teacher)
    k = args.attack_steps
    # Useful multiply-adds per training image: K attack steps (forward + input backward ~ 2 forwards), the
    # teacher on x and x_adv (2 forwards), the student's training forward + backward (~3 forwards).
    train_macs = (2 * k + 3) * s_macs + 2 * t_macs
    data, eval_data = images(args.batch_size * (args.steps + 1) * 2, args.data_dir)

    runners = {f"dard-{v}": dard_trainer(variants_all[v], student, teacher, data, args, device) for v in names}
    runners["reference"] = reference_trainer(student, teacher, data, args, device)
    for name, run in runners.items():  # warm-up (cudnn autotuning, compilation)
        t0 = time.perf_counter()
        run(1)
        print(f"warm-up {name}: {time.perf_counter() - t0:.1f}s", flush=True)
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    memory: dict[str, float] = {}
    for r in range(args.rounds):
        for name, run in runners.items():
            reset_memory(device)
            speeds[name].append(timed(run, args.steps, device))
            memory[name] = max(memory.get(name, 0.0), peak_memory(device))
            print(f"round {r + 1} {name}: {speeds[name][-1]:.1f} img/s", flush=True)
    train = {name: statistics.median(v) for name, v in speeds.items()}

    # ---- evaluation
    x_eval = eval_data.x[: args.eval_n].to(device).float() / 255
    y_eval = eval_data.y[: args.eval_n].to(device)
    if args.eval_checkpoint:
        from dard.checkpoint import load_checkpoint

        sm, _ = load_checkpoint(args.eval_checkpoint, device)
    else:
        sm = copy.deepcopy(student).to(device).eval()
    pgd = build_suite(["pgd20"], EPS, seed=0)["pgd20"]
    ev: dict[str, float] = {}
    for _ in range(args.rounds):
        sync(device)
        t0 = time.perf_counter()
        for i in range(0, len(y_eval), args.batch_size):
            pgd(sm, x_eval[i : i + args.batch_size], y_eval[i : i + args.batch_size])
        sync(device)
        ev.setdefault("dard", []).append(len(y_eval) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for i in range(0, len(y_eval), args.batch_size):
            reference.pgd20_peer(sm, x_eval[i : i + args.batch_size], y_eval[i : i + args.batch_size], EPS, STEP)
        sync(device)
        ev.setdefault("reference", []).append(len(y_eval) / (time.perf_counter() - t0))
    pgd20 = {k2: statistics.median(v) for k2, v in ev.items()}
    aa = None
    if args.aa_n:
        attack = build_suite(["autoattack"], EPS, seed=0)["autoattack"]
        sync(device)
        t0 = time.perf_counter()
        attack(sm, x_eval[: args.aa_n], y_eval[: args.aa_n])
        sync(device)
        secs = time.perf_counter() - t0
        aa = {"n": args.aa_n, "seconds": secs, "images_per_s": args.aa_n / secs}

    peak_fp32 = measured_peak(device, torch.float32)
    peak_bf16 = measured_peak(device, torch.bfloat16)
    dname = device_name(device)
    nominal = next((v for pat, v in NOMINAL.items() if re.search(pat, dname)), None)
    rows = {}
    for name, ips in train.items():
        bf16 = name.startswith("dard-") and variants_all[name[5:]].get("amp") == "bf16"
        peak = (peak_bf16 if bf16 else peak_fp32) or peak_fp32
        flops = 2 * train_macs * ips
        rows[name] = {
            "images_per_s": ips,
            "vs_reference": ips / train["reference"],
            "achieved_flops": flops,
            "fraction_of_measured_peak": flops / peak,
            "fraction_of_nominal_bf16_peak": flops / nominal if nominal else None,
            "peak_memory_gib": memory[name],
            "all_rounds": speeds[name],
        }
    slug = re.sub(
        r"[^a-z0-9]+", "-", (dname if device.type == "cuda" else f"cpu-{torch.get_num_threads()}threads").lower()
    ).strip("-")
    result = {
        "device": dname,
        "environment": environment(device),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "setup": {
            "student": args.student,
            "teacher": args.teacher,
            "attack_steps": k,
            "batch_size": args.batch_size,
            "timed_steps_per_round": args.steps,
            "rounds": args.rounds,
            "data": args.data_dir or "random",
            "student_macs": s_macs,
            "teacher_macs": t_macs,
            "train_macs_per_image": train_macs,
        },
        "peak_flops": {"measured_fp32_matmul": peak_fp32, "measured_bf16_matmul": peak_bf16, "nominal_bf16": nominal},
        "train": rows,
        "pgd20_eval": {**pgd20, "vs_reference": pgd20["dard"] / pgd20["reference"]},
        "eval_model": args.eval_checkpoint or f"{args.student} (random weights)",
        "autoattack": aa,
        "memory_note": "CUDA: peak allocated per loop; CPU: process peak RSS so far",
    }
    out = Path(args.out)
    write_json(out / f"{slug}.json", result)
    write_text(out / f"{slug}.md", summary(result))
    print(summary(result))
    return 0


def summary(r: dict) -> str:
    s = r["setup"]
    lines = [
        f"# Benchmark: {r['device']}",
        "",
        f"`{r['command']}` ({r['date']}, dard {r['environment'].get('git_commit')}, torch "
        f"{r['environment'].get('torch')})",
        "",
        f"DARD training step: student {s['student']}, teacher {s['teacher']}, DPGD-{s['attack_steps']}, batch "
        f"{s['batch_size']}, {s['data']} images; {s['train_macs_per_image'] / 1e9:.2f} GMAC of useful work per "
        f"image. Median of {s['rounds']} alternating rounds of {s['timed_steps_per_round']} steps.",
        "",
        "| Loop | images/s | vs reference | achieved FLOP/s | of measured peak | of nominal bf16 peak "
        "| peak memory (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in r["train"].items():
        nom = f"{100 * row['fraction_of_nominal_bf16_peak']:.1f}%" if row["fraction_of_nominal_bf16_peak"] else "—"
        lines.append(
            f"| {name} | {row['images_per_s']:.1f} | {row['vs_reference']:.2f}x | "
            f"{row['achieved_flops'] / 1e9:.1f} G | {100 * row['fraction_of_measured_peak']:.1f}% | {nom} | "
            f"{row['peak_memory_gib']:.2f} |"
        )
    pf = r["peak_flops"]
    lines += [
        "",
        f"Measured matmul peak: fp32 {pf['measured_fp32_matmul'] / 1e9:.0f} GFLOP/s"
        + f", bf16 {pf['measured_bf16_matmul'] / 1e9:.0f} GFLOP/s (bf16 loops are compared with the bf16 figure)"
        + (f"; nominal bf16 {pf['nominal_bf16'] / 1e12:.0f} TFLOP/s" if pf["nominal_bf16"] else "")
        + ".",
        "",
        f"Evaluation model: {r['eval_model']}.",
        f"PGD-20 evaluation: dard {r['pgd20_eval']['dard']:.1f} img/s, reference "
        f"{r['pgd20_eval']['reference']:.1f} img/s ({r['pgd20_eval']['vs_reference']:.2f}x).",
    ]
    if r["autoattack"]:
        a = r["autoattack"]
        lines.append(
            f"AutoAttack standard: {a['n']} images in {a['seconds']:.1f}s ({a['images_per_s']:.2f} img/s; "
            "its cost grows with the number of points that stay robust)."
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
