"""Build hook: the wheel records the git commit it is built from (``dard/_build_commit.txt``), so that an installed
copy, which has no git checkout around it, still names its commit in every run and evaluation record. Everything
else about the package is in pyproject.toml."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _git_module():
    spec = importlib.util.spec_from_file_location("_dard_git", HERE / "src" / "dard" / "_git.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithCommit(build_py):
    """``build_py`` plus the commit file (left out when the source is no git checkout)."""

    def run(self) -> None:
        super().run()
        git = _git_module()
        commit = git.source_commit(HERE)
        if commit:
            (Path(self.build_lib) / "dard" / git.BUILD_COMMIT_FILE).write_text(commit + "\n", encoding="utf-8")


setup(cmdclass={"build_py": BuildPyWithCommit})
