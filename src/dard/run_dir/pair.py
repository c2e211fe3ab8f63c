"""A checkpoint's two files (``best.safetensors`` and ``best.json``) as one save's.

:func:`dard.checkpoint.save_checkpoint` writes the weights, then the metadata, which records the weights file's
SHA-256 (``weights_sha256``). A training killed between the two writes leaves new weights beside the metadata of
the save before; one killed after them and before the snapshot that records their epoch leaves a whole pair of an
epoch the run's records do not know. Readers refuse the first (:func:`check_pair`); a resume sets either aside
(:func:`saved_epoch`, used by :func:`dard.training.state.settle_checkpoints`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dard.errors import DardError, shown
from dard.io import loads_json, sha256_file
from dard.run_dir.files import read_bytes
from dard.run_dir.layout import enclosing_run

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
        raise DardError(
            f"{meta_path} does not describe {weights.name} beside it (the weights' SHA-256 is not the one it "
            f"records): the two files are of different saves, as a training killed between them leaves{fix}"
        )


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
