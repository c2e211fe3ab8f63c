"""Importing runs into a runs folder (``dard import``): from an archive (:mod:`dard.run_dir.archive`) or from a run
folder (a committed teacher, say). The runs are staged in a hidden folder beside the runs, read back with the strict
readers, and only then placed, all or none:

- no folder of that name yet: the run moves into place;
- a folder holding another run (its config differs in more than where it ran, :mod:`dard.config.identity`): the
  import is refused and nothing changes;
- the same run: the copy further along wins (finished, then more epochs, then a later snapshot). An import that
  is further along replaces the folder (whose content it supersedes); one just as far adds the files the folder
  lacks (its weights, say) and keeps the folder's own; one behind it changes nothing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dard.config.identity import config_diff, config_identity
from dard.errors import DardError
from dard.run_dir.archive import RUN_NAME, allowed, extract_archive
from dard.run_dir.layout import CHECKPOINTS, RunDir


@dataclass
class Imported:
    """What importing one run did: ``added``, ``replaced``, ``merged``, ``unchanged`` or ``kept``."""

    name: str
    path: Path
    action: str
    detail: str = ""


def import_runs(source: str | Path, runs_root: str | Path) -> list[Imported]:
    """Import the runs of ``source`` (an archive or a run folder) into ``runs_root``. Recorded configs are compared
    by their identity (parsed again, so options newer than a record count at their defaults)."""
    source, root = Path(source), Path(runs_root)
    if not source.exists():
        raise DardError(f"nothing to import: {source} not found")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    try:
        names = _stage(source, staging)
        plans = [_plan(source, staging / n, root / n) for n in names]
        return [_place(staging / n, root / n, action) for n, action in zip(names, plans)]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _stage(source: Path, staging: Path) -> list[str]:
    """Put the source's runs under ``staging``; returns their names."""
    if source.is_dir():
        run = RunDir(source)
        if not RUN_NAME.fullmatch(source.name) or not run.is_run():
            raise DardError(f"{source} is not a dard run folder (no config.yaml) or has an unusual name")
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source).as_posix()
            if path.is_file() and not path.is_symlink() and allowed(rel):  # other files are not records
                (staging / source.name / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, staging / source.name / rel)
        names = [source.name]
    else:
        names = [r.name for r in extract_archive(source, staging).runs]
    for name in names:
        try:
            _read_all(RunDir(staging / name))
        except DardError as e:
            raise DardError(f"{source}: {str(e).replace(str(staging), '<import>')}") from None
    return names


def _read_all(run: RunDir) -> None:
    """Read every record of a staged run with the strict readers (a DardError on the first bad one)."""
    run.require_run()
    run.read_config()
    if run.run_info.is_file():
        run.read_info()
    run.read_metrics()
    run.read_evals()
    for c in CHECKPOINTS:
        run.read_compare(c), run.read_label_gap(c)
    if run.has_snapshot():
        run.resume_snapshot().read_progress()


def _stage_key(run: RunDir) -> tuple[int, int, int]:
    """How far a run is: finished, epochs recorded, and (unfinished) the snapshot's step."""
    done = run.is_evaluated()
    progress = None if done else run.read_progress()
    return int(done), len(run.read_metrics()), progress.global_step if progress else 0


def _plan(source: Path, staged: Path, dest: Path) -> str:
    """What to do with one staged run (checked for every run before any is placed)."""
    here = RunDir(dest)
    if here.is_empty():
        return "added"
    if not here.is_run():
        raise DardError(f"{dest} exists but is not a dard run folder; move it away or import into another --runs")
    diff = config_diff(config_identity(here.read_config()), config_identity(RunDir(staged).read_config()))
    if diff:
        raise DardError(f"{dest} holds another run than {source} ({', '.join(diff[:4])} differ); nothing imported")
    new, old = _stage_key(RunDir(staged)), _stage_key(here)
    return "replaced" if new > old else "merged" if new == old else "kept"


def _place(staged: Path, dest: Path, action: str) -> Imported:
    name = dest.name
    if action == "added":
        if dest.exists():
            dest.rmdir()  # empty (checked by the plan)
        os.rename(staged, dest)
        return Imported(name, dest, action)
    if action == "replaced":
        old = dest.with_name(f".replaced-{name}-{secrets.token_hex(4)}")
        os.rename(dest, old)
        os.rename(staged, dest)
        shutil.rmtree(old, ignore_errors=True)
        return Imported(name, dest, action, "the import was further along")
    if action == "kept":
        return Imported(name, dest, action, f"{dest} is further along")
    added, differ = 0, 0
    for path in sorted(p for p in staged.rglob("*") if p.is_file()):
        target = dest / path.relative_to(staged)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            added += 1
        elif target.read_bytes() != path.read_bytes():
            differ += 1
    what = ", ".join(
        ([f"{added} file(s) added"] if added else [])
        + ([f"{differ} differing file(s) kept as they were"] if differ else [])
    )
    return Imported(name, dest, "merged" if added else "unchanged", what)
