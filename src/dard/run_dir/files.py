"""Strict typed readers for the JSON files of a run folder.

Every reader turns a missing, unreadable, truncated, non-UTF-8 or wrongly typed file into one :class:`DardError`
line that names the file (and the key, for a type error). Types are checked strictly (pydantic's strict JSON mode
over the dataclasses of :mod:`dard.run_dir.records`): ``"attacks": 5``, a JSON list where an object is expected or
``"correct": "3"`` are errors, not silently coerced; an integer is accepted where a float is expected.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from dard.errors import DardError
from dard.io import check_unique_keys, file_kind, loads_json
from dard.reading import read_file_bytes

T = TypeVar("T")


@functools.cache
def _adapter(kind: Any) -> TypeAdapter:
    return TypeAdapter(kind)


def _describe(err: ValidationError) -> str:
    """The first problem of a validation, as ``key.path: message`` (JSON syntax errors as such)."""
    errors = err.errors()
    first = errors[0]
    if first["type"] == "json_invalid":
        return f"not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')})"
    loc = ".".join(str(p) for p in first["loc"]) or "top level"
    value = first.get("input")
    got = f" (got {value!r:.40})" if first["type"] != "missing" and not isinstance(value, (dict, list)) else ""
    more = f"; and {len(errors) - 1} more" if len(errors) > 1 else ""
    return f"{loc}: {first['msg']}{got}{more}"


def parse_json(raw: str | bytes, kind: type[T], where: str) -> T:
    """Validate JSON text into ``kind`` (strict types); a DardError naming ``where`` if it does not fit or gives a
    key twice in one object."""
    check_unique_keys(raw, where)  # pydantic's parser keeps a repeated key's last value in silence
    try:
        key: type = kind  # a class is hashable (mypy does not see it through type[T])
        return _adapter(key).validate_json(raw, strict=True)
    except ValidationError as e:
        raise DardError(f"{where}: {_describe(e)}") from None


def from_plain(data: Any, kind: type[T], where: str) -> T:
    """Validate plain JSON-like Python data (dicts, lists, numbers) into ``kind`` with the same strict rules."""
    return parse_json(json.dumps(data), kind, where)


#: the most a run's JSON file may hold: dard's are kilobytes (an evaluation record of 10,000 images about 20 KB,
#: metrics of 1,000 epochs 300 KB); a larger one is not a record, and parsing it whole held gigabytes
MAX_RECORD_BYTES = 64 << 20


def own_file(path: Path, root: Path, what: str) -> bool:
    """Whether the run's file ``path`` is there (False: absent), to be read only as dard wrote it: a regular file
    reached through real folders of the run ``root``. A link there (to a file elsewhere, to another run's record),
    a FIFO, a device or a folder is a one-line DardError naming it: a report read through it, or took it for absent."""
    here = root
    for part in [*path.relative_to(root).parts[:-1], None]:
        here = here / part if part is not None else path
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            return False
        except OSError as e:
            raise DardError(f"cannot read {path}: {e.strerror or e}") from None
        if part is None and not stat.S_ISREG(mode):
            link = " (a run's files are read only as written, never through a link)" if stat.S_ISLNK(mode) else ""
            raise DardError(
                f"cannot read {path}: it is {file_kind(mode)}, not the {what} file dard wrote{link}; put the file "
                "itself there"
            )
        if part is not None and not stat.S_ISDIR(mode):
            raise DardError(f"cannot read {path}: {here} is {file_kind(mode)}, not a folder of the run {root}")
    return True


def read_bytes(path: Path, what: str) -> bytes:
    """The bytes of ``path`` (a run's JSON file, a checkpoint's metadata): a regular file (a FIFO there blocked the
    reader for good) of at most :data:`MAX_RECORD_BYTES` (:func:`dard.reading.read_file_bytes`)."""
    return read_file_bytes(path, what, MAX_RECORD_BYTES, " dard wrote")


def read_json_file(path: Path, kind: type[T], what: str, required: tuple[str, ...] = ()) -> T:
    """Read the JSON file ``path`` into ``kind``; ``what`` names the file in the error of a missing one.

    ``required`` names keys the file must hold even where ``kind`` has a default (a resume state without its
    step counters must not silently restart at zero).
    """
    raw = read_bytes(path, what)
    value = parse_json(raw, kind, str(path))
    check = getattr(value, "check_values", None)  # ranges the types alone do not say (records.EvalFile)
    if check is not None:
        check(str(path))
    missing = [key for key in required if key not in loads_json(raw)] if required else []
    if missing:
        raise DardError(f"{path}: missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return value


def read_jsonl_file(path: Path, kind: type[T], what: str) -> list[T]:
    """Read a JSON-lines file (one ``kind`` per non-blank line); a bad line is an error naming its number."""
    raw = read_bytes(path, what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DardError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return [
        parse_json(line, kind, f"{path} line {i}") for i, line in enumerate(text.splitlines(), start=1) if line.strip()
    ]
