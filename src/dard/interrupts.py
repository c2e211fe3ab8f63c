"""Ctrl-C on the command line: one line, "dard: interrupted", and exit status 130, at any moment.

While the command line starts (imports, PyTorch's among them, then parsing), :func:`exit_on_interrupt`'s handler
says the line and ends the process at once: a KeyboardInterrupt raised inside an import leaves half-initialised
modules behind (numpy then fails with "cannot load module more than once" instead). Once the imports are done,
:func:`raise_on_interrupt` hands Ctrl-C back to Python, and :func:`dard.cli.main` catches the KeyboardInterrupt
so that the command's ``finally`` clauses (locks, temporary files) run. A leaf module: nothing here imports dard.
"""

from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = 130  # the exit status: 128 + SIGINT, what a shell reports for Ctrl-C
LINE = "dard: interrupted"


def _say_and_exit(signum: int, frame: object) -> None:
    os.write(2, (LINE + "\n").encode())
    os._exit(INTERRUPTED)


def exit_on_interrupt() -> None:
    """From now on Ctrl-C ends the process at once, with the line and status 130 (call from the main thread)."""
    signal.signal(signal.SIGINT, _say_and_exit)


def raise_on_interrupt() -> None:
    """Hand Ctrl-C back to Python (KeyboardInterrupt) if :func:`exit_on_interrupt` took it; otherwise, as when
    :func:`dard.cli.main` is called in-process, leave the caller's handler alone."""
    if signal.getsignal(signal.SIGINT) is _say_and_exit:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def leave_interrupted() -> None:
    """End the process with status 130 now, after flushing what was printed. A normal exit could still die of
    SIGINT: an interrupt that landed in code run through PyRun_String (pybind11's exec, in PyTorch's import) marks
    the interpreter, which re-kills itself with SIGINT at exit although the KeyboardInterrupt was handled."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe: nothing more can be said there
            pass
    os._exit(INTERRUPTED)
