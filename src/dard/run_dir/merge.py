"""Importing runs into a runs folder (``dard import``): from an archive (:mod:`dard.run_dir.archive`) or from a run
folder (a committed teacher, say). The runs are staged in a hidden folder beside the runs, read back with the strict
readers, and only then placed, all or none:

- no folder of that name yet: the run moves into place;
- a folder holding another run (its config differs in more than where it ran, :mod:`dard.config.identity`): the
  import is refused and nothing changes;
- the same run: the copy further along wins (finished, then more epochs, then a later snapshot, then more attacks
  of an unfinished test evaluation kept). An import that is further along takes the folder's place, and the local
  copy is set aside whole beside it (``<name>.local-<k>``, with the user's own files in it); one just as far adds
  the files the folder lacks (its weights, say) and keeps the folder's own; one behind it changes nothing.

Import never deletes a file it did not bring, and it holds each existing target folder's lock (:mod:`.lock`) while
it compares and places, so it never writes into a run that `dard train` is writing. A source that is neither a
regular file nor a folder (a FIFO, a device) is refused before it is opened.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from dard.config.identity import config_diff, config_identity
from dard.errors import DardError
from dard.io import check_target, file_kind
from dard.names import check_case_distinct
from dard.run_dir.archive import RUN_NAME, extract_archive
from dard.run_dir.carried import allowed, check_carried, kept_to_carry
from dard.run_dir.layout import CHECKPOINTS, RunDir, enclosing_run
from dard.run_dir.lock import LOCK_NAME, check_not_held
from dard.run_dir.pair import of_two_saves, stale_pairs, two_saves


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
    try:
        mode = source.stat().st_mode
    except FileNotFoundError:
        raise DardError(f"nothing to import: {source} not found") from None
    except OSError as e:
        raise DardError(f"cannot read {source}: {e.strerror or e}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DardError(f"cannot import {source}: it is {file_kind(mode)}, not an archive or a run folder")
    inside = enclosing_run(root / "x")  # as written and resolved: a link to a run folder is one too
    if inside is not None:  # the runs (and the staging folder) would land inside that run, beside its own files
        raise DardError(
            f"--runs {root} lies inside run folder {inside.path}; import into the folder that holds the runs"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DardError(f"cannot create runs folder {root}: {e.strerror or e}") from None
    try:
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    except OSError as e:  # a read-only runs folder
        raise DardError(f"cannot import into {root}: {e.strerror or e}") from None
    try:
        names = _stage(source, staging)
        there = [p.name for p in root.iterdir() if not p.name.startswith(".")]
        check_case_distinct(names, f"cannot import {source} into {root}: runs", there)
        for n in names:  # a link where a run goes would add or merge the run wherever it leads
            if os.path.islink(root / n):
                raise DardError(
                    f"{root / n} is a symbolic link; dard import never writes through links: remove it or import "
                    "into another --runs"
                )
            mode = os.lstat(root / n).st_mode if os.path.lexists(root / n) else stat.S_IFDIR
            if not stat.S_ISDIR(mode):  # a file or a FIFO: the lock's mkdir said "File exists", naming neither
                what = f"{root / n} is {file_kind(mode)}, not a run folder"
                raise DardError(f"{what}; move it away or import into another --runs")
        with ExitStack() as held:
            for n in names:  # every target locked before any is compared or changed
                held.enter_context(RunDir(root / n).lock())
            plans = [_plan(source, staging / n, root / n) for n in names]
            with _deferred_interrupt():  # a Ctrl-C between two renames would leave a run under its set-aside name
                return [_place(staging / n, root / n, action) for n, action in zip(names, plans)]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _stage(source: Path, staging: Path) -> list[str]:
    """Put the source's runs under ``staging``; returns their names."""
    if source.is_dir():
        run = RunDir(source)
        if not RUN_NAME.fullmatch(source.name) or not run.is_run():
            raise DardError(f"{source} is not a dard run folder (no config.yaml) or has an unusual name")
        check_not_held(source, "import")
        copied, stale = [], stale_pairs(run, f"cannot import {source}")  # as an export leaves them out, or refuses
        stale += [f for k in kept_to_carry(run) if k.why_not for f in (k.weights, k.meta)]
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source).as_posix()
            real = Path(os.path.realpath(path)) == source.resolve() / rel  # no link on the way (file or folder)
            if real and path.is_file() and allowed(rel) and rel not in stale:  # other files are not records
                try:
                    (staging / source.name / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, staging / source.name / rel)
                except OSError as e:  # a full disk, a file that cannot be read
                    raise DardError(f"cannot copy {path} into {staging.parent}: {e.strerror or e}") from None
                copied.append(rel)
        check_carried(str(source), run.is_evaluated(), copied)
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
        try:  # an edited config is not the one the records were made with: a resume of the copy refused it
            run.check_config_unchanged()
        except DardError:
            raise DardError(
                f"{run.path.name}/{run.config.name} was changed after dard wrote it (its SHA-256 is not the one "
                f"{run.run_info.name} records), so it is not the config the run's records were made with"
            ) from None
    run.read_metrics()
    run.read_evals()
    run.read_teacher_quality()
    for c in CHECKPOINTS:
        run.read_compare(c), run.read_label_gap(c), run.read_eval_progress(c)
        if of_two_saves(run.weights(c), run.checkpoint_meta(c)):  # readers would refuse it, or a resume set it aside
            raise DardError(two_saves(run.weights(c), run.checkpoint_meta(c)))
    for kept in kept_to_carry(run):  # as an export leaves it out: a resume would set it aside, a reader refuse it
        if kept.why_not:
            raise DardError(f"{run.path}: kept checkpoint {kept.name} cannot travel: {kept.why_not}")
    if run.has_snapshot():
        snap = run.resume_snapshot()
        snap.read_progress()
        for path in (snap.weights, snap.optimizer):  # the snapshot resume.json points at, whole
            if not path.is_file():
                raise DardError(f"{run.pointer} points at {snap.path.name}, which lacks {path.name}")


