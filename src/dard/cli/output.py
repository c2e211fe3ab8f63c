"""Where `dard eval --out` and `dard report --out` may write (the write rule of :mod:`dard.io`, for these two).

`dard eval --out` never writes over a file that is not an evaluation record (a checkpoint, a config, weights),
inside a run folder only into its ``eval/`` folder, under the run's lock, never over the records dard writes itself
there (``eval/best.json``, ``eval/last.json``, the experiment's extras, set-aside records), and only into the run
folder of the checkpoint it evaluates. `dard report --out DIR` replaces a file only in a folder that holds a dard
report already. Both are checked before the work starts, so a bad path costs a second, not the evaluation.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from dard.errors import DardError
from dard.evaluation.record import EvalRecord
from dard.io import check_target, check_writable, set_aside, write_json
from dard.names import file_target
from dard.run_dir import CHECKPOINTS, EvalFile, RunDir, enclosing_run
from dard.run_dir.files import read_json_file


def _require_eval_record(path: Path) -> EvalFile:
    try:
        return read_json_file(path, EvalFile, "evaluation record")
    except DardError:
        raise DardError(
            f"--out {path} exists and is not a dard eval record; refusing to overwrite it (choose another path)"
        ) from None


def _evaluation(record: EvalRecord) -> dict[str, object]:
    """What a record measured: the model (its weights' digest where recorded), the images (not the folder they
    were read from), the threat model and every attack's config. Two records that differ in it are two results."""
    data = {k: v for k, v in record.data.items() if k != "folder"}
    attacks = {label: res.config for label, res in record.attacks.items()}
    return {"model": record.model, "data": data, "threat": record.threat_model, "attacks": attacks}


def _own_records(run: RunDir) -> set[str]:
    """The names in ``eval/`` that dard writes itself (training's records and the experiment's extras)."""
    return {p.name for c in CHECKPOINTS for p in (run.eval_file(c), run.compare_file(c), run.label_gap_file(c))}


def _run_of(source: str | Path) -> RunDir | None:
    """The run folder a checkpoint (or a run folder) given to `dard eval` belongs to, or None."""
    here = RunDir(source)
    return here if here.is_run() and here.run_info.is_file() else enclosing_run(source)


@dataclass(frozen=True)
class EvalOutput:
    """A checked ``--out`` path, and the run folder it lies in (None outside any run)."""

    path: Path
    run: RunDir | None

    @classmethod
    def check(cls, path: str | Path, source: str | Path | None = None) -> EvalOutput:
        """``path`` if `dard eval` of ``source`` (a checkpoint or run folder; None for external weights) may write
        its record there; a one-line DardError otherwise."""
        # as written (not resolved: a link inside a run must not take it out)
        p = Path(os.path.abspath(file_target(path, "--out", "record.json")))
        run = enclosing_run(p)
        if run is not None:
            if p.resolve().parent != run.eval_dir.resolve():
                raise DardError(
                    f"--out {p} lies inside run folder {run.path}; dard eval writes into a run only in its "
                    f"{run.eval_dir.name}/ folder (e.g. {run.eval_dir / 'mine.json'})"
                )
            if p.name in _own_records(run) or ".superseded-" in p.name:
                raise DardError(
                    f"--out {p} is a record dard writes itself for run {run.path}; choose another name "
                    f"(e.g. {run.eval_dir / 'mine.json'})"
                )
            mine = _run_of(source) if source is not None else None
            if mine is None or mine.path.resolve() != run.path.resolve():
                raise DardError(
                    f"--out {p} lies in run folder {run.path}, but the model evaluated is not that run's; write the "
                    "record outside run folders or into the evaluated run's eval/"
                )
            check_target(p, run.path)
        check_writable(p, folder=False, what="--out")
        check_target(p)
        if p.exists():
            _require_eval_record(p)
        if run is not None:
            with run.lock():  # in use now: say so before the evaluation, not after it
                pass
        return cls(Path(path), run)

    def write(self, record: EvalRecord) -> Path | None:
        """Write ``record`` atomically (holding the run folder's lock when inside a run). A record there of another
        evaluation (another model, other images, threat model or attacks) is kept under a new name, never
        replaced: returns that name (None when there was none, or it was this evaluation's, run again)."""
        with self.run.lock() if self.run is not None else nullcontext():
            root = self.run.path if self.run is not None else None
            kept = None
            if self.path.exists():  # checked again: it may have appeared during the evaluation
                if _evaluation(_require_eval_record(self.path)) != _evaluation(record):
                    kept = set_aside(os.path.abspath(self.path), root)
            write_json(os.path.abspath(self.path), record.to_dict(), root=root)
            return kept
