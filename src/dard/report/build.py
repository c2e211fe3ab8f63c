"""``build_report``: the table, ``results.json`` and plots over finished runs, written into one folder."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dard.errors import DardError
from dard.io import loads_json, write_json, write_text
from dard.report.columns import AA_CLEAN, AA_KEY, AA_PGD, attack_columns, main_columns
from dard.report.export import FORMATS, write_csv, write_robustbench, write_tex
from dard.report.groups import RunGroup, check_one_table, group_runs
from dard.report.markdown import ReportContent
from dard.report.paired_section import paired_section
from dard.report.plots import write_curves, write_eps_curve
from dard.report.sections import render
from dard.report.stats import autoattack_result, group_row, ordered_union, run_row
from dard.report.teachers import find_teachers
from dard.run_dir import CHECKPOINTS, RunDir, RunRecord
from dard.run_dir.files import MAX_RECORD_BYTES


def build_report(
    runs: Sequence[RunRecord],
    out_dir: Path,
    *,
    checkpoint: str = "best",
    title: str = "dard report",
    preamble: Sequence[str] = (),
    sections: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    formats: Sequence[str] = ("md",),
    pairs: Sequence[tuple[str, str]] = (),
    teachers: bool = True,
) -> Path:
    """Write ``report.md``, ``results.json``, ``curves.png`` (and ``eps_curve.png``) into ``out_dir``.

    ``runs`` are loaded run folders (:meth:`dard.run_dir.RunRecord.load`), all on one dataset and threat model
    (else a one-line DardError). Runs that differ only in seed (same seedless name and the same recorded config but
    for seed, name and the keys that do not change the numbers: :mod:`.groups`) form one row with ``mean ± std``
    over seeds; a seed given twice in one row is an error. The main table uses ``checkpoint`` (``best``: selected
    on the validation split); a second table shows the other checkpoint. Returns the path of ``report.md``.
    ``preamble`` lines go under the title, ``sections`` (Markdown) after the tables, and ``extra`` is stored under
    ``"extra"`` in ``results.json`` (used by ``dard experiment``). ``formats`` adds the main table as
    ``results.csv`` (``csv``) and ``results.tex`` (``tex``, a LaTeX tabular) beside ``report.md`` (``md``, always
    written). ``robustbench/<run>.json`` holds a RobustBench-style entry per run. Every file is written atomically.

    With ``teachers``, the teacher each run's run.json names is added as a row (first) when its run folder is at
    hand and not among ``runs`` (a preamble line says so, or that it was not found). Every row is compared with
    the DARD and SAT rows on the same images (:mod:`.paired_section`), and so are the ``pairs`` of row names.
    """
    _check_request(runs, checkpoint, formats, Path(out_dir))
    found = find_teachers(runs, checkpoint) if teachers else None
    if found is not None:
        runs = [*found.added, *runs]
        preamble = [*preamble, *found.lines()]
    groups = group_runs(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    records = [r.evals[checkpoint] for r in runs]
    # the subset sizes of this checkpoint's records: the other checkpoint's table says its own
    aa_ns = ordered_union([str(a["n"])] for r in runs if (a := autoattack_result(r.evals[checkpoint])))
    columns = main_columns(records, aa_ns)
    sanity = attack_columns(records, sanity=True)
    # AutoAttack's pair always: the other checkpoint may have run it where this one did not
    metric_keys = ordered_union([[c.key for c in columns], [AA_CLEAN, AA_KEY], [c.key for c in sanity], [AA_PGD]])
    row_name = {id(m): g.name for g in groups for m in g.members}
    run_rows = [run_row(r, checkpoint, row_name[id(r)]) for r in runs]
    group_rows = [group_row(g.name, g.key, g.members, metric_keys, checkpoint) for g in groups]
    teacher_rows = {row_name[id(r)] for r in runs if found is not None and r.path.resolve() in found.paths}
    paired = paired_section(groups, columns, checkpoint, pairs=pairs, teachers=teacher_rows)

    plots = _write_plots(groups, runs, out_dir, checkpoint)
    content = ReportContent(
        title=title,
        checkpoint=checkpoint,
        runs=runs,
        run_rows=run_rows,
        group_rows=group_rows,
        columns=columns,
        sanity=sanity,
        aa_ns=aa_ns,
        has_aa=any(autoattack_result(r.evals[checkpoint]) for r in runs),
        plots=[(caption, path.name) for caption, path in plots],
        preamble=preamble,
        sections=sections,
        paired=paired,
    )
    results: dict[str, Any] = {"title": title, "checkpoint": checkpoint, "runs": run_rows, "groups": group_rows}
    results["paired"] = paired.to_dict()
    if extra:
        results["extra"] = dict(extra)
    write_json(out_dir / "results.json", results)
    written = {*write_robustbench(runs, out_dir / "robustbench", checkpoint), *(path for _, path in plots)}
    if "csv" in formats:
        written.add(write_csv(content, out_dir / "results.csv"))
    if "tex" in formats:
        written.add(write_tex(content, out_dir / "results.tex"))
    _remove_stale(out_dir, written)
    return write_text(out_dir / "report.md", render(content))


# the first bytes of each file an earlier report may have left that this one does not write
_STALE = {"results.csv": b"run,method,", "results.tex": b"% dard report: ", "eps_curve.png": b"\x89PNG"}


def _remove_stale(out_dir: Path, written: set[Path]) -> None:
    """Remove what an earlier report wrote into ``out_dir`` and this one did not: its ``results.csv`` or
    ``results.tex`` (another ``--format``), ``eps_curve.png``, the RobustBench entries of runs no longer in it.
    They stayed beside the new report.md with the old report's numbers. Only dard's own files go: a regular file
    that starts as dard writes it, a RobustBench entry whose footnote says it is a dard run's."""
    stale = [out_dir / name for name in _STALE]
    stale += sorted((out_dir / "robustbench").glob("*.json"))
    for path in stale:
        if path in written or path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_RECORD_BYTES:
            continue
        data = path.read_bytes()
        if data.startswith(_STALE.get(path.name, b"{")) and (path.name in _STALE or _is_entry(data)):
            path.unlink()


