"""Atomic file writes: a kill at any moment leaves either the old file or the new one, never half of one.

The write rule (one place, :func:`check_target`): dard replaces only regular files; a symbolic link, FIFO, device,
socket or folder where it would write a file is refused in one line, never written through or replaced. Inside a
folder dard owns (a run folder, given as ``root``) it never follows a link either: every folder between ``root`` and
the file must be a real folder, and the file's folder must still lie inside ``root`` once resolved.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from dard.errors import DardError, one_line, shown

_UMASK = os.umask(0)
os.umask(_UMASK)


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is, for a message: "a symbolic link", "a FIFO", ..., "a file"."""
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "a file"


def check_target(path: str | Path, root: str | Path | None = None) -> None:
    """The write rule (module docstring): a one-line DardError unless dard may replace ``path`` (absent, or a
    regular file) and, with ``root``, no folder between ``root`` and ``path`` is a link or anything but a folder."""
    path = Path(path)
    if root is not None:
        root = Path(root)
        try:
            rel = path.relative_to(root)
        except ValueError:
            raise DardError(f"refusing to write {path}: it lies outside {root}") from None
        here = root
        for part in rel.parts[:-1]:
            here = here / part
            try:
                mode = os.lstat(here).st_mode
            except FileNotFoundError:
                break  # created below, as a real folder
            except OSError as e:
                raise write_error(path, e) from None
            if not stat.S_ISDIR(mode):
                raise DardError(
                    f"refusing to write {path}: {here} is {file_kind(mode)}, not a folder (dard never writes "
                    f"through links inside {root}); remove it"
                )
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise write_error(path, e) from None
    if not stat.S_ISREG(mode):
        raise DardError(f"refusing to replace {path}: it is {file_kind(mode)}, not a file dard writes; remove it")


def _check_inside(path: Path, root: Path) -> None:
    """After the folders exist: ``path``'s folder, resolved, still lies inside ``root`` resolved."""
    if not Path(os.path.realpath(path.parent)).is_relative_to(os.path.realpath(root)):
        raise DardError(f"refusing to write {path}: its folder resolves outside {root}")


#: the temp file :func:`atomic_write` makes beside its target: ``.<name>.<8 of mkstemp's characters>.tmp``
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one :func:`atomic_write` gives its temp files (:func:`remove_stray_temps`)."""
    return bool(_TEMP_NAME.fullmatch(name))


def remove_stray_temps(folder: str | Path) -> list[Path]:
    """Remove from ``folder`` (not its subfolders) the temp files of :func:`atomic_write`s that never ended: a
    writer killed by SIGKILL or SIGTERM between creating one and its rename left it there, where ``git add`` of a
    campaign's runs committed it. Call only under the folder's lock, when no write into it can be under way.
    Returns what was removed (links and other non-files are left alone)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # absent, or not a folder: nothing of ours there
        return []
    for entry in entries:
        if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass  # (a read-only folder: the writer will say so)
    return removed


