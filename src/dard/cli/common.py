"""What every command module of the CLI shares: the --set option, the --debug help and the one-write stderr line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

__all__ = ["DEBUG_HELP", "add_set_arg", "say_line", "speaks", "stderr_line"]

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


def speaks(error: BaseException | None = None) -> bool:
    """Whether this process says ``error``'s line (``None``: a line every process would say alike) on stderr: under
    torchrun, one rank for a line every rank has (:func:`dard.training.distributed.speaks`; torch is imported by
    then, or the process is not torchrun's)."""
    if "WORLD_SIZE" not in os.environ:
        return True  # not a process of a torchrun job: nothing to import
    try:
        from dard.training.distributed import speaks as rank_speaks
    except Exception:  # a broken install, said by the net: every process says it
        return True
    return rank_speaks(error)


def say_line(line: str, error: BaseException | None = None) -> None:
    """``line`` on stderr where this process speaks (:func:`speaks`), and under torchrun in the error file it reads,
    from every rank: its failure summary, printed after the line, then quotes it for whichever process it names
    first instead of "To enable traceback see ..."."""
    if speaks(error):
        stderr_line(line)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        try:
            with open(error_file, "w", encoding="utf-8") as f:
                json.dump({"message": line, "timestamp": int(time.time())}, f)
        except OSError:  # the summary then says what it would have said anyway
            pass
