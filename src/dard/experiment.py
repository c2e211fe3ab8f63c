"""`dard experiment NAME`: run every training run of an experiment, evaluate them and write a results report.

An experiment is a YAML file, ``experiments/<NAME>/<SCALE>.yaml`` (README "Experiments")::

    title: Main comparison
    base: ../_scales/cpu.yaml         # run config shared by all runs (path relative to this file)
    seeds: [0, 1, 2]
    teacher: {name: teacher-sat-resnet20, seed: 0, config: {model: {arch: resnet20}, method: {name: sat}}}
    runs:                             # run name -> overrides of the base config
      sat: {method: {name: sat}}
      dard: {method: {name: dard}}
    compare_attacks: {n: 300, attacks: {pgd-10: {name: pgd, steps: 10, step_ratio: 0.25}}}   # optional
    plot_param: {param: lam, label: lambda}                                                     # optional
    label_gap: {n: 500}                      # optional: how far the teacher's soft labels move under attack

The teacher is trained first (once; ``seed: null`` trains one per seed) and every student that needs one gets
its best checkpoint. Run folders live in ``<runs>/<name>-s<seed>``; experiments of one scale share that folder, so
a run with the same name and config (the DARD student of the main comparison is the lambda = 0.5 point of the
sweep) is trained once and reused. A folder whose recorded config differs is an error, never silently reused.
Interrupted runs resume. The report (``report.md``, ``results.json``, plots) goes to ``<results>``.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dard.errors import DardError
from dard.evaluation.report import format_summary, summarize
from dard.io import read_json, read_yaml_mapping, write_json
from dard.training.config import RunConfig, parse_config, validation_message

# Keys that may differ between a recorded run and a request without making it a different run: where it ran
# (and where its teacher run lies: the teacher run is checked on its own), and the fp32 speed switches
# (tests/test_speed.py). bf16 autocast changes the numbers, so it counts.
_NOT_IDENTITY = (("device",), ("progress",), ("data", "dir"), ("data", "download"), ("teacher", "checkpoint"),
                 ("speed", "threads"),
                 ("speed", "channels_last"), ("speed", "compile"), ("speed", "compile_backend"),
                 ("speed", "cudnn_benchmark"), ("speed", "sync_bn"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeacherSpec(_Strict):
    name: str
    seed: Optional[int] = Field(0, description="seed of the single shared teacher; null trains one per student seed")
    config: dict[str, Any] = Field(default_factory=dict)


class CompareAttacksSpec(_Strict):
    n: int = Field(500, ge=1, description="first N test images")
    checkpoint: str = "best"
    attacks: dict[str, dict[str, Any]]


class PlotParamSpec(_Strict):
    param: str = Field(description="a key of the method's resolved config (run.json), e.g. lam")
    label: str = ""


class LabelGapSpec(_Strict):
    n: int = Field(500, ge=1, description="first N test images")
    checkpoint: str = "best"


class ExperimentSpec(_Strict):
    title: str
    about: str = ""
    caveat: str = ""
    base: str
    seeds: list[int] = Field(min_length=1)
    teacher: Optional[TeacherSpec] = None
    runs: dict[str, dict[str, Any]] = Field(min_length=1)
    compare_attacks: Optional[CompareAttacksSpec] = None
    plot_param: Optional[PlotParamSpec] = None
    label_gap: Optional[LabelGapSpec] = None


@dataclass
class Experiment:
    """A validated experiment: its spec, the base run config (a dict) and where it came from."""

    name: str
    scale: str
    spec: ExperimentSpec
    base: dict[str, Any]
    source: Path

    def use_data(self, folder: str | None = None, download: bool = False) -> None:
        """Point every run at a data folder and/or allow downloading the official archives (command-line flags;
        neither makes a finished run a different run)."""
        data: dict[str, Any] = {"dir": folder} if folder else {}
        if download:
            data["download"] = True
        if data:
            self.base = deep_merge(self.base, {"data": data})


def experiments_root() -> Path:
    """``./experiments`` if present, else the ``experiments/`` folder of the source checkout."""
    here = Path("experiments")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "experiments"


def list_experiments(root: Path | None = None) -> dict[str, list[str]]:
    """Experiment name -> its scales, from ``root`` (default :func:`experiments_root`)."""
    root = root or experiments_root()
    if not root.is_dir():
        return {}
    return {p.name: sorted(f.stem for f in p.glob("*.yaml")) for p in sorted(root.iterdir())
            if p.is_dir() and not p.name.startswith("_") and any(p.glob("*.yaml"))}


def load_experiment(name: str, scale: str = "cpu", root: Path | None = None) -> Experiment:
    """Load ``<root>/<name>/<scale>.yaml`` (or ``name`` itself when it is a YAML file) and validate it."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        root = root or experiments_root()
        folder = root / name
        if not folder.is_dir():
            known = list(list_experiments(root))
            raise DardError(f"unknown experiment '{name}'; known: {', '.join(known) or 'none'} (in {root})")
        path = folder / f"{scale}.yaml"
        if not path.is_file():
            scales = sorted(p.stem for p in folder.glob("*.yaml"))
            raise DardError(f"experiment '{name}' has no scale '{scale}'; available: {', '.join(scales)}")
    else:
        name, scale = path.parent.name, path.stem
    try:
        spec = ExperimentSpec.model_validate(read_yaml_mapping(path, "experiment file"))
    except ValidationError as e:
        raise DardError(f"{path}: {validation_message(e)}") from None
    base = read_yaml_mapping((path.parent / spec.base).resolve(), "base run config")
    exp = Experiment(name=name, scale=scale, spec=spec, base=base, source=path)
    for run_name, seed, cfg in planned_runs(exp, Path("runs")):  # validate every run config before any training
        _parse(cfg, f"{path}: run '{run_name}'")
    return exp


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``, recursing into nested mappings (``over`` wins)."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
    return out


