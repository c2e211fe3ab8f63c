"""`dard demo`: on the embedded digits data, train a SAT teacher, then SAT, ARD, RSLAD, PGDARD and DARD students
under one budget, evaluate all of them with the suite and write a report."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dard.evaluation.report import build_report
from dard.runtime import resolve_device
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


def _run(base: dict[str, Any], out: Path, name: str, seed: int, device: str, threads: int | None,
         final_eval: bool = True, **overrides: Any) -> Path:
    cfg = {**base, "name": name, "seed": seed, "device": device}
    cfg["speed"] = {**cfg.get("speed", {}), "threads": threads}
    for key, value in overrides.items():
        section = dict(cfg.get(key, {})) if isinstance(value, dict) else None
        cfg[key] = {**section, **value} if section is not None else value
    run_dir = out / name
    done = (run_dir / "best.safetensors").exists() if not final_eval else (run_dir / "eval" / "last.json").exists()
    if done and (run_dir / "resume.json").exists():
        print(f"[demo] {name}: finished earlier, reused", flush=True)
        return run_dir
    t0 = time.time()
    train(parse_config(cfg), run_dir, resume=(run_dir / "resume.json").exists(), final_eval=final_eval)
    print(f"[demo] {name}: {'trained' if not final_eval else 'done'} in {time.time() - t0:.0f}s", flush=True)
    return run_dir


def run_demo(out: Path, seeds: list[int], device: str = "auto", jobs: int | None = None) -> Path:
    """Run the demo for each seed and return the path of the Markdown report.

    Students of all seeds run ``jobs`` at a time in separate processes with one thread each: on a small CPU the
    evaluation (AutoAttack's Square and FAB loops) is bound by per-call overhead, so processes beat threads.
    """
    base = demo_base()
    step = _attack_step(base)
    jobs = jobs or min(2, os.cpu_count() or 1)
    threads = 1 if jobs > 1 else None
    teacher_overrides = {"model": {"arch": TEACHER_ARCH}, "method": {"name": "sat", "params": {"attack": step}}}
    teachers = {}
    for seed in seeds:
        # Teachers are trained first (students need their best checkpoint); their test evaluation then runs
        # beside the students' runs, as a resume of the finished training.
        teachers[seed] = _run(base, out, f"teacher-sat-{TEACHER_ARCH}-s{seed}", seed, device, None,
                              final_eval=False, **teacher_overrides)
    tasks = [(base, out, teachers[seed].name, seed, device, threads, teacher_overrides) for seed in seeds]
    tasks += [(base, out, f"{method}-s{seed}", seed, device, threads,
               {"method": {"name": method, "params": {"attack": step}},
                "teacher": {"checkpoint": str(teachers[seed] / "best.safetensors")}})
              for seed in seeds for method in STUDENT_METHODS]
    if jobs > 1 and resolve_device(device).type == "cpu":
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            students = list(pool.map(_run_task, tasks))
    else:
        students = [_run_task(t) for t in tasks]
    runs = students  # teachers' evaluations come first in the task list
    return build_report(runs, out / "report", title="dard demo: digits, SAT teacher, one budget")


def _run_task(task: tuple) -> Path:
    base, out, name, seed, device, threads, overrides = task
    return _run(base, out, name, seed, device, threads, **overrides)
