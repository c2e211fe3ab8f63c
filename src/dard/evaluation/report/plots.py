"""Report plots, saved atomically as PNG.

Plots use matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg) rather than pyplot, so no GUI
backend is needed, no global backend is switched and no figure is left open.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dard.evaluation.report.stats import group_name
from dard.io import atomic_write
from dard.run_dir import RunRecord


def save_png(fig: Any, path: Path, *, tight: bool = True) -> Path:
    """Write a matplotlib figure as a PNG (120 dpi) atomically; ``tight`` crops it to its content."""
    extra = {"bbox_inches": "tight"} if tight else {}
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120, **extra))


def mean_by_x(points: Iterable[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """The points' x values in order, and the mean y at each."""
    by_x: dict[float, list[float]] = {}
    for x, y in points:
        by_x.setdefault(x, []).append(y)
    xs = sorted(by_x)
    return xs, [statistics.fmean(by_x[x]) for x in xs]


def _label(members: Sequence[RunRecord]) -> str:
    return group_name(members[0]) + (f" (n={len(members)})" if len(members) > 1 else "")


def write_curves(groups: Iterable[Sequence[RunRecord]], path: Path) -> Path:
    """Validation clean / robust accuracy per epoch, one line per group (mean over its seeds)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    plotted = False
    for members in groups:
        for ax, key in zip(axes, ("val_clean", "val_robust")):
            pts = [
                (float(row.epoch), 100 * float(getattr(row, key)))
                for m in members
                for row in m.metrics
                if getattr(row, key) is not None
            ]
            if pts:
                xs, ys = mean_by_x(pts)
                ax.plot(xs, ys, marker="o", markersize=3, label=_label(members))
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
    return save_png(fig, path)


def write_eps_curve(groups: Iterable[Sequence[RunRecord]], path: Path, *, checkpoint: str = "best") -> Path:
    """PGD-20 test accuracy vs eps (x in units of 1/255), one line per group (mean over its seeds)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for members in groups:
        pts = []
        for m in members:
            rec = m.evals.get(checkpoint)
            sweep = rec.eps_sweep.accuracy if rec is not None and rec.eps_sweep else {}
            for k, v in sweep.items():
                try:
                    pts.append((round(float(k) * 255, 4), 100 * float(v)))
                except ValueError:
                    continue
        if pts:
            xs, ys = mean_by_x(pts)
            ax.plot(xs, ys, marker="o", label=_label(members))
    ax.set_title("PGD-20 accuracy vs eps")
    ax.set_xlabel("eps (/255)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return save_png(fig, path)
