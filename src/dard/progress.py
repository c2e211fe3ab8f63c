"""Progress bars that behave in a terminal and in a log: the one place dard creates them.

In a terminal a bar redraws in place (tqdm's usual carriage returns). When stderr is not a terminal (redirected to
a file, piped, under a batch scheduler) the same bar prints whole lines instead, at most one every
:data:`LOG_INTERVAL` seconds and none for a loop shorter than that, so a log gets the per-epoch summary lines and
an occasional progress line during long epochs rather than kilobytes of carriage returns.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL", "progress_bar"]

#: seconds between progress lines when the output is not a terminal (and before the first one)
LOG_INTERVAL = 30.0


class _Lines:
    """A file for tqdm that turns its in-place redraws (``\r`` + status + padding) into whole lines, at most one per
    ``interval`` seconds and none before ``interval`` has passed (tqdm redraws at once on ``set_postfix``)."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self.stream = stream
        self.interval = interval
        self.next_time = time.monotonic() + interval

    def write(self, text: str) -> int:
        parts = [p.rstrip() for p in text.replace("\r", "\n").split("\n") if p.strip()]
        now = time.monotonic()
        if parts and now >= self.next_time:
            self.stream.write(parts[-1] + "\n")
            self.next_time = now + self.interval
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str = "",
    total: int | None = None,
    initial: int = 0,
    enabled: bool = True,
    stream: TextIO | None = None,
    log_interval: float = LOG_INTERVAL,
    unit: str = "it",
    unit_scale: bool = False,
    unit_divisor: int = 1000,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one of ``total`` steps), removed when done.

    ``enabled=False`` gives a silent bar (same API). ``stream`` (default: stderr) decides the mode: a terminal
    gets a redrawing bar; anything else gets at most one plain line per ``log_interval`` seconds. ``unit``,
    ``unit_scale`` and ``unit_divisor`` are tqdm's (a download counts bytes).
    """
    stream = sys.stderr if stream is None else stream
    options: dict[str, Any] = {"desc": desc, "total": total, "initial": initial, "disable": not enabled}
    options.update(unit=unit, unit_scale=unit_scale, unit_divisor=unit_divisor)  # bytes: "B", True, 1024
    if _is_terminal(stream):
        return tqdm(iterable, file=stream, leave=False, **options)
    return tqdm(
        iterable,
        file=_Lines(stream, log_interval),
        leave=False,
        ascii=True,
        ncols=100,
        mininterval=log_interval,
        delay=log_interval,
        **options,
    )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return False
