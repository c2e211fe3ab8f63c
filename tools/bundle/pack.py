"""Pack a step's output folder into the few, bounded files a GPU job may return. Standard library only.

A job system may return at most ``max_files`` files of at most ``max_file`` bytes each (``max_total`` together)
from a job's output folder (:class:`Limits`; None: no limit). A step's folder becomes one ``<stem>.tar.gz``; a
larger archive is split into ``<stem>.tar.gz.000``, ``.001``, ... (``cat`` them back together); when even that does
not fit the space left, the largest files are left out one by one (listed in ``DROPPED.txt`` inside the archive and
in the result).
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MIB = 2**20


@dataclass(frozen=True)
class Limits:
    """What may come back from the output folder (None: no limit; the job system's limits are job.py's options)."""

    max_files: int | None = None
    max_file: int | None = None
    max_total: int | None = None


@dataclass
class Packed:
    """The files one step left in the output folder and what had to be left out."""

    files: list[str] = field(default_factory=list)
    bytes: int = 0
    dropped: list[str] = field(default_factory=list)


def _tar(src: Path, dest: Path, skip: set[str]) -> None:
    with tarfile.open(dest, "w:gz", compresslevel=6) as tar:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src).as_posix()
            if path.is_file() and not path.is_symlink() and rel not in skip:
                tar.add(path, arcname=f"{src.name}/{rel}", recursive=False)
        if skip:
            note = src / "DROPPED.txt"
            note.write_text("left out to fit the output limits:\n" + "".join(f"{s}\n" for s in sorted(skip)))
            tar.add(note, arcname=f"{src.name}/DROPPED.txt")


def _split(archive: Path, out_dir: Path, name: str, part: int) -> list[Path]:
    size = archive.stat().st_size
    if size <= part:
        target = out_dir / name
        shutil.move(str(archive), target)
        return [target]
    parts = []
    with open(archive, "rb") as src:
        for k in range((size + part - 1) // part):
            target = out_dir / f"{name}.{k:03d}"
            with open(target, "wb") as dst:
                dst.write(src.read(part))
            parts.append(target)
    archive.unlink()
    return parts


def pack_folder(src: Path, out_dir: Path, stem: str, *, slots: float, space: float, part: float) -> Packed:
    """Archive ``src`` into ``out_dir`` using at most ``slots`` files of ``part`` bytes and ``space`` bytes in all
    (``math.inf``: no limit), then delete ``src`` (whatever did not fit is gone: the output folder must stay within
    its limits). An absent or empty folder gives nothing."""
    files = sorted((p for p in src.rglob("*") if p.is_file() and not p.is_symlink()), key=lambda p: -p.stat().st_size)
    if not files:
        shutil.rmtree(src, ignore_errors=True)
        return Packed()
    capacity = min(slots * part, space) if slots > 0 else 0  # 0 * inf (no size limit) would be nan
    skip: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="dard-pack-") as tmp:
        archive = Path(tmp) / "step.tar.gz"
        while True:
            _tar(src, archive, skip)
            if archive.stat().st_size <= capacity or len(skip) == len(files):
                break
            skip.add(files[len(skip)].relative_to(src).as_posix())  # the largest file still in
        if archive.stat().st_size > capacity:  # not even the list of dropped files fits: nothing comes back
            shutil.rmtree(src, ignore_errors=True)
            return Packed(dropped=sorted(skip))
        written = _split(archive, out_dir, f"{stem}.tar.gz", part)
    shutil.rmtree(src, ignore_errors=True)
    return Packed([p.name for p in written], sum(p.stat().st_size for p in written), sorted(skip))
