"""What an existing run folder means to an experiment: whether it may be reused for a planned run, how far it has
got, and whether a distilled run's finished teacher holds the weights it needs."""

from __future__ import annotations

import os
from pathlib import Path

from dard.config import RunConfig
from dard.config.identity import config_diff, config_identity
from dard.errors import DardError, shown
from dard.methods import METHODS
from dard.run_dir import RunDir

#: the status of a run that is evaluated: reused as it is
RUN_DONE = "done (reused)"
#: the status of a run with nothing trained yet: it starts from scratch, as a new run
RUN_NEW = "new"
#: the status of a run whose resume snapshot does not read: it stops with that error when it starts
RUN_UNREADABLE = "resume state unreadable: training would stop with an error"


def check_reusable(run_dir: Path, cfg: RunConfig) -> None:
    """Raise if ``run_dir`` holds a run made with a different config than ``cfg`` (ignoring device/threads/dir), or
    is a symbolic link: the experiment trained, evaluated and reported a folder outside its runs folder, wherever
    the link led (another experiment's run, say)."""
    if os.path.islink(run_dir):
        raise DardError(
            f"{run_dir} is a symbolic link (to {shown(os.readlink(run_dir))}); an experiment's runs are folders of "
            "its runs folder, never written or reported through a link: remove it, or move the run there"
        )
    folder = RunDir(run_dir)
    if not folder.is_run():
        if not folder.is_empty():
            raise DardError(f"{run_dir} exists but is not a dard run folder; move it away or use another --runs")
        return
    want = config_identity(cfg.model_dump(mode="json"))
    # Parsed again, so options added to dard since the run was made count at their defaults.
    have = config_identity(folder.read_run_config().model_dump(mode="json"))
    diff = config_diff(have, want)
    if diff:
        raise DardError(
            f"{run_dir} was made with a different config ({', '.join(diff[:4])}); delete it or use "
            f"another --runs folder"
        )


def run_status(run_dir: Path, epochs: int) -> str:
    """What `dard experiment` would do with this run folder: reuse it, evaluate it, resume it or start it."""
    folder = RunDir(run_dir)
    if folder.is_evaluated():
        return RUN_DONE
    if not folder.has_snapshot():
        return RUN_NEW
    progress = folder.read_progress()
    if progress is None:
        return RUN_UNREADABLE
    epoch, batch = progress.epoch, progress.batch
    if epoch >= epochs:
        kept = folder.read_eval_progress("best")
        attacks = sum(len(p.attacks) for p in (kept.suite, kept.autoattack_subset) if p) if kept is not None else 0
        return "trained; test evaluation pending" + (f" ({attacks} attack(s) of it done)" if attacks else "")
    return f"resumes at epoch {epoch + 1}/{epochs}" + (f", step {batch + 1}" if batch else "")


def distils(cfg: RunConfig) -> bool:
    """Whether the run's method distils from a teacher."""
    return bool(METHODS.get(cfg.method.name).needs_teacher)


def missing_teacher_weights(cfg: RunConfig) -> str | None:
    """Why a planned run cannot train: its teacher's run folder is finished but holds no weights (it was imported
    without them); None when the run can train (or its teacher will be trained first)."""
    ckpt = Path(str(cfg.teacher.checkpoint or ""))
    if not distils(cfg) or ckpt.exists() or not RunDir(ckpt.parent).is_evaluated():
        return None
    return (
        f"its teacher {ckpt.parent} holds no weights ({ckpt.name}: imported without them?); import the teacher's "
        "archive made with its weights (dard export --weights all)"
    )
