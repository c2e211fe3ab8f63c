"""The library surface: `dard`'s top-level entry points, and the README's library example, run as written."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
import torch
from tests.conftest import REPO

import dard


def readme_example() -> str:
    """The python block of README.md's "Python quick start" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section holds exactly one python example"
    return blocks[0]


def test_readme_library_example_runs_and_trains_the_student(capsys):
    ns: dict = {}
    exec(compile(readme_example(), "README.md (Python quick start)", "exec"), ns)
    x, y, x_adv, out = ns["x"], ns["y"], ns["x_adv"], ns["out"]
    assert x_adv.shape == x.shape and 0.0 <= x_adv.min() and x_adv.max() <= 1.0
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert (x_adv != x).any()  # the attack moved the images
    # the plain nn.Sequential came back wrapped with its normalisation, its state-dict keys its own
    from dard.models import PlainClassifier

    assert isinstance(ns["model"], PlainClassifier) and list(ns["model"].state_dict())[0] == "1.weight"
    assert (ns["x_to_3"] - x).abs().max() <= 8 / 255 + 1e-6 and (ns["x_to_3"] != x).any()
    assert torch.isfinite(out.loss) and out.logits.shape == (len(y), 10)
    # the optimizer step used the DARD gradient; the frozen teacher received none
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ns["student"].parameters())
    assert all(p.grad is None for p in ns["teacher"].parameters())
    assert "DARD loss" in capsys.readouterr().out


def test_top_level_entry_points_are_the_package_functions():
    from dard.attacks import create_attack, register_attack
    from dard.checkpoint import load_checkpoint
    from dard.methods import create_method, register_method
    from dard.models import create_model, register_model

    assert dard.create_attack is create_attack and dard.create_method is create_method
    assert dard.create_model is create_model and dard.load_checkpoint is load_checkpoint
    assert dard.register_attack is register_attack and dard.register_method is register_method
    assert dard.register_model is register_model
    assert dard.attacks.DPGD.name == "dpgd"
    assert set(dard.__all__) <= set(dir(dard))
    assert dard.__version__.split(".")[0].isdigit()


def test_import_dard_and_the_parser_do_not_import_torch():
    # the entry points load lazily: a bare `import dard` (what every `dard` command starts with) stays cheap, and
    # so does the parser (every command's options, the suite's labels in `dard eval --help`): `dard --help` and a
    # usage error answer in a fraction of a second, without PyTorch's ~4 s of CPU
    code = (
        "import sys, dard; print(dard.__version__, 'torch' in sys.modules); from dard.cli import main\n"
        "try: main(['eval', '--bogus'])\nexcept SystemExit as e: print(e.code, 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == [dard.__version__, "False", "2", "False"], proc.stderr
    assert proc.stderr.startswith("dard: error: unrecognized arguments: --bogus"), proc.stderr


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        dard.no_such_thing  # noqa: B018


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text (lower case, punctuation dropped, spaces to hyphens)."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_in_readme_and_docs_resolve():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            if re.match(r"[a-z]+:", target):
                continue  # an absolute URL
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text(encoding="utf-8")):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def _code_spans(markdown: str) -> list[str]:
    """The fenced blocks (a trailing-backslash line joined to the next) and the inline code spans of a page."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", markdown, flags=re.S)
    prose = re.sub(r"```.*?```", "", markdown, flags=re.S)
    return [block.replace("\\\n", " ") for block in blocks] + re.findall(r"`([^`]+)`", prose)


def test_every_flag_of_a_dard_command_in_readme_and_docs_is_an_option_of_that_command():
    """A command copied from README.md or docs/*.md names no flag its subcommand lacks (one renamed or removed)."""
    from dard.cli.app import build_parser

    (subparsers,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {name: {s for a in sub._actions for s in a.option_strings} for name, sub in subparsers.choices.items()}
    command = re.compile(r"\bdard (" + "|".join(options) + r")\b([^#;&|'\"\n]*)")
    unknown = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for span in _code_spans(page.read_text(encoding="utf-8")):
            for name, rest in command.findall(span):
                flags = re.findall(r"--[a-z][\w-]*", rest)
                unknown += [f"{page.name}: dard {name} {flag}" for flag in flags if flag not in options[name]]
    assert not unknown, unknown