def _parse(cfg: dict[str, Any], where: str):
    try:
        return parse_config(cfg)
    except DardError as e:
        raise DardError(f"{where}: {e}") from None


def _needs_teacher(cfg: Mapping[str, Any]) -> bool:
    from dard.methods import METHODS

    return bool(METHODS.get(str((cfg.get("method") or {}).get("name", "dard"))).needs_teacher)


def teacher_runs(exp: Experiment, runs_root: Path) -> dict[int, tuple[str, dict[str, Any]]]:
    """Student seed -> (teacher run name, teacher config)."""
    t = exp.spec.teacher
    if t is None:
        return {}
    out = {}
    for seed in exp.spec.seeds:
        tseed = seed if t.seed is None else t.seed
        name = f"{t.name}-s{tseed}"
        out[seed] = (name, deep_merge(exp.base, {**t.config, "name": name, "seed": tseed}))
    return out


def planned_runs(exp: Experiment, runs_root: Path) -> list[tuple[str, int, dict[str, Any]]]:
    """Every student run as (run name, seed, full config dict), seeds in the inner loop."""
    teachers = teacher_runs(exp, runs_root)
    out = []
    for run_name, overrides in exp.spec.runs.items():
        for seed in exp.spec.seeds:
            name = f"{run_name}-s{seed}"
            cfg = deep_merge(exp.base, {**overrides, "name": name, "seed": seed})
            if _needs_teacher(cfg) and not (cfg.get("teacher") or {}):
                if seed not in teachers:
                    raise DardError(f"{exp.source}: run '{run_name}' needs a teacher but the experiment has none")
                cfg["teacher"] = {"checkpoint": str(runs_root / teachers[seed][0] / "best.safetensors")}
            out.append((name, seed, cfg))
    return out


