"""The `dard` command's entry point (:func:`entry`), also for `python -m dard ...` and `torchrun -m dard ...`."""

from __future__ import annotations

from dard.interrupts import INTERRUPTED, exit_on_interrupt, leave_interrupted


def entry() -> int:
    """Run the command line; its exit status. Ctrl-C at any moment is one line and status 130
    (:mod:`dard.interrupts`)."""
    exit_on_interrupt()  # before the command line's imports, which are most of a start-up
    from dard.cli import main

    status = main()
    if status == INTERRUPTED:
        leave_interrupted()
    return status


if __name__ == "__main__":
    raise SystemExit(entry())
