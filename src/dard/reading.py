"""Reading a file a user or a run names: the one check of what the path is, and the one bounded read.

Every reader of a named file (a run config, an experiment file, a run's JSON records, a checkpoint's metadata,
weights, a report's ``results.json``, the data fingerprints' cache) goes through :func:`check_regular_file` or
:func:`read_file_bytes`: a FIFO (whose read blocks), a device, a socket or a folder is said as what it is, never
"not found", and no file is read past the limit its kind has.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dard.errors import DardError, one_line, shown
from dard.io import file_kind


def _a_file(what: str) -> str:
    """``what`` as a kind of file: "run record" -> "a run record file", "experiment file" -> "an experiment file"."""
    noun = what if what.endswith("file") else f"{what} file"
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _size_text(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n} bytes"


def _absent(path: Path, what: str) -> DardError:
    """The error for a path with nothing there, saying so of a link that leads nowhere."""
    if os.path.islink(path):
        return DardError(
            f"{what} not found: {path} (a symbolic link to {shown(os.readlink(path))}, which is not there)"
        )
    return DardError(f"{what} not found: {path}")


def check_regular_file(path: str | Path, what: str) -> None:
    """A one-line DardError unless ``path`` (through links) is a regular file: absent, a FIFO (whose read blocks),
    a device, a socket or a folder is said as what it is, naming ``what`` the file should be."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise _absent(path, what) from None
    except OSError as e:
        raise DardError(f"cannot read {path}: {e.strerror or one_line(e, 160)}") from None
    if not stat.S_ISREG(mode):
        raise DardError(f"cannot read {path}: it is {file_kind(mode)}, not {_a_file(what)}")


def read_file_bytes(path: str | Path, what: str, limit: int, tail: str = "") -> bytes:
    """The bytes of the file ``path`` (a user's file or a run's): the one reader of a named file, which says what
    the path is where it is no regular file (:func:`check_regular_file`; a FIFO there blocked the reader, and was
    said to be "not found" by the readers that asked ``is_file``), and reads at most ``limit`` bytes (a larger
    file, or one endless like ``/dev/zero``, is one line: ``tail`` ends it). Opened without blocking, so a FIFO put
    there after the check is refused too."""
    path = Path(path)
    check_regular_file(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise DardError(f"cannot read {path}: it is {file_kind(mode)}, not {_a_file(what)}")
            raw = fh.read(limit + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise _absent(path, what) from None
    except OSError as e:
        raise DardError(f"cannot read {path}: {e.strerror or one_line(e, 160)}") from None
    if len(raw) > limit:
        raise DardError(f"{path}: over {_size_text(limit)}, not {_a_file(what)}{tail}")
    return raw
