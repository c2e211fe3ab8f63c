"""`dard demo`: on the embedded digits data, train a SAT teacher, then SAT, ARD, RSLAD, PGDARD and DARD students
under one budget, evaluate all of them with the suite and write a report."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dard.evaluation.report import build_report
from dard.training.config import parse_config
from dard.training.loop import train

STUDENT_METHODS = ["sat", "ard", "rslad", "pgdard", "dard"]
TEACHER_ARCH = "resnet20"


def demo_base() -> dict[str, Any]:
    """The shipped demo config as a dict."""
    text = resources.files("dard.configs").joinpath("demo.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _attack_step(base: dict[str, Any]) -> dict[str, Any]:
    # Training attacks use the demo's eps with a step of eps/4 (the CIFAR 8/255 : 2/255 ratio).
    return {"eps": base["eps"], "step_size": base["eps"] / 4}


def _run(base: dict[str, Any], out: Path, name: str, seed: int, device: str, **overrides: Any) -> Path:
    cfg = {**base, "name": name, "seed": seed, "device": device}
    for key, value in overrides.items():
        section = dict(cfg.get(key, {})) if isinstance(value, dict) else None
        cfg[key] = {**section, **value} if section is not None else value
    run_dir = out / name
    if (run_dir / "eval" / "best.json").exists() and (run_dir / "eval" / "last.json").exists():
        print(f"[demo] {name}: finished earlier, reused")
        return run_dir
    t0 = time.time()
    train(parse_config(cfg), run_dir, resume=(run_dir / "resume.json").exists())
    print(f"[demo] {name}: done in {time.time() - t0:.0f}s")
    return run_dir


def run_demo(out: Path, seeds: list[int], device: str = "auto") -> Path:
    """Run the demo for each seed and return the path of the Markdown report."""
    base = demo_base()
    step = _attack_step(base)
    runs: list[Path] = []
    for seed in seeds:
        teacher = _run(base, out, f"teacher-sat-{TEACHER_ARCH}-s{seed}", seed, device,
                       model={"arch": TEACHER_ARCH}, method={"name": "sat", "params": {"attack": step}})
        runs.append(teacher)
        for method in STUDENT_METHODS:
            runs.append(_run(base, out, f"{method}-s{seed}", seed, device,
                             method={"name": method, "params": {"attack": step}},
                             teacher={"checkpoint": str(teacher / "best.safetensors")}))
    return build_report(runs, out / "report", title="dard demo: digits, SAT teacher, one budget")
