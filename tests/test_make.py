"""`make test`'s pytest command (Makefile): plugin autoloading off, so that pytest does not mark every module of
hypothesis for assertion rewriting in the controller and in each worker, and the plugins named with ``-p`` instead.
Every pytest plugin of the test extra must be named there, or `make test` would run without it."""

from __future__ import annotations

import importlib.metadata
import re
import shlex

from tests.conftest import REPO


def _make_test_pytest_words() -> list[str]:
    """The words of the pytest line of the Makefile's ``test`` recipe (continuation lines joined)."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    recipe = text.split("\ntest: ", 1)[1].split("\n\n", 1)[0]
    (line,) = [line for line in recipe.splitlines() if " -m pytest " in line]
    return shlex.split(line)


def test_make_test_names_each_pytest_plugin_of_the_test_extra():
    words = _make_test_pytest_words()
    assert "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1" in words and {"-n", "auto"} <= set(words)
    named = {words[i + 1] for i, word in enumerate(words[:-1]) if word == "-p"}
    extra = [r for r in importlib.metadata.requires("dard") or [] if re.search(r"extra *== *.test.", r)]
    plugins = {
        ep.value.partition(":")[0].strip()
        for requirement in extra
        for ep in importlib.metadata.distribution(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]).entry_points
        if ep.group == "pytest11"
    }
    assert plugins == named and {"xdist.plugin", "_hypothesis_pytestplugin"} <= plugins
