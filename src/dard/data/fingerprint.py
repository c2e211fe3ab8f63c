"""Which copy of a dataset a record was made on: its folder, a fingerprint of its files, and whether they are the
official release.

A development copy (say CIFAR-10 rebuilt from JPEG-compressed images) has the official layout and loads like the
official files, so a record naming only the dataset cannot tell them apart. The fingerprint is the SHA-256 of the
list of ``name sha256`` lines of every file the loader read (in its order); ``official`` compares each file's MD5
with the published one of the official release (CIFAR's python version, the checksums torchvision checks): "yes"
when every file matches, "no" when one differs, "unknown" for data without published checksums.

Hashing CIFAR-10 reads 180 MB, so each file's digests are cached by path, size and modification time in
``<cache>/dard/file-digests/<folder hash>.json`` (``$XDG_CACHE_HOME`` or ``~/.cache``), one file per dataset folder
holding its files as they are now, for the :data:`MAX_CACHED_FOLDERS` folders read last; a cache that cannot be
read or written only costs the hashing again. The one file of older versions (:data:`LEGACY_CACHE`) goes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dard.data.base import DatasetBundle, DataSource
from dard.errors import DardError
from dard.io import loads_json, write_json
from dard.reading import read_file_bytes

__all__ = ["DataProvenance", "data_provenance"]


@dataclass(frozen=True)
class DataProvenance:
    """Where a record's images came from (the ``data`` block of an evaluation record adds these keys)."""

    folder: str | None  # the dataset folder (None: data shipped inside the package)
    fingerprint: str | None  # SHA-256 over the files' SHA-256 (None without files)
    official: str  # "yes" | "no" | "unknown"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_provenance(bundle: DatasetBundle) -> DataProvenance:
    """The provenance of ``bundle``'s files (hashing them, or reading their cached digests)."""
    source = bundle.source
    if source is None:
        return DataProvenance(folder=None, fingerprint=None, official="unknown")
    digests = _file_digests(source)
    lines = "".join(f"{name} {sha}\n" for name, (sha, _) in digests.items())
    return DataProvenance(
        folder=str(source.folder.resolve()),
        fingerprint=hashlib.sha256(lines.encode("utf-8")).hexdigest(),
        official=_official(source, digests),
    )


def _official(source: DataSource, digests: dict[str, tuple[str, str]]) -> str:
    if not source.official_md5:
        return "unknown"
    same = all(digests.get(name, ("", ""))[1] == md5 for name, md5 in source.official_md5.items())
    return "yes" if same else "no"


#: the dataset folders whose digests are kept (those read last), one cache file each
MAX_CACHED_FOLDERS = 64
#: the most a cache file may hold per file of its folder (a path of up to 4096 bytes, its size, time and digests):
#: a larger cache file is none dard wrote, hashed again and written anew, not read whole
MAX_ENTRY_BYTES = 4608


#: the cache of older versions, beside ``file-digests/``: removed when this one is written
LEGACY_CACHE = "file-digests.json"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dard" / "file-digests"


def _cache_file(folder: Path) -> Path:
    """The cache of the files of the dataset folder ``folder`` (resolved): one file per folder."""
    return _cache_dir() / f"{hashlib.sha256(os.fsencode(folder)).hexdigest()[:32]}.json"


def _file_digests(source: DataSource) -> dict[str, tuple[str, str]]:
    """``{name: (sha256, md5)}`` of every file of ``source``, from the cache where size and mtime still match.

    The cache holds the source's files alone, as they are now (an edited or removed file's entry goes), and only the
    :data:`MAX_CACHED_FOLDERS` folders read last keep theirs: one file held every entry ever made (each dataset
    copy, each edit), read and written whole by every run."""
    cache_path = _cache_file(source.folder.resolve())
    try:  # absent, a FIFO, over the bound, not JSON: hashed again and written anew
        raw = read_file_bytes(cache_path, "file digests cache", MAX_ENTRY_BYTES * (len(source.files) + 1))
        cache = loads_json(raw)
        cache = cache if isinstance(cache, dict) else {}
    except (DardError, ValueError):
        cache = {}
    out: dict[str, tuple[str, str]] = {}
    kept: dict[str, list[str]] = {}
    for name in source.files:
        path = (source.folder / name).resolve()
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
        hit = cache.get(key)
        if not (isinstance(hit, list) and len(hit) == 2 and all(isinstance(h, str) for h in hit)):
            hit = list(_hash(path))
        kept[key] = hit
        out[name] = (hit[0], hit[1])
    if kept != cache:
        try:
            write_json(cache_path, kept)
            _drop_oldest(cache_path)
            # the one file of every digest ever made (dard before the per-folder cache): never read since, unbounded
            (_cache_dir().parent / LEGACY_CACHE).unlink(missing_ok=True)
        except (DardError, OSError):
            pass  # a cache that cannot be written only costs the hashing next time
    return out


def _drop_oldest(written: Path) -> None:
    """Remove the cache files of all but the :data:`MAX_CACHED_FOLDERS` folders read last (``written`` is kept)."""
    files = [p for p in written.parent.glob("*.json") if len(p.stem) == 32 and p != written]
    files.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in files[MAX_CACHED_FOLDERS - 1 :]:
        old.unlink(missing_ok=True)


def _hash(path: Path) -> tuple[str, str]:
    """(SHA-256, MD5) of a file, in one pass."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()
