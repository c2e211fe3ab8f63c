"""The net under the command line: an exception nobody anticipated (a bug, not bad input) becomes one line that names
the command and the error type, and the full traceback goes to a log file whose path that line gives. With
``--debug`` (or ``DARD_DEBUG=1``) the traceback is printed instead.

This is a net, not the fix: every input a user can get wrong has its own :class:`dard.errors.DardError` line. One
case is told apart: an exception raised in the user's own code (a ``module:function`` model that fails on a batch
the checks did not probe) is bad input, not a dard bug, and its line names the user's file and line (exit 2).
"""

from __future__ import annotations

import os
import secrets
import sys
import sysconfig
import time
import traceback
from pathlib import Path

from dard.errors import DardError, one_line
from dard.user_code import is_user_entry, is_user_file

DEBUG_ENV = "DARD_DEBUG"
LOG_DIR_ENV = "DARD_LOG_DIR"  # where crash logs go (default: the user's cache folder, dard/logs in it)


def log_dir() -> Path:
    """``$DARD_LOG_DIR``, else ``$XDG_CACHE_HOME/dard/logs``, else ``~/.cache/dard/logs``: the user's own folder,
    not a shared temporary one where another user could plant a link under a predictable name."""
    if os.environ.get(LOG_DIR_ENV):
        return Path(os.environ[LOG_DIR_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "dard" / "logs"


def debug_wanted(flag: bool) -> bool:
    """Whether tracebacks should be printed: ``--debug``, or ``DARD_DEBUG`` set to anything but empty or 0."""
    return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def write_crash_log(exc: BaseException) -> Path | None:
    """Write the command line, the version and ``exc``'s traceback to a new log file; its path (None if it could
    not be written)."""
    from dard._version import __version__

    folder = log_dir()
    # a name nobody can guess, created exclusively and never through a link (O_EXCL | O_NOFOLLOW), readable by the
    # user alone (a traceback may quote paths and values)
    path = folder / f"dard-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(6)}.log"
    header = f"dard {__version__}, python {sys.version.split()[0]}\ncommand: {' '.join(sys.argv)}\n\n"
    text = header + "".join(traceback.format_exception(exc))
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
    except OSError:
        return None
    return path


def crash_line(command: str, exc: BaseException) -> str:
    """The one line for an unexpected exception in ``dard <command>`` (writes the crash log)."""
    log = write_crash_log(exc)
    where = f"traceback in {log}" if log is not None else "no log could be written"
    return (
        f"dard: error: internal error in `dard {command}`: {type(exc).__name__}: {one_line(exc, 200)} "
        f"({where}; --debug prints it; please report it)"
    )


def user_code_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame outside the libraries where ``exc`` arose, when the user's own code (a module dard
    imported for a ``module:function`` name, :mod:`dard.user_code`) ran after dard's: None when dard's code was the
    last to run (a bug of dard's, for the net).

    From the innermost frame outwards, the first frame in either the user's modules or dard's package decides;
    frames of the libraries and of other code (the helpers a user module imports) are passed over, but the
    innermost of those outside the libraries is the one named (where the user's code failed or passed a library
    something it refused, such as ``x.view(5, -1)`` on a larger batch than the checks probed).
    """
    own = os.path.realpath(os.path.dirname(__file__)) + os.sep
    paths = sysconfig.get_paths()
    libraries = tuple({os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "platstdlib", "purelib", "platlib")})
    named = innermost = None
    for live, lineno in reversed(list(traceback.walk_tb(exc.__traceback__))):
        code = live.f_code
        frame = traceback.FrameSummary(code.co_filename, lineno, code.co_name, lookup_line=False)
        innermost = innermost or frame
        if is_user_file(frame.filename):
            return named or frame
        path = os.path.realpath(frame.filename)
        if path.startswith(own):
            # dard's call of a module the user brought (one built of library layers alone, nn.Sequential) with
            # frames inside it: that module failed, named by its innermost frame
            return (named or innermost) if is_user_entry(code) and innermost is not frame else None
        if named is None and not frame.filename.startswith("<") and not path.startswith(libraries):
            named = frame
    return None


def user_code_message(exc: BaseException, frame: traceback.FrameSummary) -> str:
    """What :func:`user_code_line` says after ``dard: error:`` (writes the traceback to a log, as the net does)."""
    log = write_crash_log(exc)
    where = f"traceback in {log}" if log is not None else "no log could be written"
    return (
        f"your code failed at {frame.filename}:{frame.lineno} (in {frame.name}): "
        f"{type(exc).__name__}: {one_line(exc, 200)} ({where}; --debug prints it)"
    )


def user_code_line(exc: BaseException, frame: traceback.FrameSummary) -> str:
    """The one line for an exception raised in the user's own code (writes the traceback to a log, as the net
    does): bad input to dard, so the line says where to look rather than asking for a dard bug report."""
    return f"dard: error: {user_code_message(exc, frame)}"


def as_user_error(exc: Exception) -> DardError | None:
    """``exc`` as the :class:`DardError` the command line would make of it, when the user's own code raised it
    (:func:`user_code_frame`); None when it is dard's (or ``$DARD_DEBUG`` asks for the traceback itself).

    For a worker process (``dard experiment --jobs N``): only the worker's own traceback shows where an exception
    arose, and the parent receives it as text, so the worker decides and sends a DardError, which pickles.
    """
    if isinstance(exc, DardError) or debug_wanted(False):
        return None
    frame = user_code_frame(exc)
    return None if frame is None else DardError(user_code_message(exc, frame))
