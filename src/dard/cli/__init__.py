"""Command-line interface: `dard train | eval | report | demo | experiment | export | import | list | config`.

The command layer: one module per command, holding its options (``add_arguments``) and its handler (``run``);
:mod:`dard.cli.app` builds the parser and dispatches. `dard eval`'s request, settings and output rules live here
too (:mod:`.eval_request`, :mod:`.eval_settings`, :mod:`.output`), beside the evaluation they drive
(:mod:`.eval_run`). No module of this package imports from this ``__init__``.
"""

from dard.cli.app import COMMANDS, ERROR_CHARS, build_parser, main

__all__ = ["COMMANDS", "ERROR_CHARS", "build_parser", "main"]
