"""Atomic file writes: a kill at any moment leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from dard.errors import DardError, one_line

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path`` then rename it over ``path``.

    The rename is atomic on POSIX file systems, and the temp file lives in the same folder so it is on the
    same file system. The file is fsynced before the rename so a crash cannot expose an empty file. An OS error
    (a full disk, a read-only file system, a parent that is a file) is a one-line DardError naming ``path`` and
    the reason; the temp file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        # after the write: a writer may replace the file, and mkstemp creates it 0600; give the usual permissions
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise
    return path


def write_error(path: str | Path, err: OSError) -> DardError:
    """The one-line error for an OS error while writing ``path``: the path and the OS reason."""
    return DardError(f"cannot write {path}: {err.strerror or one_line(err, 160)}")


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` (serialised in memory first, so that a full disk is an OS error with its reason,
    not a library's wrapped message)."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def check_writable(path: str | Path, *, folder: bool, what: str = "output") -> None:
    """A one-line DardError unless ``path`` can be written, as a folder (created if absent) or as a file, checked
    before any work: the nearest existing ancestor must be a folder in which a file can be created."""
    p = Path(path)
    if p.exists():
        if folder and not p.is_dir():
            raise DardError(f"{what} {p} is a file, not a folder")
        if not folder and p.is_dir():
            raise DardError(f"{what} {p} is a folder, not a file")
    here = p if folder else p.parent
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        raise DardError(f"cannot write {what} {p}: {here} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=here):
            pass
    except OSError as e:
        raise DardError(f"cannot write {what} {p}: {here}: {e.strerror or one_line(e, 160)}") from None


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def sha256_file(path: str | Path) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_yaml_mapping(path: str | Path, what: str = "file") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; a missing file, bad YAML or another top-level type is a
    one-line DardError naming the file (and the line of a YAML error)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise DardError(f"{what} not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise DardError(f"{p}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise DardError(f"cannot read {p}: {e.strerror or one_line(e, 160)}") from None
    except RecursionError:  # deeply nested flow collections
        raise DardError(f"{p}: nested too deeply to read as YAML") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DardError(f"{p}: not valid YAML{f' at line {mark.line + 1}' if mark else ''}") from None
    if not isinstance(data, dict):
        raise DardError(f"{p}: a {what} must hold a mapping of keys to values")
    return data


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Atomically write a safetensors file (tensors are made contiguous and moved to the CPU)."""
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return write_bytes(path, save(flat, metadata=dict(metadata or {})))


def torch_save(path: str | Path, obj: Any) -> Path:
    """Atomically ``torch.save`` an object made only of tensors and plain containers.

    Such files load back with ``torch.load(..., weights_only=True)``, which never unpickles arbitrary code.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
