"""Where `dard eval --out` may write: never over a file that is not an evaluation record (a checkpoint, a config,
weights), and inside a run folder only into its ``eval/`` folder, under the run's lock. Checked before the
evaluation starts, so a bad path costs a second, not the evaluation."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from dard.errors import DardError
from dard.evaluation.suite import EvalRecord
from dard.io import check_writable, write_json
from dard.run_dir import EvalFile, RunDir, enclosing_run
from dard.run_dir.files import read_json_file


def _require_eval_record(path: Path) -> None:
    try:
        read_json_file(path, EvalFile, "evaluation record")
    except DardError:
        raise DardError(
            f"--out {path} exists and is not a dard eval record; refusing to overwrite it (choose another path)"
        ) from None


@dataclass(frozen=True)
class EvalOutput:
    """A checked ``--out`` path, and the run folder it lies in (None outside any run)."""

    path: Path
    run: RunDir | None

    @classmethod
    def check(cls, path: str | Path) -> EvalOutput:
        """``path`` if `dard eval` may write its record there; a one-line DardError otherwise."""
        p = Path(path)
        run = enclosing_run(p)
        if run is not None and p.resolve().parent != run.eval_dir.resolve():
            raise DardError(
                f"--out {p} lies inside run folder {run.path}; dard eval writes into a run only in its "
                f"{run.eval_dir.name}/ folder (e.g. {run.eval_dir / 'mine.json'})"
            )
        check_writable(p, folder=False, what="--out")
        if p.exists():
            _require_eval_record(p)
        if run is not None:
            with run.lock():  # in use now: say so before the evaluation, not after it
                pass
        return cls(p, run)

    def write(self, record: EvalRecord) -> Path:
        """Write ``record`` atomically (holding the run folder's lock when inside a run)."""
        with self.run.lock() if self.run is not None else nullcontext():
            if self.path.exists():  # checked again: it may have appeared during the evaluation
                _require_eval_record(self.path)
            return write_json(self.path, record.to_dict())
