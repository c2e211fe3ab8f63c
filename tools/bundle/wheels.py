"""Wheel files for the offline bundle: strip unneeded files from a wheel, or rebuild a wheel from an installed
distribution, and check a wheel's RECORD. Standard library only.

A wheel is a zip whose ``<name>-<version>.dist-info/RECORD`` lists every file with its sha256 (urlsafe base64,
no padding) and size; pip refuses a wheel whose RECORD does not match its contents, so every rewrite recomputes
RECORD from the bytes written.
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import hashlib
import io
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

# Installer bookkeeping that a rebuilt wheel must not carry (pip writes these at install time).
_INSTALL_ONLY = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _dist_info(names: list[str]) -> str:
    found = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    if len(found) != 1:
        raise ValueError(f"expected one .dist-info folder, found {sorted(found) or 'none'}")
    return found.pop()


def write_wheel(path: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (archive name -> bytes, one ``.dist-info`` among them) as a wheel with a fresh RECORD."""
    record_name = _dist_info(list(files)) + "/RECORD"
    rows = [(name, _record_hash(data), str(len(data))) for name, data in files.items() if name != record_name]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([*rows, (record_name, "", "")])
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            if name != record_name:
                zf.writestr(name, data)
        zf.writestr(record_name, buf.getvalue())  # RECORD last, as the spec recommends
    tmp.replace(path)
    return path


def strip_wheel(src: Path, dest: Path, drop: list[str]) -> list[str]:
    """Copy the wheel ``src`` to ``dest`` without the members matching any glob in ``drop``; returns the dropped
    names. ``dest`` may equal ``src``."""
    with zipfile.ZipFile(src) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
    dropped = sorted(n for n in files if any(fnmatch.fnmatch(n, pat) for pat in drop))
    write_wheel(dest, {n: d for n, d in files.items() if n not in dropped})
    return dropped


def verify_wheel(path: Path) -> None:
    """Raise ValueError unless every member of the wheel is listed in RECORD with its true hash and size."""
    with zipfile.ZipFile(path) as zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        record_name = _dist_info(names) + "/RECORD"
        rows = {r[0]: r[1:] for r in csv.reader(io.StringIO(zf.read(record_name).decode())) if r}
        for name in names:
            if name == record_name:
                continue
            data = zf.read(name)
            if rows.get(name) != [_record_hash(data), str(len(data))]:
                raise ValueError(f"{path.name}: RECORD does not match {name}")
        missing = set(rows) - set(names)
        if missing:
            raise ValueError(f"{path.name}: RECORD lists absent files {sorted(missing)}")


def _wheel_tag(dist: metadata.Distribution) -> str:
    wheel = Parser().parsestr(dist.read_text("WHEEL") or "")
    tags = wheel.get_all("Tag") or []
    if not tags:
        raise ValueError(f"{dist.metadata['Name']} has no WHEEL tag (not installed from a wheel?)")
    return tags[0]


def wheel_from_installed(name: str, dest_dir: Path) -> Path:
    """Rebuild the wheel of the installed distribution ``name`` from its RECORD (for bundles built offline).

    Files outside the package folders (console scripts in ``bin/``, which pip regenerates from
    ``entry_points.txt``) and compiled ``__pycache__`` files are left out.
    """
    dist = metadata.distribution(name)
    files: dict[str, bytes] = {}
    for entry in dist.files or []:
        posix = entry.as_posix()
        if posix.startswith("..") or "__pycache__/" in posix:
            continue
        if posix.split("/")[0].endswith(".dist-info") and entry.name in _INSTALL_ONLY:
            continue
        files[posix] = Path(entry.locate()).read_bytes()
    dist_info = _dist_info(list(files))
    files[dist_info + "/RECORD"] = b""
    stem = dist_info[: -len(".dist-info")]  # "<name>-<version>", as pip wrote it
    return write_wheel(dest_dir / f"{stem}-{_wheel_tag(dist)}.whl", files)
