"""Benchmark: dard's DARD training step and robustness evaluation against a peer-style reference loop.

    python benchmarks/bench.py                 # CPU: ResNet-20 student, ResNet-56 teacher, DPGD-10, batch 128
    python benchmarks/bench.py --device cuda   # GPU: ResNet-18 / ResNet-56, batch 128 and 512, every variant
    python benchmarks/bench.py --smoke         # a few seconds: tiny models, to check the chain end to end

In one process it times training steps of ``dard`` (DeviceLoader, autograd w.r.t. the input only, one teacher call;
speed variants plain fp32, channels_last, bf16 autocast, torch.compile, torch.compile with CUDA graphs) and of
``reference.py`` (fp32, per-image DataLoader, ``loss.backward()`` in the attack, two teacher calls), alternating
the loops round by round so that drift hits all; then PGD-20 evaluation (dard's suite attack vs the reference loop)
and AutoAttack standard on N images. It reports images/s (min / median / max over the rounds), the ratio to the
reference (paired per round), achieved FLOP/s as a fraction of a large bf16 matmul measured in the same run, and
peak memory.

Every loop and every evaluation fails soft (the error is recorded and the rest goes on), the JSON is rewritten
after every round, and ``--budget`` seconds stop it from starting work it cannot finish: a killed run keeps what it
measured. Figures go to ``<out>/<device>.json`` and ``.md``. Timings are never asserted by tests.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_loops as bl  # noqa: E402
from bench_report import summary  # noqa: E402
from dard.data import ImageSet  # noqa: E402
from dard.io import write_json, write_text  # noqa: E402
from dard.models import create_model  # noqa: E402
from dard.models.cost import macs_per_image  # noqa: E402
from dard.runtime import configure_threads, device_name, environment, resolve_device  # noqa: E402

# Nominal dense bf16 FLOP/s by device-name pattern, printed beside the measured matmul rate.
NOMINAL = {r"H100": 989e12, r"H200": 989e12, r"A100": 312e12}
PRESETS = {
    "cpu": dict(student="resnet20", teacher="resnet56", batch_sizes="128", variants="plain,cl,bf16", steps=3,
                rounds=5, eval_n=256, aa_n=32, attack_steps=10),
    # budget: the default GPU run fits a 4-minute slot of a 9-minute job (the compiled loops go last)
    "cuda": dict(student="resnet18", teacher="resnet56", batch_sizes="128,512",
                 variants="plain,bf16,compile,cudagraphs", steps=10, rounds=5, eval_n=1000, aa_n=1000, attack_steps=10,
                 budget=230.0),
    # matmul_n: a small matmul, since a CPU without native bf16 emulates it (1024^3 took about 30 s there)
    "smoke": dict(student="resnet8", teacher="resnet8", batch_sizes="8", variants="plain,bf16", steps=1, rounds=2,
                  eval_n=8, aa_n=2, attack_steps=2, matmul_n=256),
}  # fmt: skip
# Seconds of budget a phase needs before it is started (compilation dominates the compiled loops).
NEEDS = {"eager": 20.0, "compiled": 90.0, "pgd20": 10.0, "autoattack": 30.0}


@dataclass
class Phase:
    kind: str  # train | pgd20 | autoattack
    batch: int = 0
    loops: list[str] = field(default_factory=list)
    needs: float = 0.0


def plan(args: argparse.Namespace) -> list[Phase]:
    """Cheap and certain work first: eager loops, then evaluation, then the compiled loops."""
    variants = args.variants.split(",")
    eager = [v for v in variants if v not in bl.COMPILED] + ([] if args.no_reference else ["reference"])
    compiled = [v for v in variants if v in bl.COMPILED]
    phases = [Phase("train", b, eager, NEEDS["eager"]) for b in args.batch_sizes if eager]
    if args.eval_n:
        phases.append(Phase("pgd20", needs=NEEDS["pgd20"]))
    if args.aa_n:
        phases.append(Phase("autoattack", needs=NEEDS["autoattack"]))
    phases += [Phase("train", b, compiled, NEEDS["compiled"]) for b in args.batch_sizes if compiled]
    return phases


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class Bench:
    """Holds the models, the result record and the clock; each phase method fills its part of the record."""

    def __init__(self, args: argparse.Namespace, device: torch.device, argv: list[str]) -> None:
        self.args, self.device, self.t0 = args, device, time.perf_counter()
        norm = dict(mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])
        torch.manual_seed(0)
        self.student = create_model(args.student, num_classes=10, **norm)
        self.teacher = create_model(args.teacher, num_classes=10, **norm).eval()
        for q in self.teacher.parameters():
            q.requires_grad_(False)
        s_macs, t_macs = macs_per_image(self.student), macs_per_image(self.teacher)
        # Useful multiply-adds per training image: K attack steps (forward + input backward ~ 2 forwards), the
        # teacher on x and x_adv (2 forwards), the student's training forward + backward (~3 forwards).
        self.train_macs = (2 * args.attack_steps + 3) * s_macs + 2 * t_macs
        dname = device_name(device)
        slug = dname if device.type == "cuda" else f"cpu-{torch.get_num_threads()}threads"
        self.out = Path(args.out) / re.sub(r"[^a-z0-9]+", "-", slug.lower()).strip("-")
        setup = {k: getattr(args, k) for k in ("student", "teacher", "attack_steps", "batch_sizes", "steps", "rounds")}
        self.r: dict = {
            "device": dname,
            "environment": environment(device),
            "date": time.strftime("%Y-%m-%d"),
            "command": "python benchmarks/bench.py " + " ".join(argv),
            "setup": {
                **setup,
                "data": args.data_dir or "random",
                "student_macs": s_macs,
                "teacher_macs": t_macs,
                "train_macs_per_image": self.train_macs,
                "budget_s": args.budget,
            },  # fmt: skip
            "peak_flops": {"nominal_bf16": next((v for p, v in NOMINAL.items() if re.search(p, dname)), None)},
            "train": {},
            "pgd20_eval": None,
            "autoattack": None,
            "skipped": [],
            "complete": False,
        }

    # -- bookkeeping -------------------------------------------------------------------------------------------

    def left(self) -> float:
        return float("inf") if self.args.budget is None else self.args.budget - (time.perf_counter() - self.t0)

    def save(self) -> None:
        self.r["seconds"] = round(time.perf_counter() - self.t0, 1)
        write_json(self.out.with_suffix(".json"), self.r)
        write_text(self.out.with_suffix(".md"), summary(self.r))

    def failed(self, row: dict, exc: BaseException) -> None:
        row["status"], row["error"] = "failed", first_line(exc)
        print(f"FAILED {row.get('loop', '')}: {row['error']}", flush=True)
        traceback.print_exc(limit=-3)
        bl.free_memory(self.device)

    def images(self, n: int, split: str) -> ImageSet:
        """CIFAR-10 (train or test split) when --data-dir is given, else random uint8 images."""
        if self.args.data_dir:
            from dard.data import load_dataset

            images = getattr(load_dataset("cifar10", self.args.data_dir), split)
            return images.subset(torch.arange(min(n, len(images))))
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        return ImageSet(x, torch.randint(0, 10, (n,), generator=g))

    # -- phases ------------------------------------------------------------------------------------------------

    def peaks(self) -> None:
        for name, dtype in (("measured_fp32_matmul", torch.float32), ("measured_bf16_matmul", torch.bfloat16)):
            try:
                self.r["peak_flops"][name] = bl.matmul_rate(self.device, dtype, self.args.matmul_n)
            except Exception as exc:  # noqa: BLE001 - a benchmark records every failure and goes on
                self.r["peak_flops"][name] = None
                self.r["skipped"].append(f"{name}: {first_line(exc)}")

    def train(self, phase: Phase) -> None:
        a, dev = self.args, self.device
        data = self.images(phase.batch * (a.steps + 2) * 2, "train")
        loops = {}
        for name in phase.loops:
            row = self.r["train"][f"{name}@{phase.batch}"] = {"loop": name, "batch_size": phase.batch, "rounds": []}
            self.save()
            try:
                t0 = time.perf_counter()
                if name == "reference":
                    run = bl.reference_loop(self.student, self.teacher, data, phase.batch, a.attack_steps, dev)
                else:
                    run = bl.dard_loop(name, self.student, self.teacher, data, phase.batch, a.attack_steps, dev)
                run(3 if name in bl.COMPILED else 1)  # warm-up: compilation, graph capture, cuDNN autotuning
                bl.sync(dev)
                row["warmup_s"], row["status"] = round(time.perf_counter() - t0, 2), "ok"
                loops[name] = run
                print(f"warm-up {name}@{phase.batch}: {row['warmup_s']:.1f}s", flush=True)
            except Exception as exc:  # noqa: BLE001
                self.failed(row, exc)
        for r in range(a.rounds):
            if self.left() < 0:
                self.r["skipped"].append(f"train@{phase.batch}: rounds {r + 1}-{a.rounds} (time budget)")
                break
            for name, run in list(loops.items()):
                row = self.r["train"][f"{name}@{phase.batch}"]
                try:
                    bl.reset_memory(dev)
                    row["rounds"].append(bl.timed(run, a.steps, dev))
                    row["peak_memory_gib"] = max(row.get("peak_memory_gib", 0.0), bl.peak_memory(dev))
                    print(f"round {r + 1} {name}@{phase.batch}: {row['rounds'][-1]:.1f} img/s", flush=True)
                except Exception as exc:  # noqa: BLE001
                    self.failed(row, exc)
                    del loops[name]
            self.derive(phase.batch)
            self.save()
        del loops
        bl.free_memory(dev)

    def derive(self, batch: int) -> None:
        """Images/s statistics, the paired ratio to the reference and the FLOP/s fractions of each loop."""
        ref = self.r["train"].get(f"reference@{batch}", {}).get("rounds") or []
        pf = self.r["peak_flops"]
        for row in self.r["train"].values():
            if row["batch_size"] != batch or not row["rounds"]:
                continue
            row["images_per_s"] = stats(row["rounds"])
            paired = [d / r for d, r in zip(row["rounds"], ref)]
            row["vs_reference"] = stats(paired) if paired and row["loop"] != "reference" else None
            flops = 2 * self.train_macs * row["images_per_s"]["median"]
            bf16 = bl.VARIANTS.get(row["loop"], {}).get("amp") == "bf16" and self.device.type == "cuda"
            own = pf.get("measured_bf16_matmul" if bf16 else "measured_fp32_matmul")
            row["achieved_flops"] = flops
            row["fraction_of_bf16_matmul"] = (
                flops / pf["measured_bf16_matmul"] if pf.get("measured_bf16_matmul") else None
            )
            row["fraction_of_own_precision_matmul"] = flops / own if own else None

    def eval_model(self) -> torch.nn.Module:
        if self.args.eval_checkpoint:
            from dard.checkpoint import load_checkpoint

            return load_checkpoint(self.args.eval_checkpoint, self.device)[0]
        import copy

        return copy.deepcopy(self.student).to(self.device).eval()

    def pgd20(self) -> None:
        a = self.args
        rec = self.r["pgd20_eval"] = {"n": a.eval_n, "batch_size": a.eval_batch, "dard": [], "reference": []}
        try:
            test = self.images(a.eval_n, "test")
            x, y = test.x.to(self.device).float() / 255, test.y.to(self.device)
            model = self.eval_model()
            bl.pgd20_pass(model, x[: a.eval_batch], y[: a.eval_batch], a.eval_batch, peer=False)  # warm-up
            for _ in range(a.rounds):
                if self.left() < 0:
                    self.r["skipped"].append("pgd20: remaining rounds (time budget)")
                    break
                for key, peer in (("dard", False), ("reference", True)):
                    rec[key].append(
                        len(y) / _seconds(lambda p=peer: bl.pgd20_pass(model, x, y, a.eval_batch, p), self.device)
                    )
                rec["images_per_s"] = {k: stats(rec[k]) for k in ("dard", "reference")}
                rec["vs_reference"] = stats([d / r for d, r in zip(rec["dard"], rec["reference"])])
                self.save()
        except Exception as exc:  # noqa: BLE001
            self.failed(rec, exc)

    def autoattack(self) -> None:
        rec: dict = {"n": self.args.aa_n}
        self.r["autoattack"] = rec
        try:
            test = self.images(self.args.aa_n, "test")
            x, y = test.x.to(self.device).float() / 255, test.y.to(self.device)
            rec.update(bl.autoattack_run(self.eval_model(), x, y, self.device))
        except Exception as exc:  # noqa: BLE001
            self.failed(rec, exc)


def stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def _seconds(fn, device: torch.device) -> float:
    bl.sync(device)
    t0 = time.perf_counter()
    fn()
    bl.sync(device)
    return time.perf_counter() - t0


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, torch.device]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true", help="tiny models and sizes (seconds), to test the chain")
    p.add_argument("--smoke-if-cpu", action="store_true", help="--smoke when the device turns out to be the CPU")
    p.add_argument("--student")
    p.add_argument("--teacher")
    p.add_argument("--attack-steps", type=int, help="DPGD steps per training batch (K)")
    p.add_argument("--batch-sizes", help="comma-separated training batch sizes")
    p.add_argument(
        "--variants",
        help="comma-separated dard variants: plain, cl, bf16, bf16-torch (bf16 on torch's own CPU kernels), compile, "
        "cudagraphs",
    )
    p.add_argument("--no-reference", action="store_true", help="leave out the peer-style reference loop")
    p.add_argument("--steps", type=int, help="timed training steps per round")
    p.add_argument("--rounds", type=int, help="alternating rounds (min / median / max reported)")
    p.add_argument("--eval-n", type=int, help="images for the PGD-20 timing")
    p.add_argument("--eval-batch", type=int, help="evaluation batch size (default: the largest training batch)")
    p.add_argument("--aa-n", type=int, help="images for the AutoAttack timing (0: skip)")
    p.add_argument("--budget", type=float, help="seconds: start no phase or round past this (a kill keeps the JSON)")
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: random images)")
    p.add_argument("--eval-checkpoint", help="dard checkpoint for the evaluation timings (default: random student)")
    p.add_argument("--threads", type=int)
    p.add_argument("--matmul-n", type=int, help="side of the reference matmul (default 8192 on CUDA, 1024 on CPU)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    preset = "smoke" if args.smoke or (args.smoke_if_cpu and device.type == "cpu") else device.type
    for key, value in PRESETS.get(preset, PRESETS["cpu"]).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",")]
    unknown = set(args.variants.split(",")) - set(bl.VARIANTS)
    if unknown:
        p.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(bl.VARIANTS)}")
    args.eval_batch = args.eval_batch or max(args.batch_sizes)
    return args, device


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, device = parse_args(argv)
    if device.type == "cpu":
        configure_threads(args.threads)
    else:
        torch.backends.cudnn.benchmark = True  # as the training loop does (speed.cudnn_benchmark)
    bench = Bench(args, device, argv)
    bench.peaks()
    bench.save()
    for phase in plan(args):
        what = f"{phase.kind}@{phase.batch}: {','.join(phase.loops)}" if phase.kind == "train" else phase.kind
        if bench.left() < phase.needs:
            bench.r["skipped"].append(f"{what} (time budget: {max(bench.left(), 0):.0f} s left)")
            bench.save()
            continue
        print(f"== {what} ({time.perf_counter() - bench.t0:.0f} s)", flush=True)
        getattr(bench, phase.kind)(phase) if phase.kind == "train" else getattr(bench, phase.kind)()
        bench.save()
    bench.r["complete"] = True
    bench.save()
    print(summary(bench.r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
