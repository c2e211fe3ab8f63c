"""The git commit of a source tree, with ``+dirty`` when tracked files are modified.

Standard library only and importing nothing of dard: the wheel build (``setup.py``) loads this file by its path
to write the commit into the package (:data:`BUILD_COMMIT_FILE`), where an installed copy without git reads it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

#: the file inside the package where a build records the commit it was built from
BUILD_COMMIT_FILE = "_build_commit.txt"


def source_commit(folder: Path) -> str | None:
    """``HEAD`` of the git checkout holding ``folder`` (``+dirty`` if tracked files changed), None without one."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
