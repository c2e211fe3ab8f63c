"""Reports over finished training runs: a Markdown table (mean ± std over seeds), ``results.json`` and plots.

A finished run folder (written by :func:`dard.training.loop.train`) holds ``run.json``, ``metrics.jsonl`` and
``eval/best.json`` / ``eval/last.json`` (see :class:`dard.evaluation.suite.EvalRecord`). :func:`build_report`
groups runs that differ only in their seed, and writes ``report.md``, ``results.json``, ``curves.png`` and,
when any run has an eps sweep, ``eps_curve.png`` into one folder. Every file is written atomically.

Plots use matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg) rather than pyplot, so no
GUI backend is needed, no global backend is switched and no figure is left open.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dard.errors import DardError
from dard.io import atomic_write, read_json, write_json, write_text

CHECKPOINTS = ("best", "last")
DASH = "—"
_SEED_SUFFIX = re.compile(r"(-s\d+|_seed\d+)$")
_AA = "autoattack"


# ----------------------------------------------------------------------------------------------- loading


def load_run(path: str | Path) -> dict[str, Any]:
    """Read a finished run folder.

    Returns ``{"path", "name", "seed", "method", "student", "teacher", "data", "run", "metrics", "evals",
    "train_seconds", "train_images_per_s", "device"}`` where ``run`` is ``run.json`` as written, ``metrics`` the
    rows of ``metrics.jsonl`` (a list, possibly empty), ``evals`` maps ``"best"`` / ``"last"`` to the evaluation
    records present in ``eval/``, ``train_seconds`` is the training loop's wall time and ``train_images_per_s``
    its throughput (None when not recorded), and ``device`` names where it trained.
    Raises :class:`DardError` if the folder is missing or holds no evaluation record.
    """
    path = Path(path)
    if not path.is_dir():
        raise DardError(f"{path} is not a finished dard run (folder not found)")
    evals: dict[str, dict[str, Any]] = {}
    for which in CHECKPOINTS:
        p = path / "eval" / f"{which}.json"
        if p.is_file():
            evals[which] = _read_json(p)
    if not evals:
        raise DardError(f"{path} is not a finished dard run (no eval/best.json)")
    run = _read_json(path / "run.json") if (path / "run.json").is_file() else {}
    first = next(iter(evals.values()))
    model = first.get("model") or {}
    method = run.get("method") or {}
    if isinstance(method, str):
        method = {"name": method}
    student = run.get("student") or {k: v for k, v in model.items() if k not in ("checkpoint", "epoch")}
    seed = run.get("seed", first.get("seed"))
    metrics = _read_jsonl(path / "metrics.jsonl")
    data = dict(run.get("data") or {})
    train_seconds = _train_seconds(path, metrics)
    return {
        "path": str(path),
        "name": str(run.get("name") or path.name),
        "seed": seed,
        "method": dict(method),
        "student": dict(student),
        "teacher": run.get("teacher"),
        "data": data,
        "run": run,
        "metrics": metrics,
        "evals": evals,
        "train_seconds": train_seconds,
        "train_images_per_s": _train_throughput(train_seconds, data, metrics),
        "device": _device_text(run),
    }


def _train_seconds(path: Path, metrics: Sequence[Mapping[str, Any]]) -> float | None:
    """Wall time of the training loop (validation and test evaluation excluded), or None if not recorded.

    Rows of ``metrics.jsonl`` carry it cumulatively; runs written before they did have it only in their
    final resume snapshot.
    """
    for row in reversed(metrics):
        if isinstance(row.get("train_seconds"), (int, float)):
            return float(row["train_seconds"])
    from dard.run_dir import RunDir

    progress = RunDir(path).read_progress()
    return None if progress is None or progress.train_seconds is None else float(progress.train_seconds)


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except json.JSONDecodeError as e:
        raise DardError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except OSError as e:
        raise DardError(f"cannot read {path}: {e.strerror or e}") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DardError(f"{path} line {i} is not valid JSON ({e.msg})") from None
    return rows


# ----------------------------------------------------------------------------------------------- numbers


def seedless_name(name: str) -> str:
    """``name`` without a trailing seed suffix (``-s<digits>`` or ``_seed<digits>``)."""
    return _SEED_SUFFIX.sub("", name)


def group_name(run: Mapping[str, Any]) -> str:
    """The run name without a trailing seed suffix (``-s<digits>`` or ``_seed<digits>``).

    Falls back to ``<method>-<student arch>`` when the run has no name.
    """
    name = str(run.get("run", {}).get("name") or "")
    stripped = seedless_name(name)
    if stripped:
        return stripped
    return f"{run['method'].get('name', '?')}-{run['student'].get('arch', '?')}"


def _teacher_arch(run: Mapping[str, Any]) -> str | None:
    t = run.get("teacher")
    return t.get("arch") if isinstance(t, Mapping) else None


def _group_key(run: Mapping[str, Any], checkpoint: str) -> tuple:
    rec = run["evals"].get(checkpoint) or next(iter(run["evals"].values()))
    tm = rec.get("threat_model") or {}
    eps = tm.get("eps")
    return (
        group_name(run),
        run["method"].get("name"),
        run["student"].get("arch"),
        _teacher_arch(run),
        tm.get("norm"),
        round(eps, 8) if isinstance(eps, (int, float)) else eps,
    )


def record_accuracies(rec: Mapping[str, Any] | None) -> dict[str, Any]:
    """Flat numbers of one evaluation record: clean, each attack label, autoattack (subset), worst_case, epoch."""
    if not rec:
        return {}
    out: dict[str, Any] = {
        "epoch": (rec.get("model") or {}).get("epoch"),
        "clean": (rec.get("clean") or {}).get("accuracy"),
    }
    for label, res in (rec.get("attacks") or {}).items():
        out[label] = res.get("accuracy")
    aa = _aa_result(rec)
    if aa is not None:
        out["autoattack_subset"] = aa["accuracy"]
        out["autoattack_subset_n"] = aa["n"]
    out["worst_case"] = (rec.get("worst_case") or {}).get("accuracy")
    return out


def _aa_result(rec: Mapping[str, Any]) -> dict[str, Any] | None:
    sub = rec.get("autoattack_subset")
    if not sub:
        return None
    attacks = sub.get("attacks") or {}
    res = attacks.get(_AA) or next(iter(attacks.values()), None)
    if res is None:
        return None
    n = (sub.get("data") or {}).get("n", res.get("total"))
    return {"accuracy": res.get("accuracy"), "n": n}


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std" (sample; None below 2 values), "n", "values"}`` of the numeric entries of ``values``."""
    vals = [float(v) for v in values if isinstance(v, (int, float))]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) >= 2 else None,
        "n": len(vals),
        "values": vals,
    }


