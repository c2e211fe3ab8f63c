"""What a name or path a user gives dard may be, checked before any work: a plain name for what becomes a folder,
a printable label for what tables and messages show, a path the file system can take, a file (not a folder) where a
file is written. Each failure is one :class:`dard.errors.DardError` line."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from dard.errors import DardError, shown

#: a name that dard turns into a folder (a run, an experiment's run key, a teacher): one plain path component
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_COMPONENT_BYTES = 255  # the longest file name most file systems take


def check_name(value: object, what: str) -> str:
    """``value`` if it is a plain name (:data:`PLAIN_NAME`: letters, digits, ``.``, ``_``, ``-``, at most 128
    characters, not starting with a dot; so no separator and no ``..``); a one-line DardError otherwise."""
    if not isinstance(value, str) or not PLAIN_NAME.fullmatch(value):
        raise DardError(
            f"{what} {shown(value, 80)} is not a plain name (1-128 letters, digits, '.', '_' or '-', not starting "
            "with '.' or '-'): it names a folder"
        )
    return value


MAX_LABEL = 128  # characters of a run name shown in tables, plots and messages


def check_label(value: object, what: str) -> str:
    """``value`` if it can stand for a run in tables, plots and one-line messages: 1-128 printable characters (any
    script, spaces allowed; no control characters or line breaks, which break a message's one line, a Markdown
    table's row and matplotlib's glyphs); a one-line DardError otherwise."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_LABEL or not value.isprintable():
        raise DardError(
            f"{what} {shown(value, 80)} is not a usable name: 1-{MAX_LABEL} printable characters, no control characters"
        )
    return value


def check_path(path: str | Path, what: str, *, components: bool = True) -> Path:
    """``path`` as a Path if the file system can take it: UTF-8 text and (``components``) no component over 255
    bytes; a one-line DardError otherwise (before any work, not as an OS error after it)."""
    text = os.fspath(path)
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise DardError(f"{what} {shown(text, 80)} is not UTF-8 text; rename it") from None
    if b"\0" in raw:
        raise DardError(f"{what} {shown(text, 80)} holds a NUL character")
    long = [c for c in raw.split(b"/") if len(c) > MAX_COMPONENT_BYTES] if components else []
    if long:
        raise DardError(
            f"{what} {shown(text, 80)}: a name in it is {len(long[0])} bytes long, over the "
            f"{MAX_COMPONENT_BYTES} a file system takes"
        )
    return Path(text)


def file_target(path: str | Path, what: str, example: str) -> Path:
    """``path`` as the name of a file to write, or a one-line DardError when it names a folder: ``newdir/`` (its
    trailing separator is lost once it is a Path, and the file would silently take the folder's name), ``.`` or
    ``..``. ``example`` is a file name to suggest inside that folder."""
    text = os.fspath(path)
    if os.path.basename(text.rstrip(os.sep)) in ("", ".", "..") or text.endswith(("/", os.sep)):
        folder = Path(text or ".")
        raise DardError(f"{what} {text!r} names a folder, not a file; give a file path such as {folder / example}")
    return Path(text)


def check_case_distinct(names: Sequence[str], where: str, others: Sequence[str] = ()) -> None:
    """No two of ``names`` (nor one of them and one of ``others``, the folders already there) differ only in case: on
    a case-insensitive file system (macOS, Windows) they are one folder, where one run would resume, be reused as or
    be merged into the other."""
    seen: dict[str, str] = {}
    for name in [*names, *(o for o in others if o not in names)]:
        first = seen.setdefault(name.casefold(), name)
        if first != name and (name in names or first in names):
            raise DardError(
                f"{where} {first} and {name} differ only in case: one folder on a case-insensitive file system "
                "(macOS, Windows), where one would be taken for the other; rename one"
            )
