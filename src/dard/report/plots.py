"""Report plots, saved atomically as PNG.

Plots use matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg) rather than pyplot, so no GUI
backend is needed, no global backend is switched and no figure is left open.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dard.errors import one_line
from dard.io import atomic_write
from dard.report.groups import RunGroup


def save_png(fig: Any, path: Path, *, tight: bool = True) -> Path:
    """Write a matplotlib figure as a PNG (120 dpi) atomically; ``tight`` crops it to its content."""
    extra = {"bbox_inches": "tight"} if tight else {}
    with warnings.catch_warnings():
        # a run name's character the font lacks is drawn as a box; report.md and the tables show it as it is, so
        # matplotlib's warning would only add a line per character to the command's output
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120, **extra))


def mean_by_x(points: Iterable[tuple[float, float]]) -> tuple[list[float], list[float], list[float]]:
    """The points' x values in order, and the mean y and sample std of y (0 for a single point) at each."""
    by_x: dict[float, list[float]] = {}
    for x, y in points:
        by_x.setdefault(x, []).append(y)
    xs = sorted(by_x)
    stds = [statistics.stdev(by_x[x]) if len(by_x[x]) > 1 else 0.0 for x in xs]
    return xs, [statistics.fmean(by_x[x]) for x in xs], stds


def plot_text(text: object) -> str:
    """A record's text (a run name, a file name) as matplotlib shows it literally: one line, ``$`` escaped (two of
    them began mathtext: ``a$b$c`` was set as math and ``$\\frac{$`` ended the report with a parse error), and a
    space before a leading ``_`` (a legend leaves such labels out)."""
    line = one_line(text).replace("$", "\\$")
    return " " + line if line.startswith("_") else line


#: a legend label longer than this is cut in the middle: a 128-character run name made a legend wider than the plots
_LABEL_MAX = 48
#: line styles and markers taken in turn after each 10 colours: the 11th row had the 1st row's line
_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


def _labels(groups: list[RunGroup]) -> list[str]:
    """A distinct legend label per group: its name (cut in the middle past :data:`_LABEL_MAX` characters, keeping
    its end, where names differ by seed or setting) and its seed count."""
    out: list[str] = []
    for group in groups:
        name = plot_text(group.name)
        if len(name) > _LABEL_MAX:
            name = name[: _LABEL_MAX - 17] + "…" + name[-16:]
        n = len(group.members)
        label = name + (f" (n={n}, band: ± std)" if n > 1 else "")
        k = 1
        while label in out:  # two names cut to one label: numbered
            k += 1
            label = f"{name} ({k})" + (f" (n={n}, band: ± std)" if n > 1 else "")
        out.append(label)
    return out


def _style(index: int) -> dict[str, Any]:
    """The line of the ``index``-th group: one of 10 colours, then another line style and marker for the next 10."""
    linestyle, marker = _STYLES[index // 10 % len(_STYLES)]
    return {"color": f"C{index % 10}", "linestyle": linestyle, "marker": marker}


def _legend(fig: Any, axes: Iterable[Any]) -> None:
    """One legend for the figure, below its plots, in as many columns as fit: a legend inside the axes covered the
    lines (30 runs) and was drawn twice; every group any axis shows, once."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if not entries:
        return
    longest = max(len(label) for label in entries)
    ncol = max(1, min(len(entries), int(fig.get_figwidth() * 14 // (longest + 6))))
    fig.legend(
        list(entries.values()), list(entries), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, fontsize=8
    )


def _plot_band(ax: Any, points: list[tuple[float, float]], label: str, **style: Any) -> None:
    """The mean over seeds as a line, with a shaded band of ± one sample std where there are several seeds."""
    xs, ys, stds = mean_by_x(points)
    (line,) = ax.plot(xs, ys, label=label, **style)
    if any(stds):
        lo = [y - s for y, s in zip(ys, stds)]
        hi = [y + s for y, s in zip(ys, stds)]
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


def write_curves(groups: Iterable[RunGroup], path: Path) -> Path:
    """Validation clean / robust accuracy per epoch, one line per group (mean over its seeds, ± std band)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    groups = list(groups)
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for i, (group, label) in enumerate(zip(groups, _labels(groups))):
        for ax, key in zip(axes, ("val_clean", "val_robust")):
            pts = [
                (float(row.epoch), 100 * float(getattr(row, key)))
                for m in group.members
                for row in m.metrics
                if getattr(row, key) is not None
            ]
            if pts:
                _plot_band(ax, pts, label, markersize=3, **_style(i))
    for ax, t in zip(axes, ("Validation clean accuracy", "Validation robust accuracy")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(t)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        if not ax.get_legend_handles_labels()[0]:
            ax.text(0.5, 0.5, "no validation metrics", ha="center", va="center", transform=ax.transAxes)
    _legend(fig, axes)
    return save_png(fig, path)


def write_eps_curve(groups: Iterable[RunGroup], path: Path, *, checkpoint: str = "best") -> Path:
    """PGD-20 test accuracy vs eps (x in units of 1/255; an L2 radius as it is), one line per group (mean over its
    seeds, ± std band)."""
    from matplotlib.figure import Figure

    groups = list(groups)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    records = [r for g in groups for m in g.members if (r := m.evals.get(checkpoint)) is not None]
    l2 = bool(records) and all(str(r.threat_model.get("norm", "linf")).lower() == "l2" for r in records)
    for i, (group, label) in enumerate(zip(groups, _labels(groups))):
        pts = []
        for m in group.members:
            rec = m.evals.get(checkpoint)
            sweep = rec.eps_sweep.accuracies() if rec is not None and rec.eps_sweep else {}
            for k, v in sweep.items():
                try:
                    pts.append((round(float(k) * (1 if l2 else 255), 4), 100 * float(v)))
                except ValueError:
                    continue
        if pts:
            _plot_band(ax, pts, label, **_style(i))  # the same line as in the curves
    ax.set_title("PGD-20 accuracy vs eps")
    ax.set_xlabel("eps (L2)" if l2 else "eps (/255)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    _legend(fig, [ax])
    return save_png(fig, path)
