"""Carrying runs between machines: one deterministic archive of their records (``dard export`` / ``dard import``).

An archive is a ``.tar.gz`` whose first member is ``dard-export.json`` (:class:`Manifest`: each run's files with
their size and SHA-256, and what was left out), followed by ``<run>/<file>`` for each run, in sorted order: its
config, run.json, metrics.jsonl and evaluation records, its checkpoints' metadata, and the weights when allowed
(:class:`ExportOptions`: by default each weights file of at most 8 MiB), the checkpoints kept by ``keep_epochs``
whole or not at all (:mod:`.carried`). A finished run travels without its resume state, an unfinished one only
with it, and neither with a checkpoint of two saves (:func:`.pair.stale_pairs`). No
entry carries a time, owner or permissions, and gzip no name or time, so the same runs give the same bytes.

An archive is hostile input. Import reads it member by member and refuses the whole archive (one DardError line,
nothing written to the runs folder) on anything but regular files, absolute paths, ``..``, links, a file name that
:class:`dard.run_dir.RunDir` does not define, a size or checksum other than the manifest's, sizes over
:data:`MAX_FILE_BYTES` / :data:`MAX_TOTAL_BYTES`, extended headers over :data:`dard.io.MAX_TAR_HEADER_BYTES`, or a
run lacking what its manifest claims (:func:`.carried.check_carried`); :mod:`.merge` reads it back strictly and
places it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from dard.errors import DardError
from dard.io import atomic_write, check_target, open_tar_gz, sha256_file, write_error
from dard.names import PLAIN_NAME, file_target
from dard.run_dir.carried import (
    allowed,
    check_carried,
    kept_to_carry,
    missing_files,
    record_names,
    snapshot_names,
    weight_names,
)
from dard.run_dir.files import parse_json
from dard.run_dir.layout import RunDir, enclosing_run
from dard.run_dir.lock import check_not_held
from dard.run_dir.pair import stale_pairs

MANIFEST = "dard-export.json"
FORMAT = "dard-runs"
VERSION = 1
MAX_FILE_BYTES = 1 << 30  # 1 GiB: a WRN-34-10 checkpoint is 185 MB
MAX_TOTAL_BYTES = 4 << 30
MAX_MEMBERS = 10_000
MAX_MANIFEST_BYTES = 4 << 20
#: what reading a damaged .tar.gz raises: tarfile's, a truncated stream, a bad gzip header or CRC (OSError), zlib's
UNREADABLE = (tarfile.TarError, EOFError, OSError, zlib.error)
RUN_NAME = PLAIN_NAME  # an archive carries run folders by their plain names
WEIGHTS = ("auto", "all", "best", "none")


@dataclass
class FileEntry:
    path: str  # relative to the run folder, POSIX
    bytes: int
    sha256: str


@dataclass
class RunEntry:
    name: str
    finished: bool  # its test evaluation is written
    files: list[FileEntry]
    left_out: list[str] = field(default_factory=list)


@dataclass
class Manifest:
    """``dard-export.json``: what an archive holds."""

    format: str
    version: int
    runs: list[RunEntry]
    dard: str | None = None


@dataclass(frozen=True)
class ExportOptions:
    """Which weights travel: ``auto`` each weights file of at most ``max_weights_mib``, ``all``, ``best`` (only the
    best checkpoint's weights) or ``none``."""

    weights: str = "auto"
    max_weights_mib: float = 8.0


# ------------------------------------------------------------------------------------------------ export


def _selected(run: RunDir, options: ExportOptions) -> tuple[list[str], list[str]]:
    """(files to export, what is left out and why) of one run folder."""
    run.require_run()
    check_not_held(run.path, "export")
    try:  # a link where a run's file or folder belongs would export another file (another run's) as this run's
        run.check_files()
        run.check_config_unchanged()  # an edited config.yaml is not the one the run's records were made with
    except DardError as e:
        raise DardError(f"cannot export {run.path}: {e}") from None
    if options.weights not in WEIGHTS:
        raise DardError(f"--weights must be one of {', '.join(WEIGHTS)}; got {options.weights!r}")
    skip = stale_pairs(run, f"cannot export {run.path}")  # a finished run's refused, an unfinished one's left out
    left_out = [f"{n} (of two saves: a resume writes it again)" for n in skip]
    files = [n for n in record_names(run) if (run.path / n).is_file() and n not in skip]
    best = run.weights("best").relative_to(run.path).as_posix()
    heavy = weight_names(run) if run.is_evaluated() else [best, *snapshot_names(run)]  # the next epoch rewrites last
    heavy = [n for n in heavy if (run.path / n).is_file() and n not in skip]
    kept = kept_to_carry(run)
    left_out += [f"{k.name} ({k.why_not})" for k in kept if k.why_not]
    kept = [k for k in kept if not k.why_not]
    heavy += [k.weights for k in kept]
    limit = options.max_weights_mib * 2**20
    for name in heavy:
        size = (run.path / name).stat().st_size
        if options.weights == "none" or (options.weights == "best" and name != best):
            left_out.append(f"{name} (--weights {options.weights})")
        elif options.weights == "auto" and size > limit and name.endswith((".safetensors", ".pt")):
            left_out.append(f"{name} ({size / 2**20:.1f} MiB > {options.max_weights_mib:g} MiB)")
        else:
            files.append(name)
    files += [k.meta for k in kept if k.weights in files]  # a kept checkpoint travels whole or not at all
    lacking = missing_files(run.is_evaluated(), files)
    if lacking and not run.is_evaluated():  # a snapshot without its weights or optimizer state continues nothing
        why = "; ".join(n for n in left_out if n.startswith(("state-", "resume"))) or "it has no resume snapshot"
        raise DardError(f"{run.path} is not finished and its resume state cannot travel ({why}): nothing to carry")
    if lacking:
        raise DardError(f"{run.path} is finished but lacks {', '.join(lacking)}: an import would refuse it")
    return sorted(files), left_out


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
    return info


def export_runs(run_dirs: Sequence[str | Path], out: str | Path, options: ExportOptions = ExportOptions()) -> Path:
    """Write the records of ``run_dirs`` (finished runs, or unfinished ones with their resume state) to the
    archive ``out``, atomically; returns its path."""
    from dard._version import __version__

    out = file_target(out, "--out", "runs.tar.gz")
    runs = [RunDir(p) for p in run_dirs]
    names = [r.path.name for r in runs]
    check_out(out, names)
    bad = [n for n in names if not RUN_NAME.fullmatch(n)]
    if bad or len(set(names)) != len(names):
        raise DardError(f"run folder names must be distinct and plain ({', '.join(bad) or 'duplicates'})")
    entries, plan = [], []
    for run in runs:
        files, left_out = _selected(run, options)
        rows = [FileEntry(f, (run.path / f).stat().st_size, sha256_file(run.path / f)) for f in files]
        entries.append(RunEntry(run.path.name, run.is_evaluated(), rows, left_out))
        plan += [(run, f) for f in files]
    manifest = Manifest(FORMAT, VERSION, entries, __version__)
    blob = (json.dumps(asdict(manifest), indent=1) + "\n").encode()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_info(MANIFEST, len(blob)), io.BytesIO(blob))
                for run, rel in plan:
                    with open(run.path / rel, "rb") as fh:
                        tar.addfile(_info(f"{run.path.name}/{rel}", (run.path / rel).stat().st_size), fh)

    return atomic_write(out, write)