def _identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(dict(cfg))
    for path in _NOT_IDENTITY:
        node = d
        for k in path[:-1]:
            node = node.get(k, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return d


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        return [d for k in keys for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def check_reusable(run_dir: Path, cfg: Mapping[str, Any]) -> None:
    """Raise if ``run_dir`` holds a run made with a different config than ``cfg`` (ignoring device/threads/dir)."""
    recorded = run_dir / "config.yaml"
    if not recorded.exists():
        if run_dir.exists() and any(run_dir.iterdir()):
            raise DardError(f"{run_dir} exists but is not a dard run folder; move it away or use another --runs")
        return
    want = _identity(_parse(dict(cfg), str(run_dir)).model_dump(mode="json"))
    # Parsed again, so options added to dard since the run was made count at their defaults.
    have = _identity(_parse(read_yaml_mapping(recorded, "run config"), str(recorded)).model_dump(mode="json"))
    diff = _diff(have, want)
    if diff:
        raise DardError(f"{run_dir} was made with a different config ({', '.join(diff[:4])}); delete it or use "
                        f"another --runs folder")


def _checked_runs(exp: Experiment, runs_root: Path) -> tuple[dict[str, dict[str, Any]], list[tuple[str, int, dict[str, Any]]]]:
    """(teacher name -> config, student runs) after every config and existing run folder has been checked."""
    unique_teachers = dict(teacher_runs(exp, runs_root).values())  # one shared teacher serves every seed
    students = planned_runs(exp, runs_root)
    for name, cfg in unique_teachers.items():
        check_reusable(runs_root / name, cfg)
    for name, _, cfg in students:
        check_reusable(runs_root / name, cfg)
    return unique_teachers, students


RUN_DONE = "done (reused)"


def run_status(run_dir: Path, epochs: int) -> str:
    """What `dard experiment` would do with this run folder: reuse it, evaluate it, resume it or start it."""
    from dard.training.state import read_progress

    if (run_dir / "eval" / "best.json").exists():
        return RUN_DONE
    if not (run_dir / "resume.json").exists():
        return "new"
    progress = read_progress(run_dir)
    if progress is None:
        return "resume state unreadable: training would stop with an error"
    epoch, batch = int(progress.get("epoch", 0)), int(progress.get("batch", 0))
    if epoch >= epochs:
        return "trained; test evaluation pending"
    return f"resumes at epoch {epoch + 1}/{epochs}" + (f", step {batch + 1}" if batch else "")


def plan_experiment(exp: Experiment, runs_root: Path) -> list[dict[str, Any]]:
    """Check an experiment without training anything: every run's config, the run folders it would reuse and the
    datasets still needed (loaded once each, downloaded if the config allows). Returns one row per run, teacher
    first, with its status."""
    from dard.data import load_dataset

    teachers, students = _checked_runs(exp, runs_root)
    rows = []
    for role, name, cfg in [*(("teacher", n, c) for n, c in teachers.items()),
                            *(("student", n, c) for n, _, c in students)]:
        run = _parse(cfg, name)
        rows.append({"name": name, "role": role, "method": run.method.name, "arch": run.model.arch,
                     "epochs": run.optim.epochs, "data": run.data.name,
                     "status": run_status(runs_root / name, run.optim.epochs), "config": run})
    needed = {(r["config"].data.name, r["config"].data.dir, r["config"].data.download) for r in rows
              if r["status"] != RUN_DONE}
    for name, folder, download in sorted(needed, key=str):
        load_dataset(name, folder, download=download)  # a one-line DardError if missing or corrupt
    for r in rows:
        del r["config"]
    return rows


def _train_task(task: tuple) -> str:
    cfg, run_dir, final_eval, threads, device = task
    from dard.training.loop import train

    cfg = deep_merge(cfg, {"speed": {"threads": threads}, "device": device})
    run_dir = Path(run_dir)
    t0 = time.time()
    done = (run_dir / "eval" / "best.json").exists() if final_eval else (run_dir / "best.safetensors").exists()
    train(_parse(cfg, str(run_dir)), run_dir, resume=(run_dir / "config.yaml").exists(), final_eval=final_eval)
    if final_eval:
        what = "reused" if done else f"done in {time.time() - t0:.0f}s"
    else:
        what = "training reused" if done else f"trained in {time.time() - t0:.0f}s"
    print(f"[experiment] {run_dir.name}: {what}", flush=True)
    return str(run_dir)


def _cached(path: Path, spec: BaseModel) -> dict[str, Any] | None:
    """The result cached at ``path`` if it was computed for this ``spec``, else None."""
    if path.exists():
        cached = read_json(path)
        if cached.get("spec") == spec.model_dump():
            return cached
    return None


def _first_test_images(cfg: RunConfig, n: int, device: str, threads: int | None) -> tuple[Any, Any, Any, Any]:
    """``(data, x, y, device)``: the first ``n`` test images of run config ``cfg`` as float tensors."""
    from dard.runtime import configure_threads, resolve_device
    from dard.training.loop import float_tensors, prepare_data

    dev = resolve_device(device)
    if dev.type == "cpu":
        configure_threads(threads)
    data = prepare_data(cfg)
    x, y = float_tensors(data.test.subset(range(min(n, len(data.test)))), dev)
    return data, x, y, dev


def _compare_task(task: tuple) -> str:
    run_dir, spec, threads, device = task
    compare_attacks(Path(run_dir), CompareAttacksSpec.model_validate(spec), threads=threads, device=device)
    return str(run_dir)


def compare_attacks(run_dir: Path, spec: CompareAttacksSpec, *, threads: int | None = None,
                    device: str = "auto") -> dict[str, Any]:
    """Evaluate a run's checkpoint with ``spec.attacks`` on its first ``spec.n`` test images (cached in
    ``eval/compare-<checkpoint>.json``; recomputed when the attack set changes)."""
    from dard.checkpoint import load_checkpoint
    from dard.evaluation.suite import attack_from_spec, evaluate
    from dard.runtime import environment
    from dard.training.loop import load_run_config

    out = run_dir / "eval" / f"compare-{spec.checkpoint}.json"
    cached = _cached(out, spec)
    if cached is not None:
        return cached
    cfg = load_run_config(run_dir)
    data, x, y, dev = _first_test_images(cfg, spec.n, device, threads)
    model, meta = load_checkpoint(run_dir / f"{spec.checkpoint}.safetensors", dev)
    attacks = {label: attack_from_spec(a, cfg.eps, cfg.seed) for label, a in spec.attacks.items()}
    rec = evaluate(model, x, y, attacks, batch_size=cfg.eval.batch_size, device=dev, progress=False,
                   model_info={**meta["model"], "checkpoint": spec.checkpoint},
                   data_info={"name": data.bundle.name, "split": "test", "n": int(x.shape[0])}, seed=cfg.seed,
                   environment=environment(dev))
    result = {"spec": spec.model_dump(), "record": rec.to_dict()}
    write_json(out, result)
    return result


def _label_gap_task(task: tuple) -> str:
    run_dir, cfg, spec, threads, device = task
    label_gap(Path(run_dir), cfg, LabelGapSpec.model_validate(spec), threads=threads, device=device)
    return str(run_dir)


def label_gap(run_dir: Path, cfg: Mapping[str, Any], spec: LabelGapSpec, *, threads: int | None = None,
              device: str = "auto") -> dict[str, Any]:
    """The teacher's soft-label gap for a distilled run (:func:`dard.evaluation.soft_labels.teacher_label_gap`):
    its ``spec.checkpoint`` student attacked with its own training attack and temperature on the first ``spec.n``
    test images. ``cfg`` is the run's planned config (its teacher entry points at this invocation's teacher).
    Cached in ``eval/label-gap-<checkpoint>.json``."""
    from dard.attacks import create_attack
    from dard.checkpoint import load_checkpoint
    from dard.evaluation.soft_labels import teacher_label_gap
    from dard.training.loop import load_teacher

    out = run_dir / "eval" / f"label-gap-{spec.checkpoint}.json"
    cached = _cached(out, spec)
    if cached is not None:
        return cached
    run_cfg = _parse(dict(cfg), str(run_dir))
    method = read_json(run_dir / "run.json")["method"]
    attack = create_attack(**method["attack"])  # the student's own training attack, as recorded
    data, x, y, dev = _first_test_images(run_cfg, spec.n, device, threads)
    student, _ = load_checkpoint(run_dir / f"{spec.checkpoint}.safetensors", dev)
    teacher, _ = load_teacher(run_cfg.teacher, data.bundle, dev)
    gap = teacher_label_gap(teacher, student, x, y, attack, tau=float(method.get("tau", 1.0)))
    result = {"spec": spec.model_dump(), "attack": attack.config(), "gap": gap}
    write_json(out, result)
    return result


def _pool_map(fn: Callable[[tuple], str], tasks: list[tuple], jobs: int) -> list[str]:
    if jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(fn, tasks))
    return [fn(t) for t in tasks]


def run_experiment(exp: Experiment, runs_root: Path, results_dir: Path, *, device: str = "auto",
                   jobs: int | None = None, command: str = "") -> Path:
    """Train (or reuse) every run of ``exp``, evaluate, and write the report; returns the path of report.md.

    On a CPU, runs go ``jobs`` at a time in separate processes with one thread each (small models are bound by
    per-call overhead, so processes beat threads); on a GPU they run one after another.
    """
    from dard.runtime import resolve_device

    t_start = time.time()
    on_cpu = resolve_device(device).type == "cpu"
    jobs = (jobs or min(2, os.cpu_count() or 1)) if on_cpu else 1
    threads = 1 if jobs > 1 else None
    unique_teachers, students = _checked_runs(exp, runs_root)

    # Teachers first, with every thread; their test evaluation then runs beside the students.
    for name, cfg in unique_teachers.items():
        _train_task((cfg, str(runs_root / name), False, None, device))
    tasks = [(cfg, str(runs_root / name), True, threads, device) for name, cfg in unique_teachers.items()]
    tasks += [(cfg, str(runs_root / name), True, threads, device) for name, _, cfg in students]
    run_dirs = [Path(p) for p in _pool_map(_train_task, tasks, jobs)]

    compare = exp.spec.compare_attacks
    if compare is not None:
        _pool_map(_compare_task, [(str(p), compare.model_dump(), threads, device) for p in run_dirs], jobs)
    gap = exp.spec.label_gap
    if gap is not None:
        distilled = [(str(runs_root / name), cfg, gap.model_dump(), threads, device)
                     for name, _, cfg in students if _needs_teacher(cfg)]
        _pool_map(_label_gap_task, distilled, jobs)
    return write_experiment_report(exp, run_dirs, results_dir, command=command,
                                   seconds=time.time() - t_start)


# ------------------------------------------------------------------------------------------------- report


def _group_of(run_dir: Path) -> str:
    from dard.evaluation.report import _SEED_SUFFIX

    return _SEED_SUFFIX.sub("", run_dir.name)


def attack_comparison(run_dirs: Sequence[Path], checkpoint: str = "best") -> dict[str, Any]:
    """Attack success rate (fooled / clean-correct) per run group and attack, mean ± std over seeds."""
    from dard.evaluation.suite import AttackResult

    per_group: dict[str, dict[str, list[float]]] = {}
    labels: list[str] = []
    for p in run_dirs:
        f = p / "eval" / f"compare-{checkpoint}.json"
        if not f.exists():
            continue
        attacks = read_json(f)["record"]["attacks"]
        g = per_group.setdefault(_group_of(p), {})
        for label, res in attacks.items():
            labels += [label] if label not in labels else []
            rate = AttackResult(**res).success_rate
            g.setdefault(label, []).append(rate)
    return {"labels": labels,
            "groups": {g: {label: summarize(v.get(label, [])) for label in labels} for g, v in per_group.items()}}


def label_gap_table(run_dirs: Sequence[Path], checkpoint: str = "best") -> dict[str, dict[str, Any]]:
    """Teacher soft-label gap per run group, mean ± std over seeds (runs without a cached gap are skipped)."""
    per_group: dict[str, dict[str, list[float]]] = {}
    for p in run_dirs:
        f = p / "eval" / f"label-gap-{checkpoint}.json"
        if f.exists():
            g = per_group.setdefault(_group_of(p), {})
            for key in _GAP_COLUMNS:
                g.setdefault(key, []).append(float(read_json(f)["gap"][key]))
    return {g: {k: summarize(v) for k, v in cols.items()} for g, cols in per_group.items()}


_GAP_COLUMNS = {"tv": "TV(teacher(x), teacher(x_adv))", "top1_agreement": "same teacher top-1",
                "teacher_top_prob_clean": "teacher top prob, x", "teacher_top_prob_adv": "teacher top prob, x_adv"}


def _family_steps(label: str) -> tuple[str, int] | None:
    head, _, tail = label.rpartition("-")
    return (head, int(tail)) if head and tail.isdigit() else None


def _plot_attack_comparison(table: Mapping[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    families: dict[str, dict[int, list[float]]] = {}
    for label in table["labels"]:
        fs = _family_steps(label)
        if fs is None:
            continue
        for g in table["groups"].values():
            if g[label]["mean"] is not None:
                families.setdefault(fs[0], {}).setdefault(fs[1], []).append(g[label]["mean"])
    for fam, pts in families.items():
        steps = sorted(pts)
        ax.plot(steps, [100 * statistics.fmean(pts[s]) for s in steps], marker="o", label=fam)
    ax.set_xlabel("attack steps")
    ax.set_ylabel("attack success rate (%), mean over models")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _param_sweep(run_dirs: Sequence[Path], param: str) -> dict[str, Any]:
    from dard.evaluation.report import load_run, record_accuracies

    points: dict[float, dict[str, list[float]]] = {}
    for p in run_dirs:
        run = load_run(p)
        value = (run["method"] or {}).get(param)
        if not isinstance(value, (int, float)) or "best" not in run["evals"]:
            continue
        acc = record_accuracies(run["evals"]["best"])
        row = points.setdefault(float(value), {})
        for k in ("clean", "pgd20", "autoattack_subset"):
            if acc.get(k) is not None:
                row.setdefault(k, []).append(acc[k])
    return {str(v): {k: summarize(vals) for k, vals in row.items()} for v, row in sorted(points.items())}


def _plot_sweep(sweep: Mapping[str, Any], label: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    xs = [float(v) for v in sweep]
    for metric in ("clean", "pgd20", "autoattack_subset"):
        pts = [(x, sweep[v][metric]) for x, v in zip(xs, sweep) if metric in sweep[v]]
        if pts:
            ax.errorbar([x for x, _ in pts], [100 * s["mean"] for _, s in pts], yerr=[100 * (s["std"] or 0.0) for _, s in pts],
                        marker="o", capsize=3, label=metric)
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _environment_line(run_dirs: Sequence[Path]) -> str:
    """One report line naming every device, torch build and dard commit the runs were made with."""
    devices: dict[str, None] = {}
    torches: dict[str, None] = {}
    commits: dict[str, list[str]] = {}
    for d in run_dirs:
        env = read_json(d / "run.json").get("environment") or {}
        devices[str(env.get("device_name", env.get("device", "?")))] = None
        torches[str(env.get("torch", "?"))] = None
        commits.setdefault(str(env.get("git_commit") or "?")[:7], []).append(d.name)
    commit_text = "; ".join(f"{c} ({', '.join(names) if len(names) <= 3 else f'{len(names)} runs'})"
                            for c, names in commits.items())
    return (f"- Device: {', '.join(devices)}; torch {', '.join(torches)}; dard commit "
            f"{commit_text if len(commits) > 1 else next(iter(commits), '?')}.")


def write_experiment_report(exp: Experiment, run_dirs: Sequence[Path], results_dir: Path, *, command: str = "",
                            seconds: float | None = None) -> Path:
    """The experiment's ``report.md``, ``results.json`` and plots (teacher rows first)."""
    from dard.evaluation.report import build_report
    from dard.io import write_text

    results_dir.mkdir(parents=True, exist_ok=True)
    spec = exp.spec
    preamble = [spec.about.strip()] if spec.about.strip() else []
    preamble += ["", f"- Command: `{command or f'dard experiment {exp.name} --scale {exp.scale}'}`",
                 f"- Experiment file: `{exp.source.as_posix()}`, base run config `{spec.base}`; seeds "
                 f"{', '.join(map(str, spec.seeds))}.",
                 _environment_line(run_dirs)]
    if seconds:
        took = f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
        preamble += [f"- Wall time of the invocation that wrote this report: {took} (runs finished "
                     "by earlier invocations were reused, so this is not the experiment's total cost)."]
    if spec.caveat.strip():
        preamble += [f"- Caveat: {spec.caveat.strip()}"]
    sections: list[str] = []
    extra: dict[str, Any] = {"experiment": exp.name, "scale": exp.scale, "spec": spec.model_dump(),
                             "base_config": exp.base, "command": command}
    if spec.plot_param is not None:
        label = spec.plot_param.label or spec.plot_param.param
        sweep = _param_sweep(run_dirs, spec.plot_param.param)
        extra["sweep"] = {"param": spec.plot_param.param, "points": sweep}
        _plot_sweep(sweep, label, results_dir / "sweep.png")
        metrics = ["clean", "pgd20", "autoattack_subset"]
        lines = [f"## Sweep over {label}", "", f"| {label} | " + " | ".join(metrics) + " |",
                 "|---|" + "---|" * len(metrics)]
        lines += [f"| {v} | " + " | ".join(format_summary(row[m]) if m in row else "—" for m in metrics) + " |"
                  for v, row in sweep.items()]
        lines += ["", f"![accuracy vs {label}](sweep.png)"]
        sections.append("\n".join(lines))
    if spec.compare_attacks is not None:
        table = attack_comparison(run_dirs, spec.compare_attacks.checkpoint)
        extra["attack_comparison"] = table
        _plot_attack_comparison(table, results_dir / "attack_success.png")
        lines = ["## Attack success rate", "",
                 f"Fraction of the clean-correct points among the first {spec.compare_attacks.n} test images that "
                 f"each attack turns wrong (`{spec.compare_attacks.checkpoint}` checkpoint; mean ± std over seeds). "
                 "Higher is a stronger attack.", "",
                 "| Models | " + " | ".join(table["labels"]) + " |", "|---|" + "---|" * len(table["labels"])]
        lines += [f"| {g} | " + " | ".join(format_summary(row[label]) for label in table["labels"]) + " |"
                  for g, row in table["groups"].items()]
        attack_lines = [f"- `{label}`: {a}" for label, a in spec.compare_attacks.attacks.items()]
        lines += ["", "Attacks:", "", *attack_lines, "", "![attack success vs steps](attack_success.png)"]
        sections.append("\n".join(lines))
    if spec.label_gap is not None:
        gaps = label_gap_table(run_dirs, spec.label_gap.checkpoint)
        extra["label_gap"] = gaps
        lines = ["## Teacher soft-label gap", "",
                 f"How far the teacher's soft labels move between a test image and the student's own training "
                 f"attack on it (first {spec.label_gap.n} test images, `{spec.label_gap.checkpoint}` student "
                 "checkpoint; mean ± std over seeds, all in %, total variation distance between the two softmax outputs). The targets of two lambdas differ "
                 "by |d lambda| x TV, so a small TV means lambda cannot change the target much.", "",
                 "| Run | " + " | ".join(_GAP_COLUMNS.values()) + " |", "|---|" + "---:|" * len(_GAP_COLUMNS)]
        lines += [f"| {g} | " + " | ".join(format_summary(row[k]) for k in _GAP_COLUMNS) + " |"
                  for g, row in gaps.items()]
        sections.append("\n".join(lines))
    report = build_report(list(run_dirs), results_dir, title=spec.title, preamble=preamble, sections=sections,
                          extra=extra)
    write_text(results_dir / "experiment.yaml", exp.source.read_text(encoding="utf-8"))
    return report
