"""Where a report may be written: `dard report --out DIR` and `dard experiment --results DIR` replace their files
only in a folder that holds none of them yet or that dard wrote (the write rule of :mod:`dard.io`, for reports)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from dard.errors import DardError
from dard.io import check_target, check_writable, loads_json
from dard.run_dir import enclosing_run
from dard.run_dir.files import read_bytes

#: the files `dard report` writes into its folder (``robustbench/`` holds one JSON file per run)
REPORT_FILES = ("report.md", "results.json", "results.csv", "results.tex", "curves.png", "eps_curve.png")
REPORT_SUBFOLDER = "robustbench"
_RESULTS_KEYS = {"title", "checkpoint", "runs", "groups"}  # what dard's results.json holds


def _is_report_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a report dard wrote (its results.json, with dard's keys). A results.json over
    :data:`MAX_RECORD_BYTES` (a report's is kilobytes) is a one-line DardError, read no further: it was read whole."""
    path = folder / "results.json"
    if not path.is_file():
        return False
    try:
        results = loads_json(read_bytes(path, "report results"))
    except ValueError:
        return False
    return isinstance(results, dict) and _RESULTS_KEYS <= set(results)


def check_report_out(
    folder: str | Path,
    *,
    flag: str = "--out",
    more: Sequence[str] = (),
    ours: Callable[[Path], bool] = lambda folder: False,
) -> None:
    """A one-line DardError unless a report may be written into ``folder``: absent, or a folder where none of the
    files a report writes (and ``more``, what the caller writes beside it) exists, or one holding a dard report
    already (whose files it replaces; ``ours``: another sign that dard wrote the folder); never through a link,
    FIFO or device where a report file or ``robustbench/`` belongs, and never inside a run folder. ``flag`` names
    the option in the message."""
    folder = Path(folder)
    check_writable(folder, folder=True, what=flag)
    run = enclosing_run(folder / "x")
    if run is not None:
        raise DardError(f"{flag} {folder} lies inside run folder {run.path}; write the report outside run folders")
    targets = [folder / name for name in (*REPORT_FILES, *more)]
    for path in [*targets, folder / REPORT_SUBFOLDER / "x.json"]:
        check_target(path, folder)
    sub = folder / REPORT_SUBFOLDER
    present = [p for p in targets if p.exists()] + (sorted(sub.glob("*.json")) if sub.is_dir() else [])
    for path in present:
        check_target(path)
    if present and not (_is_report_folder(folder) or ours(folder)):
        raise DardError(
            f"{flag} {folder} holds {present[0].name}, which dard did not write (no dard results.json beside it); "
            f"refusing to overwrite it: choose another {flag}"
        )
