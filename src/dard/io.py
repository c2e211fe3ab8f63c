"""Atomic file writes: a kill at any moment leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path`` then rename it over ``path``.

    The rename is atomic on POSIX file systems, and the temp file lives in the same folder so it is on the
    same file system. The file is fsynced before the rename so a crash cannot expose an empty file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_yaml_mapping(path: str | Path, what: str = "file") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; a missing file, bad YAML or another top-level type is a
    one-line DardError naming the file (and the line of a YAML error)."""
    import yaml

    from dard.errors import DardError

    p = Path(path)
    if not p.is_file():
        raise DardError(f"{what} not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise DardError(f"{p}: not UTF-8 text (byte {e.start})") from None
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
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda p: save_file(flat, str(p), metadata=dict(metadata or {})))


def torch_save(path: str | Path, obj: Any) -> Path:
    """Atomically ``torch.save`` an object made only of tensors and plain containers.

    Such files load back with ``torch.load(..., weights_only=True)``, which never unpickles arbitrary code.
    """
    return atomic_write(path, lambda p: torch.save(obj, p))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
