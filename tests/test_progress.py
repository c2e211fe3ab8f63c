"""Progress output in a log (not a terminal): whole lines, rate-limited, none for a short loop."""

from __future__ import annotations

import io

from dard.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_and_no_carriage_returns() -> None:
    log = io.StringIO()
    bar = progress_bar(total=5, desc="epoch 1/1", stream=log, log_interval=0.0)
    for _ in range(5):
        bar.update(1)
        bar.set_postfix(loss="0.5")  # tqdm redraws at once here; the log still gets whole lines
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines and all(line.startswith("epoch 1/1:") for line in lines)
    assert "5/5" in lines[-1] and "loss=0.5" in lines[-1]


def test_a_short_loop_prints_nothing_to_a_log_and_a_terminal_gets_a_redrawn_bar() -> None:
    log = io.StringIO()
    for _ in progress_bar(range(100), desc="fast", stream=log):  # well under LOG_INTERVAL
        pass
    assert log.getvalue() == ""
    term = _Terminal()
    for _ in progress_bar(range(3), desc="tty", stream=term):
        pass
    assert "\r" in term.getvalue() and "tty" in term.getvalue()
    silent = io.StringIO()
    for _ in progress_bar(range(3), stream=silent, enabled=False):
        pass
    assert silent.getvalue() == ""
