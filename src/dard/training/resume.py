"""What `dard train --resume` may change in a recorded run, and how a change is recorded.

A resume continues the run its folder records (``config.yaml``). Two kinds of keys may differ from the record:

- where and how fast the run executes (:data:`dard.config.identity.NOT_IDENTITY`: device, data folder, threads,
  the fp32 speed switches, the teacher's location): applied, not recorded;
- what is safe to change part-way (:data:`CHANGEABLE`): the number of epochs (never below the epochs already
  trained) and the final test evaluation (``eval.*``), plus the validation batch size. Applied, written to
  ``config.yaml`` and logged in ``run.json`` (``changes``). Evaluation records they make stale (``eval/best.json``
  after a new suite; every ``eval/*.json`` after more epochs, whose checkpoints change) are set aside as
  ``*.superseded-<k>.json``, never overwritten, and the final evaluation runs again.

Every other key (method, model, data, seed, optimizer, attacks, ...) would make it a different run: refused with
one line.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dard.config import RunConfig, apply_overrides, dump_config, parse_config
from dard.config.identity import NOT_IDENTITY, config_diff, without_keys
from dard.errors import DardError, shown
from dard.run_dir import CHECKPOINTS, RunDir, RunInfo

# The one list of what a resume may change (dotted keys; a section stands for every key under it): the keys it
# records in the run, and where the run executes (applied, not recorded). `dard train --resume` refuses its options
# for any other key from these lists before any work, and resume_changes the rest.
#: the keys (and sections) a resume may change, recorded in the run
CHANGEABLE = ("optim.epochs", "eval", "val.batch_size")
#: where the run executes (:data:`dard.config.identity.NOT_IDENTITY`): a resume may change these, unrecorded
WHERE_IT_RUNS = tuple(".".join(path) for path in NOT_IDENTITY)
#: keys a resume may change but not through `dard train`'s shortcut option: ``--teacher`` names the teacher, which a
#: resume keeps; a moved teacher run is followed with ``--set teacher.checkpoint=``
NO_SHORTCUT_ON_RESUME = ("teacher.checkpoint",)


@dataclass
class ResumeChanges:
    """The recorded keys a resume changes, as ``key -> (recorded, new)``, and the files they make stale."""

    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    stale: list[Path] = field(default_factory=list)
    info: RunInfo | None = None  # run.json as read before the change (it gets the log entry)
    after_epoch: int = 0  # epochs trained when the change was made


def _value(d: Mapping[str, Any], dotted: str) -> Any:
    v: Any = d
    for k in dotted.split("."):
        v = v.get(k) if isinstance(v, Mapping) else None
    return v


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def may_change(key: str) -> bool:
    """Whether a resume may change the dotted config key ``key`` (recorded, or where the run executes)."""
    return _under(key, CHANGEABLE) or _under(key, WHERE_IT_RUNS)


def shortcut_may_change(key: str) -> bool:
    """Whether `dard train --resume` takes the shortcut option (``--epochs``, ``--device``, ...) of config ``key``."""
    return may_change(key) and key not in NO_SHORTCUT_ON_RESUME


def resume_config(
    run_dir: str | Path, overrides: list[str], shortcuts: Mapping[str, tuple[str, Any]] | None = None
) -> RunConfig:
    """The recorded config of ``run_dir`` with ``key=value`` overrides and shortcut options applied
    (:func:`dard.config.apply_overrides`; checked later by :func:`resume_changes`: only the keys above may differ)."""
    folder = RunDir(run_dir)
    data = folder.read_run_config().model_dump(mode="json")
    apply_overrides(data, overrides, shortcuts, schema=RunConfig)
    return parse_config(data)


def resume_changes(folder: RunDir, cfg: RunConfig, epochs_done: int) -> ResumeChanges:
    """How ``cfg`` differs from the run ``folder`` records; a one-line DardError for a key a resume may not change
    or fewer epochs than were trained. Reads, never writes."""
    have = without_keys(folder.read_run_config().model_dump(mode="json"), NOT_IDENTITY)
    want = without_keys(cfg.model_dump(mode="json"), NOT_IDENTITY)
    diff = {k: (_value(have, k), _value(want, k)) for k in config_diff(have, want)}
    refused = [k for k in diff if not may_change(k)]  # the where-it-runs keys are out of the diff already
    if refused:
        shown_keys = ", ".join(f"{k} ({shown(diff[k][0], 40)} -> {shown(diff[k][1], 40)})" for k in refused[:3])
        raise DardError(
            f"--resume cannot change {shown_keys}{' ...' if len(refused) > 3 else ''}: {folder.path} records another "
            "value; a resume may change only optim.epochs (--epochs), eval.*, val.batch_size and where it runs "
            "(--device, --data-dir, speed.*); start a new run with --out for anything else"
        )
    if cfg.optim.epochs < epochs_done:
        raise DardError(
            f"optim.epochs {cfg.optim.epochs} is fewer than the {epochs_done} epochs {folder.path} has trained"
        )
    changes = ResumeChanges(diff, after_epoch=epochs_done)
    if changes.changed:
        changes.info = folder.read_info() if folder.run_info.is_file() else RunInfo()
        if "optim.epochs" in changes.changed:  # the checkpoints change, so every record made from them is stale
            stale = [
                f for w in CHECKPOINTS for f in (folder.eval_file(w), folder.compare_file(w), folder.label_gap_file(w))
            ]
        else:
            stale = [folder.eval_file(w) for w in CHECKPOINTS] if _changes_eval(changes) else []
        changes.stale = [f for f in stale if f.exists()]
    return changes


def _changes_eval(changes: ResumeChanges) -> bool:
    return any(_under(k, ("eval",)) for k in changes.changed)


def record_resume_changes(folder: RunDir, cfg: RunConfig, changes: ResumeChanges) -> None:
    """Write the changed config, set the stale records aside and log the change in ``run.json``."""
    if not changes.changed:
        return
    moved: dict[str, str] = {}
    for f in changes.stale:
        new = folder.set_aside(f)
        assert new is not None  # stale holds files that exist
        moved[str(f.relative_to(folder.path))] = str(new.relative_to(folder.path))
    folder.write_config(dump_config(cfg))
    info = changes.info or RunInfo()
    entry = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "after_epoch": changes.after_epoch,
        "changed": {k: {"from": old, "to": new} for k, (old, new) in changes.changed.items()},
        "set_aside": moved,
    }
    info.changes = [*(info.changes or []), entry]
    folder.write_info(info)