def format_summary(summary: Mapping[str, Any] | None, *, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` (sample std; the mean alone below 2 values) of a summary times ``scale``: by default a
    fraction shown as a percentage with 2 decimals."""
    if not summary or summary.get("mean") is None:
        return DASH
    text = f"{scale * summary['mean']:.{digits}f}"
    if summary.get("n", 0) >= 2 and summary.get("std") is not None:
        text += f" ± {scale * summary['std']:.{digits}f}"
    return text


def _ordered_union(lists: Iterable[Iterable[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for items in lists:
        for x in items:
            seen.setdefault(x, None)
    return list(seen)


def _eps_text(eps: Any) -> str:
    if not isinstance(eps, (int, float)):
        return str(eps)
    k = eps * 255
    if abs(k - round(k)) < 1e-4:
        return f"{int(round(k))}/255 ({eps:.6f})"
    return f"{eps:.6f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]], *, text_columns: int = 4) -> list[str]:
    """A Markdown table: the first ``text_columns`` columns left-aligned, the numbers after them right-aligned."""
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return lines


# ----------------------------------------------------------------------------------------------- report


def build_report(
    run_dirs: list[Path],
    out_dir: Path,
    *,
    checkpoint: str = "best",
    title: str = "dard report",
    preamble: Sequence[str] = (),
    sections: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.md``, ``results.json``, ``curves.png`` (and ``eps_curve.png``) into ``out_dir``.

    Runs that differ only in seed (same name without its ``-s<N>`` / ``_seed<N>`` suffix, method, student,
    teacher and threat model) form one row with ``mean ± std`` over seeds. The main table uses ``checkpoint``
    (``best``: selected on the validation split); a second table shows the other checkpoint. Returns the path
    of ``report.md``. ``preamble`` lines go under the title, ``sections`` (Markdown) after the tables, and
    ``extra`` is stored under ``"extra"`` in ``results.json`` (used by ``dard experiment``).
    """
    if checkpoint not in CHECKPOINTS:
        raise DardError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, not '{checkpoint}'")
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise DardError("no run folders given to report on")
    runs = [load_run(p) for p in run_dirs]
    for r in runs:
        if checkpoint not in r["evals"]:
            raise DardError(f"{r['path']} has no eval/{checkpoint}.json")
    other = "last" if checkpoint == "best" else "best"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # groups, in order of first appearance
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(_group_key(r, checkpoint), []).append(r)

    attack_labels = _ordered_union((r["evals"][checkpoint].get("attacks") or {}).keys() for r in runs)
    metric_keys = ["clean", *attack_labels, "autoattack_subset", "worst_case"]
    aa_ns = _ordered_union([str(a["n"])] for r in runs for rec in r["evals"].values() if (a := _aa_result(rec)))
    has_aa = any(_aa_result(r["evals"][checkpoint]) for r in runs)

    run_rows = []
    for r in runs:
        run_rows.append(
            {
                "name": r["name"],
                "group": group_name(r),
                "path": r["path"],
                "seed": r["seed"],
                "method": r["method"],
                "student": r["student"].get("arch"),
                "teacher": _teacher_arch(r),
                "data": r["data"],
                "threat_model": r["evals"][checkpoint].get("threat_model"),
                **{w: record_accuracies(r["evals"].get(w)) or None for w in CHECKPOINTS},
                "flags": {w: _record_flags(r["evals"][w]) for w in CHECKPOINTS if w in r["evals"]},
                "eps_sweep": (r["evals"][checkpoint].get("eps_sweep") or None),
                "train_seconds": r["train_seconds"],
                "train_images_per_s": r["train_images_per_s"],
                "device": r["device"],
            }
        )

    group_rows = []
    for key, members in groups.items():
        g: dict[str, Any] = {
            "name": key[0],
            "method": key[1],
            "student": key[2],
            "teacher": key[3],
            "threat_model": {"norm": key[4], "eps": key[5]},
            "runs": [m["name"] for m in members],
            "seeds": [m["seed"] for m in members],
            "n": len(members),
            "train_minutes": summarize([m["train_seconds"] / 60 for m in members if m["train_seconds"] is not None]),
            "train_images_per_s": summarize([m["train_images_per_s"] for m in members]),
            "devices": _ordered_union([m["device"]] for m in members),
        }
        for w in CHECKPOINTS:
            accs = [record_accuracies(m["evals"].get(w)) for m in members]
            accs = [a for a in accs if a]
            g[w] = {k: summarize([a.get(k) for a in accs]) for k in metric_keys} if accs else None
            if g[w] is not None:
                g[w]["epochs"] = [a.get("epoch") for a in accs]
        group_rows.append(g)

    # ---- plots
    plots = []
    write_curves(groups.values(), out_dir / "curves.png")
    plots.append(("Validation accuracy per epoch (mean over seeds)", "curves.png"))
    if any(r["evals"][checkpoint].get("eps_sweep") for r in runs):
        write_eps_curve(groups.values(), out_dir / "eps_curve.png", checkpoint=checkpoint)
        plots.append((f"PGD-20 accuracy vs eps ({checkpoint} checkpoint, mean over seeds)", "eps_curve.png"))

    # ---- markdown
    aa_head = f"AutoAttack (subset {'/'.join(str(n) for n in aa_ns)})" if aa_ns else "AutoAttack (subset)"
    lines = [f"# {title}", "", *preamble]
    if preamble:
        lines.append("")
    lines.append(
        f"{len(runs)} run(s) in {len(group_rows)} group(s); runs that differ only in seed are one row "
        f"(mean ± sample std over seeds). Test-split accuracy in %, `{checkpoint}` checkpoint."
    )
    lines.append("")
    header = ["Run", "Method", "Student", "Teacher", "Seeds (n)", "Clean", *attack_labels]
    if has_aa:
        header.append(aa_head)
    header.append("Worst-case")
    rows = []
    for g in group_rows:
        s = g[checkpoint]
        row = [
            g["name"],
            g["method"] or DASH,
            g["student"] or DASH,
            g["teacher"] or DASH,
            str(g["n"]),
            format_summary(s["clean"]),
            *(format_summary(s[k]) for k in attack_labels),
        ]
        if has_aa:
            row.append(format_summary(s["autoattack_subset"]))
        row.append(format_summary(s["worst_case"]))
        rows.append(row)
    lines += _table(header, rows)
    lines.append("")

    if any(g[other] for g in group_rows):
        lines += [f"## `{other}` checkpoint", ""]
        lines.append(
            f"The same runs evaluated at their `{other}` checkpoint, so `best` (selected on validation) "
            f"and `last` (final epoch) can be compared."
        )
        lines.append("")
        show = [k for k in ("pgd20",) if any(g[other] and k in g[other] and g[other][k]["n"] for g in group_rows)]
        show_aa = any(g[other] and g[other]["autoattack_subset"]["n"] for g in group_rows)
        header2 = ["Run", "Method", "Student", "Teacher", "Seeds (n)", "Epoch (best / last)", "Clean", *show]
        if show_aa:
            header2.append(aa_head)
        rows2 = []
        for g in group_rows:
            s = g[other]
            if not s:
                continue
            epochs = " / ".join(_epochs_text(g[w]) for w in CHECKPOINTS)
            row = [
                g["name"],
                g["method"] or DASH,
                g["student"] or DASH,
                g["teacher"] or DASH,
                str(s["clean"]["n"]),
                epochs,
                format_summary(s["clean"]),
                *(format_summary(s[k]) for k in show),
            ]
            if show_aa:
                row.append(format_summary(s["autoattack_subset"]))
            rows2.append(row)
        lines += _table(header2, rows2)
        lines.append("")

    lines += _cost_section(group_rows)

    for section in sections:
        lines += [section.rstrip(), ""]

    lines += ["## Setup", ""]
    lines.append(
        "- Checkpoints were selected on the validation split (`best`: highest validation score during "
        "training; `last`: final epoch); every number above is measured on the test split."
    )
    tms = _ordered_union(
        [
            f"{(r['evals'][checkpoint].get('threat_model') or {}).get('norm', '?')}, eps = "
            f"{_eps_text((r['evals'][checkpoint].get('threat_model') or {}).get('eps'))}"
        ]
        for r in runs
    )
    lines.append(f"- Threat model: {'; '.join(tms)}.")
    datas = _ordered_union(
        [
            f"{(r['evals'][checkpoint].get('data') or {}).get('name', r['data'].get('name', '?'))}, "
            f"{(r['evals'][checkpoint].get('data') or {}).get('split', 'test')} n = "
            f"{(r['evals'][checkpoint].get('data') or {}).get('n', r['data'].get('test', '?'))}"
        ]
        for r in runs
    )
    lines.append(f"- Data: {'; '.join(datas)}.")
    worst_text = (
        "Worst-case counts test points that survive every threat-model attack of the main suite (not the "
        "pgd-large sanity check)."
    )
    aa_text = f"AutoAttack runs on the first {'/'.join(str(n) for n in aa_ns)} test images only; " if has_aa else ""
    lines.append(f"- {aa_text}{worst_text}")
    lines.append("")

    lines += ["## Flags", ""]
    flag_lines = []
    for rr in run_rows:
        for w, fl in rr["flags"].items():
            flag_lines += [f"- {rr['name']} (seed {rr['seed']}, {w}): {f}" for f in fl]
    lines += flag_lines or ["none"]
    lines.append("")

    lines += ["## Plots", ""]
    for caption, fname in plots:
        lines += [f"![{caption}]({fname})", ""]

    lines += ["## Runs", ""]
    lines += [f"- {rr['name']} (seed {rr['seed']}): `{rr['path']}`" for rr in run_rows]
    lines.append("")

    results = {"title": title, "checkpoint": checkpoint, "runs": run_rows, "groups": group_rows}
    if extra:
        results["extra"] = dict(extra)
    write_json(out_dir / "results.json", results)
    return write_text(out_dir / "report.md", "\n".join(lines))


def _train_throughput(
    seconds: float | None, data: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]
) -> float | None:
    """Training images per second over the whole run (all processes), from the recorded training time."""
    n = data.get("train")
    epochs = max((row.get("epoch") or 0 for row in metrics), default=0)
    if not seconds or not isinstance(n, int) or not epochs:
        return None
    return n * epochs / seconds


def _device_text(run: Mapping[str, Any]) -> str:
    """Where a run trained, from its run.json environment (with the process count under torchrun)."""
    env = run.get("environment") or {}
    text = str(env.get("device_name") or env.get("device") or "?")
    world = env.get("world_size") or 1
    return f"{text} x {world} processes" if world > 1 else text


def _cost_section(group_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Training wall time and throughput per group; empty when no run recorded its training time."""
    if not any(g["train_minutes"]["n"] for g in group_rows):
        return []
    lines = [
        "## Training cost",
        "",
        "Wall time of the training loop (adversarial example generation and teacher passes included; "
        "validation and test evaluation excluded), mean ± std over seeds. Runs that shared a machine or ran "
        "with fewer threads are slower, so compare rows made on the same device.",
        "",
    ]
    rows = [
        [
            g["name"],
            g["method"] or DASH,
            ", ".join(g["devices"]),
            str(g["train_minutes"]["n"]),
            format_summary(g["train_minutes"], scale=1, digits=1),
            format_summary(g["train_images_per_s"], scale=1, digits=0),
        ]
        for g in group_rows
    ]
    lines += _table(
        ["Run", "Method", "Device", "Seeds (n)", "Train time (min)", "Train images/s"], rows, text_columns=3
    )
    return lines + [""]


def _record_flags(rec: Mapping[str, Any]) -> list[str]:
    flags = [str(f) for f in rec.get("flags") or []]
    sub = rec.get("autoattack_subset")
    if sub:
        flags += [f"autoattack subset: {f}" for f in sub.get("flags") or []]
    return flags


def _epochs_text(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return DASH
    eps = [e for e in summary.get("epochs", []) if e is not None]
    return ", ".join(str(e) for e in eps) if eps else DASH


# ----------------------------------------------------------------------------------------------- plots


def _mean_by_x(points: Iterable[tuple[float, float]]) -> tuple[list[float], list[float]]:
    by_x: dict[float, list[float]] = {}
    for x, y in points:
        by_x.setdefault(x, []).append(y)
    xs = sorted(by_x)
    return xs, [statistics.fmean(by_x[x]) for x in xs]


def _save(fig: Any, path: Path) -> Path:
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))


def write_curves(groups: Iterable[Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """Validation clean / robust accuracy per epoch, one line per group (mean over its seeds)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    plotted = False
    for members in groups:
        label = group_name(members[0]) + (f" (n={len(members)})" if len(members) > 1 else "")
        for ax, key in zip(axes, ("val_clean", "val_robust")):
            pts = [
                (float(row["epoch"]), 100 * float(row[key]))
                for m in members
                for row in m["metrics"]
                if isinstance(row.get(key), (int, float)) and row.get("epoch") is not None
            ]
            if pts:
                xs, ys = _mean_by_x(pts)
                ax.plot(xs, ys, marker="o", markersize=3, label=label)
                plotted = True
    for ax, t in zip(axes, ("Validation clean accuracy", "Validation robust accuracy")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(t)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no validation metrics", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def write_eps_curve(groups: Iterable[Sequence[Mapping[str, Any]]], path: Path, *, checkpoint: str = "best") -> Path:
    """PGD-20 test accuracy vs eps (x in units of 1/255), one line per group (mean over its seeds)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for members in groups:
        pts = []
        for m in members:
            sweep = (m["evals"].get(checkpoint) or {}).get("eps_sweep") or {}
            for k, v in (sweep.get("accuracy") or {}).items():
                try:
                    pts.append((round(float(k) * 255, 4), 100 * float(v)))
                except (TypeError, ValueError):
                    continue
        if pts:
            xs, ys = _mean_by_x(pts)
            label = group_name(members[0]) + (f" (n={len(members)})" if len(members) > 1 else "")
            ax.plot(xs, ys, marker="o", label=label)
    ax.set_title("PGD-20 accuracy vs eps")
    ax.set_xlabel("eps (/255)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path)


__all__ = ["build_report", "load_run", "group_name", "record_accuracies", "write_curves", "write_eps_curve"]
