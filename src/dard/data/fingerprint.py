"""Which copy of a dataset a record was made on: its folder, a fingerprint of its files, and whether they are the
official release.

A development copy (say CIFAR-10 rebuilt from JPEG-compressed images) has the official layout and loads like the
official files, so a record naming only the dataset cannot tell them apart. The fingerprint is the SHA-256 of the
list of ``name sha256`` lines of every file the loader read (in its order); ``official`` compares each file's MD5
with the published one of the official release (CIFAR's python version, the checksums torchvision checks): "yes"
when every file matches, "no" when one differs, "unknown" for data without published checksums.

Hashing CIFAR-10 reads 180 MB, so each file's digests are cached by path, size and modification time in
``<cache>/dard/file-digests.json`` (``$XDG_CACHE_HOME`` or ``~/.cache``); a cache that cannot be read or written
only costs the hashing again.
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


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dard" / "file-digests.json"


def _file_digests(source: DataSource) -> dict[str, tuple[str, str]]:
    """``{name: (sha256, md5)}`` of every file of ``source``, from the cache where size and mtime still match."""
    cache_path = _cache_file()
    try:
        cache = loads_json(cache_path.read_text(encoding="utf-8"))
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    out: dict[str, tuple[str, str]] = {}
    changed = False
    for name in source.files:
        path = (source.folder / name).resolve()
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
        hit = cache.get(key)
        if not (isinstance(hit, list) and len(hit) == 2 and all(isinstance(h, str) for h in hit)):
            hit = list(_hash(path))
            cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}  # the file's stale entries
            cache[key] = hit
            changed = True
        out[name] = (hit[0], hit[1])
    if changed:
        try:
            write_json(cache_path, cache)
        except DardError:
            pass  # a cache that cannot be written only costs the hashing next time
    return out


def _hash(path: Path) -> tuple[str, str]:
    """(SHA-256, MD5) of a file, in one pass."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()
