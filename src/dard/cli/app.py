"""The `dard` parser and dispatch: one subcommand per module of :mod:`dard.cli`, each with its options and handler.

Errors caused by input (DardError) print one line and exit with status 2; no traceback. Anything else is a bug:
one line naming the command and the error type, exit status 1, the traceback in a log file (:mod:`dard.crash`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import NoReturn

import dard.cli.config as config_command
import dard.cli.demo as demo_command
import dard.cli.eval as eval_command
import dard.cli.experiment as experiment_command
import dard.cli.export as export_command
import dard.cli.import_ as import_command
import dard.cli.list as list_command
import dard.cli.report as report_command
import dard.cli.train as train_command
from dard.cli.checks import check_args, check_launch
from dard.cli.common import DEBUG_HELP, say_line, speaks, stderr_line
from dard.crash import crash_line, debug_wanted, user_code_frame, user_code_line
from dard.errors import DardError, one_line
from dard.interrupts import INTERRUPTED, LINE, raise_on_interrupt
from dard.user_code import warnings_held

__all__ = ["COMMANDS", "ERROR_CHARS", "build_parser", "main"]

#: the longest error line printed (each echoed value is capped at dard.errors.SHOWN_CHARS already)
ERROR_CHARS = 1000

# each command's module (HELP, add_arguments, run), in the order `dard --help` lists them; imported by their full
# names, not `from dard.cli import ...`, which would read this package's __init__ while it imports this module
_MODULES: dict[str, ModuleType] = {
    "train": train_command,
    "eval": eval_command,
    "report": report_command,
    "demo": demo_command,
    "experiment": experiment_command,
    "export": export_command,
    "import": import_command,
    "list": list_command,
    "config": config_command,
}
#: command name -> handler; main() dispatches through this dict (tests replace an entry)
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {name: m.run for name, m in _MODULES.items()}


class _Parser(argparse.ArgumentParser):
    """argparse with dard's manner for bad input: a usage error (an unknown flag, a value of the wrong type, a missing
    argument) is one line ``dard: error: ...`` naming the command's help, exit status 2, not the usage block and a
    ``dard eval: error:`` line after it. Subcommand parsers are of this class too (argparse makes them so)."""

    def error(self, message: str, prog: str | None = None) -> NoReturn:
        """Exit 2 with ``message`` on one line, naming ``prog``'s help (default: this parser's)."""
        text = one_line(message, ERROR_CHARS - 100)
        say_line(f"dard: error: {text} (`{prog or self.prog} --help` lists the options)", None)
        self.exit(2)


def build_parser() -> _Parser:
    """The argument parser for every subcommand."""
    from dard._version import __version__

    parser = _Parser(prog="dard", description="Adversarially robust knowledge distillation (DARD).")
    parser.add_argument("--version", action="version", version=f"dard {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in _MODULES.items():
        command = sub.add_parser(name, help=module.HELP)
        module.add_arguments(command)
        # `dard train --debug ...` works as well as `dard --debug train ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (130 for Ctrl-C, :mod:`dard.interrupts`)."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()  # imports torch (the suite's labels): Ctrl-C may come here
        args, unknown = parser.parse_known_args(words)
        if unknown:  # said by the command's parser, whose help lists what it takes (not the top level's)
            parser.error(f"unrecognized arguments: {' '.join(unknown)}", f"dard {args.command}")
    except KeyboardInterrupt:
        say_line(LINE, None)
        return INTERRUPTED
    except Exception as e:  # a broken install (an import failing): the net, as for a command
        if debug_wanted("--debug" in words):
            raise
        if speaks(None):
            stderr_line(crash_line(next((w for w in words if not w.startswith("-")), ""), e))
        return 1
    raise_on_interrupt()  # the imports are done: Ctrl-C is a KeyboardInterrupt again, caught below
    debug = debug_wanted(args.debug)
    try:
        check_args(args)
        check_launch(args.command)
        with warnings_held():  # a user's model's warnings: shown once it loads, never before an error line
            return COMMANDS[args.command](args)
    except DardError as e:  # bad input: one line and exit 2, with --debug too (it only unmasks unexpected errors)
        say_line(f"dard: error: {one_line(e, ERROR_CHARS)}", e)
        return 2
    except KeyboardInterrupt:
        say_line(LINE, None)  # under torchrun, Ctrl-C reaches every rank
        return INTERRUPTED
    except Exception as e:  # the net: a bug, not the input (each input error has its own DardError line)
        if debug:
            raise
        if not speaks(e):
            return 1
        frame = user_code_frame(e)  # unless the user's own code raised it: bad input after all
        say_line(user_code_line(e, frame) if frame is not None else crash_line(args.command, e), e)
        return 2 if frame is not None else 1
