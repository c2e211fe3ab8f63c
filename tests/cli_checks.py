"""Helpers for the reliability tests: run `dard` in-process and check that it failed cleanly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml
from tests.conftest import tiny_run_config, tree_bytes

from dard.cli import main

MAX_LINE = 600  # an error line's bound in these tests (paths included); echoed values are capped at 200


def config_file(tmp_path: Path, **sections) -> str:
    """A tiny run config (:func:`tiny_run_config`) written to ``tmp_path/c.yaml``; its path."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(**sections)))
    return str(path)


def fails_cleanly(capsys, root: Path | None, argv: list[str], *needles: str) -> str:
    """Run `dard ARGV` in-process: exit 2, one bounded `dard: error:` line holding ``needles``, no traceback, and
    the files under ``root`` exactly as before (none changed, none created; not checked if None). Returns the
    line."""
    before = tree_bytes(root) if root is not None else None
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("dard: error:"), err
    assert len(lines[0]) <= MAX_LINE, len(lines[0])
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert root is None or tree_bytes(root) == before
    return lines[0]


def edit_json(path: Path, edit: Callable[[dict], object]) -> None:
    """Rewrite a JSON file through ``edit`` (which changes the dict in place, or returns what to write instead)."""
    d = json.loads(path.read_text())
    out = edit(d)
    path.write_text(json.dumps(d if out is None else out))


def rehash_checkpoint(weights: Path) -> None:
    """Record the weights file's new SHA-256 in the checkpoint's JSON beside it, as dard's save does: a test that
    edits a checkpoint's weights in place means a checkpoint of those weights, not one cut between its two writes
    (which readers refuse: dard.run_dir.pair)."""
    from dard.io import sha256_file

    edit_json(weights.with_suffix(".json"), lambda d: d.update(weights_sha256=sha256_file(weights)))


def image_folder(root: Path, side: int, mode: str = "L", classes: int = 10) -> Path:
    """An image-folder dataset of ``classes`` classes, three ``side`` x ``side`` images each per split."""
    from PIL import Image

    for split in ("train", "test"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(3):
                Image.new(mode, (side, side), 40 * i if mode == "L" else (40 * i, 0, 0)).save(
                    root / split / f"c{c}" / f"{i}.png"
                )
    return root