def archived_runs(path: Path) -> list[str] | None:
    """The run names of the dard export ``path`` (from its manifest), None if it is not one."""
    try:
        with open_tar_gz(path) as tar:
            return [r.name for r in _read_manifest(path, tar).runs]
    except (*UNREADABLE, DardError):
        return None


def check_out(out: Path, names: Sequence[str]) -> None:
    """``dard export --out`` of the runs ``names``: never inside a run folder, nor over another runs' archive."""
    run = RunDir(out) if RunDir(out).is_run() else enclosing_run(out)
    if run is not None:
        raise DardError(f"--out {out} lies inside run folder {run.path}; write the archive outside run folders")
    check_target(out)
    if not out.exists():
        return
    held = archived_runs(out)
    if held is None:
        raise DardError(f"--out {out} exists and is not a dard export archive; refusing to overwrite it")
    if sorted(held) != sorted(names):
        raise DardError(
            f"--out {out} is an export of other runs ({', '.join(sorted(held)[:3]) or 'none'}); refusing to overwrite "
            "it: choose another --out"
        )


# ------------------------------------------------------------------------------------------------ reading


def _member_path(source: Path, name: str) -> tuple[str, str]:
    """(run, relative path) of an archive member name, or a DardError for anything unsafe or unknown."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or "\\" in name or len(p.parts) < 2:
        raise DardError(f"{source}: unsafe member name {name!r} (absolute, '..' or outside a run folder)")
    run, rel = p.parts[0], "/".join(p.parts[1:])
    if not RUN_NAME.fullmatch(run) or not allowed(rel):
        raise DardError(f"{source}: {name!r} is not a file of a dard run folder")
    return run, rel


def _read_manifest(source: Path, tar: tarfile.TarFile) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile() or first.size > MAX_MANIFEST_BYTES:
        raise DardError(f"{source}: not a dard export (its first member must be {MANIFEST})")
    handle = tar.extractfile(first)
    manifest = parse_json(handle.read() if handle else b"", Manifest, f"{source}: {MANIFEST}")
    if manifest.format != FORMAT or manifest.version != VERSION:
        raise DardError(f"{source}: unknown export format {manifest.format!r} version {manifest.version}")
    names = [r.name for r in manifest.runs]
    if len(set(names)) != len(names) or not all(RUN_NAME.fullmatch(n) for n in names):
        raise DardError(f"{source}: {MANIFEST} names runs that are not distinct plain folder names")
    for run in manifest.runs:
        for f in run.files:
            _member_path(source, f"{run.name}/{f.path}")
            if not 0 <= f.bytes <= MAX_FILE_BYTES:  # a negative size let the others past the total's limit
                raise DardError(f"{source}: {MANIFEST} gives {run.name}/{f.path} {f.bytes} bytes")
        paths = [f.path for f in run.files]
        if len(set(paths)) != len(paths):
            raise DardError(f"{source}: {MANIFEST} lists a file of run {run.name} twice")
        check_carried(f"{source}: run {run.name}", run.finished, set(paths))
    return manifest


def extract_archive(source: Path, staging: Path) -> Manifest:
    """Extract the archive ``source`` into the empty folder ``staging`` after every check (module docstring)."""
    expected = {}
    try:
        with open_tar_gz(source) as tar:
            manifest = _read_manifest(source, tar)
            expected = {f"{r.name}/{f.path}": f for r in manifest.runs for f in r.files}
            if sum(f.bytes for f in expected.values()) > MAX_TOTAL_BYTES or len(expected) > MAX_MEMBERS:
                raise DardError(f"{source}: over the import limits ({MAX_TOTAL_BYTES >> 30} GiB, {MAX_MEMBERS} files)")
            while (member := tar.next()) is not None:  # the members after the manifest, once each
                _extract_member(source, tar, member, expected, staging)
    except UNREADABLE as e:
        raise DardError(f"{source}: not a readable .tar.gz ({type(e).__name__}: {e})") from None
    if expected:
        raise DardError(f"{source}: files listed in {MANIFEST} are missing: {', '.join(sorted(expected)[:3])}")
    return manifest


def _extract_member(
    source: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, expected: dict[str, FileEntry], staging: Path
) -> None:
    if not member.isfile():
        raise DardError(f"{source}: {member.name!r} is not a regular file (links, folders and devices are refused)")
    run, rel = _member_path(source, member.name)
    entry = expected.pop(f"{run}/{rel}", None)
    if entry is None or member.size != entry.bytes or member.size > MAX_FILE_BYTES:
        raise DardError(f"{source}: {member.name!r} is not listed in {MANIFEST} with this size (or is repeated)")
    target = staging / run / rel
    h, left = hashlib.sha256(), member.size
    # the writes' OS errors (a full disk) are the target's: taken for the reads', they blamed the archive
    _write_step(target, partial(target.parent.mkdir, parents=True, exist_ok=True))
    dst: BinaryIO = _write_step(target, partial(open, target, "xb"))
    try:
        with tar.extractfile(member) as src:  # type: ignore[union-attr]
            while left > 0:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                _write_step(target, partial(dst.write, chunk))
                left -= len(chunk)
    finally:
        _write_step(target, dst.close)  # a buffered write's full disk may show only here
    if left or h.hexdigest() != entry.sha256:
        raise DardError(f"{source}: {member.name!r} does not match its checksum in {MANIFEST}")


def _write_step(target: Path, step: Callable[[], Any]) -> Any:
    """``step()``, its OS error a one-line DardError naming the staged file ``target`` it writes."""
    try:
        return step()
    except OSError as e:
        raise write_error(target, e) from None