def atomic_write(path: str | Path, write: Callable[[Path], object], *, root: str | Path | None = None) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path`` then rename it over ``path``.

    The rename is atomic on POSIX file systems, and the temp file lives in the same folder so it is on the
    same file system. The file is fsynced before the rename so a crash cannot expose an empty file. An OS error
    (a full disk, a read-only file system, a parent that is a file) is a one-line DardError naming ``path`` and
    the reason; the temp file is removed and ``path`` keeps its old content. The write rule
    (:func:`check_target`) is checked first: ``root`` is the run folder ``path`` lies in, if any.
    """
    path = Path(path)
    check_target(path, root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if root is not None:
            _check_inside(path, Path(root))
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


def set_aside(path: str | Path, root: str | Path | None = None) -> Path | None:
    """Keep a file that no longer describes what is written there under a new name (``best.json`` ->
    ``best.superseded-1.json``, the first number free) instead of overwriting it; returns the new path (None if
    ``path`` is absent). ``root``: as for :func:`check_target`."""
    path = Path(path)
    if not path.exists():
        return None
    k = 1
    while (new := path.with_name(f"{path.stem}.superseded-{k}{path.suffix}")).exists():
        k += 1
    check_target(path, root)
    check_target(new, root)
    try:
        return path.rename(new)
    except OSError as e:
        raise write_error(new, e) from None


def write_error(path: str | Path, err: OSError) -> DardError:
    """The one-line error for an OS error while writing ``path``: the path and the OS reason."""
    return DardError(f"cannot write {path}: {err.strerror or one_line(err, 160)}")


def write_bytes(path: str | Path, data: bytes, *, root: str | Path | None = None) -> Path:
    """Atomically write ``data`` (serialised in memory first, so that a full disk is an OS error with its reason,
    not a library's wrapped message); ``root`` as for :func:`atomic_write`."""
    return atomic_write(path, lambda p: p.write_bytes(data), root=root)


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


def write_text(path: str | Path, text: str, *, root: str | Path | None = None) -> Path:
    """Atomically write a text file."""
    return write_bytes(path, text.encode("utf-8"), root=root)


def write_json(path: str | Path, obj: Any, *, root: str | Path | None = None) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", root=root)


#: digests of the files this process has hashed, by what tells their content apart on disk (device, inode, size,
#: modification and change times, read from the open file before and after): a command read a checkpoint's
#: weights up to five times (the pair's check at each of its readers, a teacher's record), 0.2 s per 45 MB each
_DIGESTS: dict[tuple[int, ...], str] = {}


def sha256_file(path: str | Path, *, fresh: bool = False) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB chunks; a file unchanged since this process hashed
    it is not read again. ``fresh``: read it whatever was hashed before (a writer recording the file it has just
    replaced, whose new inode may be an old one's on a file system of coarse times)."""
    with open(path, "rb") as fh:
        key = _content_key(os.fstat(fh.fileno()))
        if not fresh and key in _DIGESTS:
            return _DIGESTS[key]
        h = hashlib.sha256()
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
        if _content_key(os.fstat(fh.fileno())) == key:  # not changed while read
            if len(_DIGESTS) >= 1024:
                _DIGESTS.clear()
            _DIGESTS[key] = h.hexdigest()
    return h.hexdigest()


def _content_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class DuplicateKeyError(ValueError):
    """A JSON object that gives one key twice (``{"a": 1, "a": 2}``): a file dard did not write so."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's pairs as a dict, refusing a key given twice: ``json.loads`` keeps the last value in silence, and
    pydantic's JSON parser likewise, so an edited record read as something other than either line says."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKeyError(f"key {shown(key)!r} is given twice in one object")
        obj[key] = value
    return obj


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` as dard reads every JSON file: a key given twice in one object is a
    :class:`DuplicateKeyError`, and JSON nested too deeply for Python's parser (``[[[[...``) a ``ValueError`` like
    any other malformed JSON (the parser recurses, so a hostile file gave a RecursionError that callers catching
    ``ValueError`` let through)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def check_unique_keys(raw: str | bytes, where: str) -> None:
    """A one-line DardError naming ``where`` if the JSON ``raw`` gives a key twice in one object; other malformed
    JSON passes (the caller's parser says what is wrong with it, in its words)."""
    try:
        loads_json(raw)
    except DuplicateKeyError as e:
        raise DardError(f"{where}: {e} (which value holds is not for dard to guess)") from None
    except ValueError:
        pass


def read_json(path: str | Path) -> Any:
    """Read a JSON file (malformed JSON, however deep, is a ``ValueError``)."""
    with open(path, encoding="utf-8") as f:
        return loads_json(f.read())


MAX_TAR_HEADER_BYTES = 1 << 20  # a pax or GNU long-name header; dard's exports and CIFAR's hold a name or two


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header whose extended headers (pax, GNU long names) are refused above :data:`MAX_TAR_HEADER_BYTES`
    before they are read: tarfile reads one whole into memory, and parses it slowly, so a 200 KB archive of a
    gzipped gigabyte header held the memory and a core for minutes before any member could be checked."""

    _EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME)

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in (*self._EXTENDED, tarfile.GNUTYPE_LONGLINK) and self.size > MAX_TAR_HEADER_BYTES:
            raise tarfile.HeaderError(f"an extended header of {self.size} bytes (over {MAX_TAR_HEADER_BYTES})")
        return super()._proc_member(tar)  # type: ignore[misc]


def open_tar_gz(path: str | Path) -> tarfile.TarFile:
    """``path`` opened as a .tar.gz for reading, with extended headers bounded (:class:`_BoundedTarInfo`): the one
    way dard opens an archive it did not write (``dard import``, a dataset download)."""
    return tarfile.open(path, "r:gz", tarinfo=_BoundedTarInfo)


def save_tensors(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    root: str | Path | None = None,
) -> Path:
    """Atomically write a safetensors file (tensors are made contiguous and moved to the CPU; a tensor sharing its
    memory with one written before it, as tied weights do, is written as a copy of its own)."""
    from safetensors.torch import save

    flat: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in tensors.items():
        t = v.detach().to("cpu").contiguous()
        # safetensors refuses tensors that share memory (a model whose layers share weights); on a GPU the move to
        # the CPU copies them apart anyway, so a CPU run must too, or its first checkpoint fails after an epoch
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        flat[k] = t
    return write_bytes(path, save(flat, metadata=dict(metadata or {})), root=root)


def torch_save(path: str | Path, obj: Any, *, root: str | Path | None = None) -> Path:
    """Atomically ``torch.save`` an object made only of tensors and plain containers.

    Such files load back with ``torch.load(..., weights_only=True)``, which never unpickles arbitrary code.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue(), root=root)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