def _is_entry(data: bytes) -> bool:
    """Whether ``data`` is a RobustBench entry dard wrote (:func:`dard.report.export.robustbench_entry`)."""
    try:
        entry = loads_json(data)
    except ValueError:
        return False
    return isinstance(entry, dict) and str(entry.get("footnote", "")).startswith("dard run, ") and "run" in entry


def _check_request(runs: Sequence[RunRecord], checkpoint: str, formats: Sequence[str], out_dir: Path) -> None:
    """A one-line DardError for an unknown format or checkpoint, no runs, a run without the checkpoint's record,
    an output folder inside one of the runs, or runs that do not fit one table."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise DardError(f"unknown report format {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if checkpoint not in CHECKPOINTS:
        raise DardError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, not '{checkpoint}'")
    if not runs:
        raise DardError("no run folders given to report on")
    outs = [Path(os.path.abspath(out_dir)), Path(out_dir).resolve()]  # as written and once resolved
    for r in runs:
        # a run dard reads without a config.yaml is no run folder to enclosing_run: its own check is here
        run_paths = {Path(os.path.abspath(r.path)), Path(r.path).resolve()}
        if any(out == p or p in out.parents for out in outs for p in run_paths):
            raise DardError(f"--out {out_dir} lies inside run folder {r.path}; write the report outside run folders")
        if checkpoint not in r.evals:
            raise DardError(f"{r.path} has no {RunDir(r.path).eval_file(checkpoint).relative_to(r.path)}")
    check_one_table(runs, checkpoint)


def _write_plots(
    groups: Sequence[RunGroup], runs: Sequence[RunRecord], out_dir: Path, checkpoint: str
) -> list[tuple[str, Path]]:
    """Draw ``curves.png`` (and ``eps_curve.png`` when a run has an eps sweep); (caption, path) of each."""
    curves = write_curves(groups, out_dir / "curves.png")
    plots = [("Validation accuracy per epoch (mean ± std over seeds)", curves)]
    if any(r.evals[checkpoint].eps_sweep for r in runs):
        path = write_eps_curve(groups, out_dir / "eps_curve.png", checkpoint=checkpoint)
        plots.append((f"PGD-20 accuracy vs eps ({checkpoint} checkpoint, mean ± std over seeds)", path))
    return plots
