"""Fetch an archive over HTTP(S) with an MD5 check, and extract one folder of it without letting a path escape.

Used by the datasets that can download themselves (:mod:`dard.data.cifar`). Every failure is one
:class:`DardError` line, and no partial file or staging folder is left behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from dard.errors import DardError, one_line
from dard.io import open_tar_gz

#: the environment variable naming the data folder used when none is given
DEFAULT_DATA_DIR_ENV = "DARD_DATA_DIR"


def default_data_dir() -> Path:
    """The data folder used when none is given: ``$DARD_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get(DEFAULT_DATA_DIR_ENV) or "data")


DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation, not for the whole file (CIFAR-100 is 161 MB)
_CHUNK = 1 << 20  # bytes read per iteration: one progress update per MiB


def download_archive(url: str, md5: str, dest_dir: Path, title: str) -> Path:
    """Download ``url`` to a temporary file in ``dest_dir`` and check its MD5; returns the file's path.

    On any failure the partial file is removed and a one-line DardError is raised.
    """
    from dard.progress import progress_bar

    dest_dir.mkdir(parents=True, exist_ok=True)
    archive_name = PurePosixPath(urllib.parse.urlparse(url).path).name or "download"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{archive_name}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                    headers = getattr(resp, "headers", None)
                    ctype = (headers.get("Content-Type") or "") if headers is not None else ""
                    length = headers.get("Content-Length") if headers is not None else None
                    total = int(length) if length and str(length).isdigit() else None
                    if "text/html" in ctype.lower():
                        raise DardError(
                            f"downloading {title} from {url} returned an HTML page instead of the archive "
                            f"(a proxy or login page?); download it by hand and extract it into {dest_dir}"
                        )
                    with progress_bar(
                        total=total, desc=f"downloading {archive_name}", unit="B", unit_scale=True, unit_divisor=1024
                    ) as bar:
                        while True:
                            chunk = resp.read(_CHUNK)
                            if not chunk:
                                break
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except DardError:
                raise
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DardError(
                    f"could not download {title} from {url}: {one_line(reason)}; download it by hand "
                    f"and extract it into {dest_dir}"
                ) from None
        with open(tmp, "rb") as fh:
            head = fh.read(512)
        if not head.startswith(b"\x1f\x8b"):
            looks_html = head.lstrip().startswith(b"<")
            what = "an HTML page" if looks_html else "a file that is not a gzip archive"
            raise DardError(
                f"downloading {title} from {url} gave {what}; download it by hand and extract it into {dest_dir}"
            )
        got = digest.hexdigest()
        if got != md5.lower():
            raise DardError(
                f"MD5 mismatch for {title} downloaded from {url}: expected {md5}, got {got}; the partial file "
                f"was removed, try again"
            )
        return tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_member(member: tarfile.TarInfo, root: Path) -> None:
    """Refuse a tar member that is a link or special file, or whose path would land outside ``root``."""
    name = member.name
    parts = PurePosixPath(name).parts
    if not (member.isfile() or member.isdir()):
        raise DardError(f"refusing to extract '{name}': archive holds a link or special file")
    if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise DardError(f"refusing to extract '{name}': path escapes the target folder")
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise DardError(f"refusing to extract '{name}': path escapes the target folder")


def extract_folder(archive: Path, dest_dir: Path, folder: str, title: str) -> None:
    """Extract ``archive`` into a staging folder in ``dest_dir`` and move ``folder`` from it into place."""
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir)).resolve()
    try:
        try:
            with open_tar_gz(archive) as tar:  # extended headers bounded before they are read
                members = tar.getmembers()
                for member in members:
                    check_member(member, staging)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters; members were checked above
                    tar.extractall(staging, members=members)
        except DardError:
            raise
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DardError(f"cannot extract the {title} archive: {one_line(exc)}") from None
        src = staging / folder
        if not src.is_dir():
            raise DardError(f"the downloaded {title} archive has no '{folder}/' folder")
        os.replace(src, dest_dir / folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