def _stage_key(run: RunDir) -> tuple[int, int, int, int]:
    """How far a run is: finished, epochs recorded, (unfinished) the snapshot's step, and the attacks its unfinished
    test evaluation has kept."""
    done = run.is_evaluated()
    progress = None if done else run.read_progress()
    kept = 0
    for c in () if done else CHECKPOINTS:
        evaluation = run.read_eval_progress(c)
        parts = (evaluation.suite, evaluation.autoattack_subset) if evaluation is not None else ()
        kept += sum(len(part.attacks) for part in parts if part is not None)
    return int(done), len(run.read_metrics()), progress.global_step if progress else 0, kept


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
    if new == old:
        _check_merge(staged, dest)
    return "replaced" if new > old else "merged" if new == old else "kept"


def _check_merge(staged: Path, dest: Path) -> None:
    """Every file a merge of ``staged`` into ``dest`` adds or compares, checked before any run is placed: a link
    where one goes (the write rule) or a local file that cannot be read was found part-way through the merge, with
    files already added and the other runs placed, while the error said nothing was imported."""
    for path in sorted(p for p in staged.rglob("*") if p.is_file()):
        target = dest / path.relative_to(staged)
        check_target(target, dest)
        if os.path.lexists(target):
            try:
                with open(target, "rb"):
                    pass
            except OSError as e:
                raise DardError(f"cannot read {target}: {e.strerror or e}; nothing imported") from None
    here = RunDir(dest)
    kept = {*here.kept_checkpoints(), *RunDir(staged).kept_checkpoints()}  # names only: no weights hashed here
    for c in [*CHECKPOINTS, *sorted(kept)]:  # a file added beside the local one of its pair: copies may differ
        pair = (here.weights(c), here.checkpoint_meta(c))
        weights, meta = (p if os.path.lexists(p) else staged / p.name for p in pair)
        if weights.parent != meta.parent and of_two_saves(weights, meta):
            local, imported = (weights, meta) if weights.parent == dest else (meta, weights)
            raise DardError(
                f"{dest}: the imported {imported.name} and the local {local.name} are of different saves (the "
                f"checkpoint's weights_sha256 is not the weights'), as two copies of one run trained apart are; "
                "nothing imported: import into another --runs"
            )


@contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """SIGINT held back while the body runs (delivered, as KeyboardInterrupt, once it has finished)."""
    blocked = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if blocked else None
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _aside(dest: Path) -> Path:
    """A free name beside ``dest`` for its local copy: ``<name>.local-<k>``."""
    k = 1
    while os.path.lexists(aside := dest.with_name(f"{dest.name}.local-{k}")):
        k += 1
    return aside


def _place(staged: Path, dest: Path, action: str) -> Imported:
    """Carry out ``action`` for one run (its folder's lock is held: the folder holds the lock file)."""
    name = dest.name
    if action == "added":  # the folder holds only the lock file: move the staged files in beside it
        for entry in sorted(staged.iterdir()):
            os.rename(entry, dest / entry.name)
        return Imported(name, dest, action)
    if action == "replaced":
        aside = _aside(dest)
        os.rename(dest, aside)  # whole, with whatever else the user keeps there
        os.rename(staged, dest)
        (aside / LOCK_NAME).unlink(missing_ok=True)  # the lock this import holds, not one of the run's files
        return Imported(name, dest, action, f"the import was further along; the local copy is kept as {aside}")
    if action == "kept":
        return Imported(name, dest, action, f"{dest} is further along")
    added, differ = 0, 0
    for path in sorted(p for p in staged.rglob("*") if p.is_file()):
        target = dest / path.relative_to(staged)
        check_target(target, dest)  # never through a link in the local folder
        if not os.path.lexists(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            added += 1
        elif not filecmp.cmp(target, path, shallow=False):  # in chunks: two weights files are not held whole
            differ += 1
    what = ", ".join(
        ([f"{added} file(s) added"] if added else [])
        + ([f"{differ} differing file(s) kept as they were"] if differ else [])
    )
    return Imported(name, dest, "merged" if added else "unchanged", what)
