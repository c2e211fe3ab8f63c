"""The experiment report: :mod:`dard.report`'s, plus sections (sweep, attack success, soft-label gap) and plots."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from dard.experiment.gap_section import label_gap_section
from dard.experiment.left_out import compare_skip, left_out_lines
from dard.experiment.spec import CompareAttacksSpec, Experiment, ExperimentSpec, PlotParamSpec
from dard.experiment.teacher_section import teacher_quality_section
from dard.io import write_text
from dard.packaged import EXPERIMENTS_DIR
from dard.report import (
    DASH,
    FORMATS,
    build_report,
    format_summary,
    markdown_table,
    record_accuracies,
    save_png,
    seedless_name,
    summarize,
)
from dard.report.markdown import md_text
from dard.run_dir import RunDir, RunRecord

_SWEEP_METRICS = ("clean", "pgd20", "autoattack_subset")


def attack_comparison(runs: Sequence[RunRecord], checkpoint: str = "best") -> dict[str, Any]:
    """Attack success rate (fooled / clean-correct) per run group and attack, mean ± std over seeds; each group's
    method (``methods``) and its value per seed (``by_seed``: seed -> label -> rate), for the plot's averages."""
    per_group: dict[str, dict[str, list[float | None]]] = {}  # None: rate unknown (summarize skips it)
    by_seed: dict[str, dict[str, dict[str, float]]] = {}
    methods: dict[str, str] = {}
    labels: list[str] = []
    for run in runs:
        cached = RunDir(run.path).read_compare(checkpoint)
        if cached is None:
            continue
        name = seedless_name(run.path.name)
        g = per_group.setdefault(name, {})
        methods[name] = str(run.method.get("name", "?"))
        for label, res in cached.record.attacks.items():
            labels += [label] if label not in labels else []
            g.setdefault(label, []).append(res.success_rate)
            if res.success_rate is not None:
                by_seed.setdefault(name, {}).setdefault(str(run.seed), {})[label] = res.success_rate
    return {
        "labels": labels,
        "groups": {g: {label: summarize(v.get(label, [])) for label in labels} for g, v in per_group.items()},
        "methods": methods,
        "by_seed": by_seed,
    }


def _family_steps(label: str) -> tuple[str, int] | None:
    head, _, tail = label.rpartition("-")
    return (head, int(tail)) if head and tail.isdigit() else None


#: the method whose models are left out of the attack plot's averages (as docs/results.md quotes them): a model
#: without robustness falls to every attack, so it says nothing about which attack is stronger
_NOT_AVERAGED = "natural"


class StepAverage(TypedDict):
    """An attack family's success rate at one step count, averaged over the models (:func:`attack_averages`)."""

    mean: float  # an entry exists only for a step count with at least one value
    std: float | None  # sample std over seeds; None below 2 seeds
    n: int  # seeds


def attack_averages(table: Mapping[str, Any]) -> dict[str, dict[int, StepAverage]]:
    """Per attack family (``pgd``, ``dpgd``, ... from labels ``<family>-<steps>``) and step count: the success rate
    averaged over the models (every group but the natural ones), ``mean`` over seeds with its sample ``std``.

    For each seed, the average over the groups' values of that seed (a group with one seed, such as the shared
    teacher, counts with its one value in every seed); ``mean`` and ``std`` are over those per-seed averages, so
    ``mean`` is the average of the group means when every group has the same seeds."""
    groups = [g for g, m in table.get("methods", {}).items() if m != _NOT_AVERAGED]
    by_seed = table.get("by_seed", {})
    seeds = sorted({s for g in groups for s in by_seed.get(g, {})}, key=lambda s: (len(s), s))
    out: dict[str, dict[int, StepAverage]] = {}
    for label in table["labels"]:
        fs = _family_steps(label)
        if fs is None:
            continue
        averages = []
        for seed in seeds:
            values = []
            for g in groups:
                own = by_seed.get(g, {})
                value = own.get(seed, {}).get(label) if len(own) > 1 else next(iter(own.values()), {}).get(label)
                if value is not None:
                    values.append(value)
            if values:
                averages.append(statistics.fmean(values))
        if averages:
            summary = summarize(averages)
            out.setdefault(fs[0], {})[fs[1]] = {"mean": summary["mean"], "std": summary["std"], "n": summary["n"]}
    return out


