"""A checkpoint's two files (``best.safetensors`` and ``best.json``) as one save's.

:func:`dard.checkpoint.save_checkpoint` writes the weights, then the metadata, which records the weights file's
SHA-256 (``weights_sha256``). A training killed between the two writes leaves new weights beside the metadata of
the save before; one killed after them and before the snapshot that records their epoch leaves a whole pair of an
epoch the run's records do not know. Readers refuse the first (:func:`check_pair`), and so do ``dard export`` and
``dard import`` (:func:`stale_pairs`, :func:`of_two_saves`); a resume sets either aside (:func:`saved_epoch`, used
by :func:`dard.training.state.settle_checkpoints`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dard.errors import DardError, shown
from dard.io import loads_json, sha256_file
from dard.run_dir.files import read_bytes
from dard.run_dir.layout import CHECKPOINTS, RunDir, enclosing_run

#: the key of a checkpoint's JSON that holds its weights file's SHA-256 (older checkpoints have none)
WEIGHTS_SHA256 = "weights_sha256"


def check_pair(weights: Path, meta: Mapping[str, Any], meta_path: Path) -> None:
    """A DardError unless the metadata ``meta`` (read from ``meta_path``) describes the weights file beside it: the
    SHA-256 it records is the file's (older checkpoints record none and pass). New weights beside the metadata of
    the save before were read as theirs (another epoch, another selection score)."""
    want = meta.get(WEIGHTS_SHA256)
    if want is None:
        return
    if not (isinstance(want, str) and re.fullmatch(r"[0-9a-f]{64}", want)):
        raise DardError(f"{meta_path}: {WEIGHTS_SHA256} is {shown(want)}, not a SHA-256 hex digest")
    try:
        have = sha256_file(weights)
    except OSError as e:
        raise DardError(f"cannot read {weights}: {e.strerror or e}") from None
    if have != want:
        run = enclosing_run(weights)
        # a resume with epochs to train sets the pair aside and writes it again (dard.training.state)
        fix = f"; `dard train --resume {run.path}` (with epochs left to train) writes it again" if run else ""
        raise DardError(f"{two_saves(weights, meta_path)}{fix}")


def two_saves(weights: Path, meta_path: Path) -> str:
    """What is wrong with a checkpoint whose metadata ``meta_path`` records other weights than ``weights``."""
    return (
        f"{meta_path} does not describe {weights.name} beside it (the weights' SHA-256 is not the one it records): "
        "the two files are of different saves, as a training killed between them leaves"
    )


def of_two_saves(weights: Path, meta_path: Path) -> bool:
    """Whether ``weights`` and its metadata ``meta_path`` are both there and of two saves (:func:`check_pair`).
    Metadata that cannot be read, or records no SHA-256 (an older checkpoint), is not judged here: the strict
    readers of a checkpoint say what is wrong with it."""
    try:
        meta = loads_json(read_bytes(meta_path, "checkpoint metadata"))
    except (DardError, ValueError, OSError):
        return False
    want = meta.get(WEIGHTS_SHA256) if isinstance(meta, dict) else None
    try:
        return want is not None and weights.is_file() and sha256_file(weights) != want
    except OSError:  # weights that cannot be read: their reader says
        return False


def stale_pairs(run: RunDir, where: str) -> list[str]:
    """The files (relative to ``run``) of its best and last checkpoints whose two files are of two saves
    (:func:`of_two_saves`), which an unfinished run leaves out of what it carries: its resume sets them aside and
    writes them again. A finished run's are a DardError starting with ``where``: nothing writes them again, and
    its metadata would be read as the other weights' wherever it went."""
    stale = [c for c in CHECKPOINTS if of_two_saves(run.weights(c), run.checkpoint_meta(c))]
    if stale and run.is_evaluated():
        raise DardError(f"{where}: {two_saves(run.weights(stale[0]), run.checkpoint_meta(stale[0]))}")
    return [p.relative_to(run.path).as_posix() for c in stale for p in (run.weights(c), run.checkpoint_meta(c))]


def saved_epoch(weights: Path, meta_path: Path) -> int | None:
    """The epoch the checkpoint ``weights`` + ``meta_path`` was saved at, where the two files are there and one
    save's (:func:`check_pair`); None otherwise (either missing, unreadable, or of two saves)."""
    try:
        meta = loads_json(read_bytes(meta_path, "checkpoint metadata"))
        if not isinstance(meta, dict) or not weights.is_file():
            return None
        check_pair(weights, meta, meta_path)
    except (DardError, ValueError, OSError):
        return None
    epoch = meta.get("epoch")
    return epoch if type(epoch) is int else None
