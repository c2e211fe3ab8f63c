"""What every command module of the CLI shares: the --set option, the --debug help and the one-write stderr line."""

from __future__ import annotations

import argparse
import sys

__all__ = ["DEBUG_HELP", "add_set_arg", "stderr_line"]

DEBUG_HELP = "print the traceback of an unexpected error instead of writing it to a log (or set DARD_DEBUG=1)"


def add_set_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    """The repeatable ``--set KEY=VALUE`` config override (``args.overrides``)."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def stderr_line(text: str) -> None:
    """Write ``text`` and its newline to stderr in one write."""
    # One write with the newline included: under torchrun every rank shares the same stderr pipe, and print()'s
    # separate write of "\n" let two ranks' messages run together on one line.
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