def _plot_attack_comparison(table: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Success rate vs steps per attack family, averaged over the models but the natural ones, ± std over seeds;
    the y axis starts at 0. Returns the plotted averages."""
    from matplotlib.figure import Figure

    averages = attack_averages(table)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    top = 0.0
    for fam, pts in averages.items():
        steps = sorted(pts)
        ys = [100 * pts[s]["mean"] for s in steps]
        errs = [100 * (pts[s]["std"] or 0.0) for s in steps]
        ax.errorbar(steps, ys, yerr=errs, marker="o", capsize=3, label=fam)
        top = max([top, *(y + e for y, e in zip(ys, errs))])
    ax.set_ylim(0, min(100.0, top * 1.1 + 1))
    ax.set_xlabel("attack steps")
    ax.set_ylabel("attack success rate (%)")
    ax.set_title("mean over models (natural excluded), ± std over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    if averages:
        ax.legend()
    fig.tight_layout()
    save_png(fig, path, tight=False)
    return averages


def _param_sweep(runs: Sequence[RunRecord], param: str) -> dict[str, Any]:
    points: dict[float, dict[str, list[float]]] = {}
    for run in runs:
        value = run.method.get(param)
        if not isinstance(value, (int, float)) or "best" not in run.evals:
            continue
        acc = record_accuracies(run.evals["best"])
        row = points.setdefault(float(value), {})
        for k in _SWEEP_METRICS:
            if acc.get(k) is not None:
                row.setdefault(k, []).append(acc[k])
    return {str(v): {k: summarize(vals) for k, vals in row.items()} for v, row in sorted(points.items())}


def _plot_sweep(sweep: Mapping[str, Any], label: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    xs = [float(v) for v in sweep]
    for metric in _SWEEP_METRICS:
        pts = [(x, sweep[v][metric]) for x, v in zip(xs, sweep) if metric in sweep[v]]
        if pts:
            means, errs = [100 * s["mean"] for _, s in pts], [100 * (s["std"] or 0.0) for _, s in pts]
            ax.errorbar([x for x, _ in pts], means, yerr=errs, marker="o", capsize=3, label=metric)
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_png(fig, path, tight=False)


def _environment_line(runs: Sequence[RunRecord]) -> str:
    """One report line naming every device, torch build and dard commit the runs were made with."""
    devices: dict[str, None] = {}
    torches: dict[str, None] = {}
    commits: dict[str, list[str]] = {}
    for run in runs:
        env = run.info.environment
        devices[md_text(run.device)] = None  # a CPU's model with it, where run.json records it
        torches[md_text(env.get("torch", "?"))] = None
        commits.setdefault(md_text(str(env.get("git_commit") or "?")[:7]), []).append(md_text(run.path.name))
    commit_text = "; ".join(
        f"{c} ({', '.join(names) if len(names) <= 3 else f'{len(names)} runs'})" for c, names in commits.items()
    )
    return (
        f"- Device: {', '.join(devices)}; torch {', '.join(torches)}; dard commit "
        f"{commit_text if len(commits) > 1 else next(iter(commits), '?')}."
    )


def _fewer_seeds(spec: ExperimentSpec) -> str:
    """`` (trades, natural: seed 0)``: the rows that take fewer of the experiment's seeds, with theirs."""
    fewer = {k: spec.run_seeds(k) for k in spec.runs if spec.run_seeds(k) != spec.seeds}
    by_seeds: dict[str, list[str]] = {}
    for key, seeds in fewer.items():
        by_seeds.setdefault(", ".join(map(str, seeds)), []).append(key)
    parts = [f"{', '.join(keys)}: seed{'s' if ',' in s else ''} {s}" for s, keys in by_seeds.items()]
    return f" ({'; '.join(parts)})" if parts else ""


def _preamble(
    exp: Experiment, runs: Sequence[RunRecord], command: str, seconds: float | None, notes: Sequence[str] = ()
) -> list[str]:
    spec = exp.spec
    lines = [spec.about.strip()] if spec.about.strip() else []
    lines += [
        "",
        f"- Command: `{command or exp.command()}`",
        f"- Experiment file: `{_experiment_file(exp)}`, base run config `{spec.base}`; seeds "
        f"{', '.join(map(str, spec.seeds))}{_fewer_seeds(spec)}.",
        _environment_line(runs),
    ]
    if seconds:
        took = f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
        lines += [
            f"- Wall time of the invocation that wrote this report: {took} (runs finished "
            "by earlier invocations were reused, so this is not the experiment's total cost)."
        ]
    if spec.caveat.strip():
        lines += [f"- Caveat: {spec.caveat.strip()}"]
    return lines + list(notes)


def _experiment_file(exp: Experiment) -> str:
    """The experiment file as dard's repository names it when it is a packaged one (``src/dard/experiments/...``),
    so that a report reads the same whichever folder it was written from; any other file as it was given."""
    try:
        return "src/dard/experiments/" + exp.source.resolve().relative_to(EXPERIMENTS_DIR).as_posix()
    except ValueError:
        return exp.source.as_posix()


def _sweep_section(plot: PlotParamSpec, runs: Sequence[RunRecord], results_dir: Path, extra: dict[str, Any]) -> str:
    label = plot.label or plot.param
    sweep = _param_sweep(runs, plot.param)
    extra["sweep"] = {"param": plot.param, "points": sweep}
    _plot_sweep(sweep, label, results_dir / "sweep.png")
    rows = [[v, *(format_summary(row[m]) if m in row else DASH for m in _SWEEP_METRICS)] for v, row in sweep.items()]
    table = markdown_table([label, *_SWEEP_METRICS], rows, text_columns=1)
    return "\n".join([f"## Sweep over {label}", "", *table, "", f"![accuracy vs {label}](sweep.png)"])


def _attack_section(
    compare: CompareAttacksSpec, runs: Sequence[RunRecord], results_dir: Path, extra: dict[str, Any]
) -> str:
    table = attack_comparison(runs, compare.checkpoint)
    extra["attack_comparison"] = table
    table["averages"] = _plot_attack_comparison(table, results_dir / "attack_success.png")
    labels = table["labels"]
    rows = [[g, *(format_summary(row[label]) for label in labels)] for g, row in table["groups"].items()]
    lines = [
        "## Attack success rate",
        "",
        f"Fraction of the clean-correct points among the first {compare.n} test images that "
        f"each attack turns wrong (`{compare.checkpoint}` checkpoint; mean ± std over seeds). "
        "Higher is a stronger attack.",
        "",
        *markdown_table(["Models", *labels], rows, text_columns=1),
        *left_out_lines(
            runs,
            lambda f: f.read_compare(compare.checkpoint) is not None,
            lambda _, f: compare_skip(f, compare.checkpoint),
        ),
    ]
    attack_lines = [f"- `{label}`: {a}" for label, a in compare.attacks.items()]
    lines += ["", "Attacks:", "", *attack_lines, ""]
    averages = table["averages"]
    steps = sorted({k for pts in averages.values() for k in pts})
    rows = [[str(k), *(format_summary(averages[f].get(k)) for f in averages)] for k in steps]
    lines += [
        "Averaged over the models, leaving out the natural ones (a model without robustness falls to every attack "
        "and says nothing about which is stronger): mean ± sample std over seeds of that average (a model with one "
        "seed, such as the teacher, counts in every seed). The plot shows the same, its axis starting at 0.",
        "",
        *markdown_table(["steps", *averages], rows, text_columns=1),
        "",
        "![attack success vs steps](attack_success.png)",
    ]
    return "\n".join(lines)


def write_experiment_report(
    exp: Experiment,
    run_dirs: Sequence[Path],
    results_dir: Path,
    *,
    command: str = "",
    seconds: float | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """The experiment's report.md, results.json, paper tables (results.csv, results.tex) and plots, teacher rows
    first; ``notes``: more preamble lines (Markdown list items)."""
    runs = [RunRecord.load(p) for p in run_dirs]  # each run folder read once
    results_dir.mkdir(parents=True, exist_ok=True)
    spec = exp.spec
    extra: dict[str, Any] = {
        "experiment": exp.name,
        "scale": exp.scale,
        "spec": spec.model_dump(),
        "base_config": exp.base,
        "command": command,
    }
    sections: list[str] = []
    if spec.plot_param is not None:
        sections.append(_sweep_section(spec.plot_param, runs, results_dir, extra))
    if spec.compare_attacks is not None:
        sections.append(_attack_section(spec.compare_attacks, runs, results_dir, extra))
    if spec.label_gap is not None:
        sections.append(label_gap_section(spec.label_gap, runs, extra))
    if spec.teacher_quality is not None:
        sections.append(teacher_quality_section(spec.teacher_quality, runs, results_dir, extra))
    preamble = _preamble(exp, runs, command, seconds, notes)
    report = build_report(
        runs,
        results_dir,
        title=spec.title,
        preamble=preamble,
        sections=sections,
        extra=extra,
        pairs=spec.pairs,
        formats=FORMATS,  # an experiment's tables are the ones a paper quotes: every format, always
    )
    write_text(results_dir / "experiment.yaml", exp.text)
    return report
