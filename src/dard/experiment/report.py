"""The experiment report: the common run report (:mod:`dard.evaluation.report`) plus the experiment's own
sections (parameter sweep, attack success rates, teacher soft-label gap) and plots."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dard.evaluation.report import format_summary, seedless_name, summarize
from dard.experiment.spec import Experiment
from dard.io import read_json


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
        g = per_group.setdefault(seedless_name(p.name), {})
        for label, res in attacks.items():
            labels += [label] if label not in labels else []
            rate = AttackResult(**res).success_rate
            g.setdefault(label, []).append(rate)
    return {
        "labels": labels,
        "groups": {g: {label: summarize(v.get(label, [])) for label in labels} for g, v in per_group.items()},
    }


def label_gap_table(run_dirs: Sequence[Path], checkpoint: str = "best") -> dict[str, dict[str, Any]]:
    """Teacher soft-label gap per run group, mean ± std over seeds (runs without a cached gap are skipped)."""
    per_group: dict[str, dict[str, list[float]]] = {}
    for p in run_dirs:
        f = p / "eval" / f"label-gap-{checkpoint}.json"
        if f.exists():
            gap = read_json(f)["gap"]
            g = per_group.setdefault(seedless_name(p.name), {})
            for key in _GAP_COLUMNS:
                g.setdefault(key, []).append(float(gap[key]))
    return {g: {k: summarize(v) for k, v in cols.items()} for g, cols in per_group.items()}


_GAP_COLUMNS = {
    "tv": "TV(teacher(x), teacher(x_adv))",
    "top1_agreement": "same teacher top-1",
    "teacher_top_prob_clean": "teacher top prob, x",
    "teacher_top_prob_adv": "teacher top prob, x_adv",
}


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
            ax.errorbar(
                [x for x, _ in pts],
                [100 * s["mean"] for _, s in pts],
                yerr=[100 * (s["std"] or 0.0) for _, s in pts],
                marker="o",
                capsize=3,
                label=metric,
            )
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
    commit_text = "; ".join(
        f"{c} ({', '.join(names) if len(names) <= 3 else f'{len(names)} runs'})" for c, names in commits.items()
    )
    return (
        f"- Device: {', '.join(devices)}; torch {', '.join(torches)}; dard commit "
        f"{commit_text if len(commits) > 1 else next(iter(commits), '?')}."
    )


def write_experiment_report(
    exp: Experiment, run_dirs: Sequence[Path], results_dir: Path, *, command: str = "", seconds: float | None = None
) -> Path:
    """The experiment's ``report.md``, ``results.json`` and plots (teacher rows first)."""
    from dard.evaluation.report import build_report
    from dard.io import write_text

    results_dir.mkdir(parents=True, exist_ok=True)
    spec = exp.spec
    preamble = [spec.about.strip()] if spec.about.strip() else []
    preamble += [
        "",
        f"- Command: `{command or f'dard experiment {exp.name} --scale {exp.scale}'}`",
        f"- Experiment file: `{exp.source.as_posix()}`, base run config `{spec.base}`; seeds "
        f"{', '.join(map(str, spec.seeds))}.",
        _environment_line(run_dirs),
    ]
    if seconds:
        took = f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
        preamble += [
            f"- Wall time of the invocation that wrote this report: {took} (runs finished "
            "by earlier invocations were reused, so this is not the experiment's total cost)."
        ]
    if spec.caveat.strip():
        preamble += [f"- Caveat: {spec.caveat.strip()}"]
    sections: list[str] = []
    extra: dict[str, Any] = {
        "experiment": exp.name,
        "scale": exp.scale,
        "spec": spec.model_dump(),
        "base_config": exp.base,
        "command": command,
    }
    if spec.plot_param is not None:
        label = spec.plot_param.label or spec.plot_param.param
        sweep = _param_sweep(run_dirs, spec.plot_param.param)
        extra["sweep"] = {"param": spec.plot_param.param, "points": sweep}
        _plot_sweep(sweep, label, results_dir / "sweep.png")
        metrics = ["clean", "pgd20", "autoattack_subset"]
        lines = [
            f"## Sweep over {label}",
            "",
            f"| {label} | " + " | ".join(metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        lines += [
            f"| {v} | " + " | ".join(format_summary(row[m]) if m in row else "—" for m in metrics) + " |"
            for v, row in sweep.items()
        ]
        lines += ["", f"![accuracy vs {label}](sweep.png)"]
        sections.append("\n".join(lines))
    if spec.compare_attacks is not None:
        table = attack_comparison(run_dirs, spec.compare_attacks.checkpoint)
        extra["attack_comparison"] = table
        _plot_attack_comparison(table, results_dir / "attack_success.png")
        lines = [
            "## Attack success rate",
            "",
            f"Fraction of the clean-correct points among the first {spec.compare_attacks.n} test images that "
            f"each attack turns wrong (`{spec.compare_attacks.checkpoint}` checkpoint; mean ± std over seeds). "
            "Higher is a stronger attack.",
            "",
            "| Models | " + " | ".join(table["labels"]) + " |",
            "|---|" + "---|" * len(table["labels"]),
        ]
        lines += [
            f"| {g} | " + " | ".join(format_summary(row[label]) for label in table["labels"]) + " |"
            for g, row in table["groups"].items()
        ]
        attack_lines = [f"- `{label}`: {a}" for label, a in spec.compare_attacks.attacks.items()]
        lines += ["", "Attacks:", "", *attack_lines, "", "![attack success vs steps](attack_success.png)"]
        sections.append("\n".join(lines))
    if spec.label_gap is not None:
        gaps = label_gap_table(run_dirs, spec.label_gap.checkpoint)
        extra["label_gap"] = gaps
        lines = [
            "## Teacher soft-label gap",
            "",
            f"How far the teacher's soft labels move between a test image and the student's own training "
            f"attack on it (first {spec.label_gap.n} test images, `{spec.label_gap.checkpoint}` student "
            "checkpoint; mean ± std over seeds, all in %, total variation distance between the two softmax outputs). "
            "The targets of two lambdas differ "
            "by |d lambda| x TV, so a small TV means lambda cannot change the target much.",
            "",
            "| Run | " + " | ".join(_GAP_COLUMNS.values()) + " |",
            "|---|" + "---:|" * len(_GAP_COLUMNS),
        ]
        lines += [
            f"| {g} | " + " | ".join(format_summary(row[k]) for k in _GAP_COLUMNS) + " |" for g, row in gaps.items()
        ]
        sections.append("\n".join(lines))
    report = build_report(
        list(run_dirs), results_dir, title=spec.title, preamble=preamble, sections=sections, extra=extra
    )
    write_text(results_dir / "experiment.yaml", exp.source.read_text(encoding="utf-8"))
    return report
