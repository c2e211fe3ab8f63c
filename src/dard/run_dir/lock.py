"""An exclusive lock on a folder (a run folder, or `dard experiment`'s runs and results folders), so that two
processes never write one folder at once.

The lock is ``fcntl.flock`` on a lock file inside the folder, held for as long as the writer runs. The kernel drops
a flock when its process dies, however it dies (SIGKILL included), so a lock left behind by a killed process is
never mistaken for a live one: the file is still there, with its owner's pid, host and start time, but nobody holds
it, and the next writer takes it over and says so. The file records its owner so that a refused writer can say who
holds the folder. Where the file system has no flock, the owner's pid decides (alive on this host: in use).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dard.errors import DardError, one_line
from dard.io import file_kind, loads_json, remove_stray_temps

LOCK_NAME = ".dard.lock"
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_held: dict[str, int] = {}  # lock files this process holds -> nesting depth (the lock is re-entrant per process)


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or held) a lock, as recorded in its file."""

    pid: int | None
    host: str
    since: str
    command: str

    def describe(self) -> str:
        pid = f"pid {self.pid}" if self.pid is not None else "another process"
        return f"{pid} on host {self.host or '?'} since {self.since or '?'}"


def _me() -> LockOwner:
    command = one_line(" ".join(["dard", *sys.argv[1:]]) if sys.argv else "dard", 300)
    return LockOwner(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"), command)


def _read_owner(fd: int) -> LockOwner | None:
    """The owner recorded in an open lock file, None if it records none (empty, or not ours: a pid no process can
    have, which ``os.kill`` refused with an OverflowError, or read as -1, every process, so always alive)."""
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        d = loads_json(raw.decode("utf-8"))
        pid = d.get("pid")
        if pid is not None and not (type(pid) is int and 0 < pid < 2**31):
            return None
        return LockOwner(pid, str(d.get("host", ""))[:100], str(d.get("since", ""))[:40], "")
    except (ValueError, AttributeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def held_elsewhere(folder: str | Path) -> LockOwner | None:
    """Who holds ``folder``'s lock now, if another process does (None: free, absent, or held by this process).
    Read only: the lock file is neither created nor written (a teacher's folder may be read-only), and a shared
    flock taken for an instant and dropped tells a live holder from a file a killed one left."""
    file = Path(folder) / LOCK_NAME
    if _held.get(str(file.resolve())):
        return None
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # absent; a link or what cannot be opened: no writer can hold it (FolderLock refuses those)
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return _read_owner(fd) or LockOwner(None, "", "", "")
        except OSError as e:
            owner = _read_owner(fd) if e.errno in _NO_FLOCK else None  # no flock here: a live owner holds it
            alive = owner is not None and owner.pid and (owner.host != socket.gethostname() or _alive(owner.pid))
            return owner if alive else None
    finally:
        os.close(fd)  # drops the shared flock


def check_not_held(folder: str | Path, doing: str) -> None:
    """A one-line DardError if another process holds ``folder``'s lock (:func:`held_elsewhere`), for a reader that
    takes a run's files as one whole (``doing``: "export", "import"): a training there replaces its checkpoints and
    snapshots while they are read, so the archive's manifest and members, or a copy's pointer and snapshot, disagree."""
    owner = held_elsewhere(folder)
    if owner is not None:
        raise DardError(
            f"cannot {doing} {folder}: it is in use by {owner.describe()} (lock file {Path(folder) / LOCK_NAME}), "
            "and a training there replaces its files as they are read; wait for it to end"
        )


class FolderLock:
    """The exclusive lock of ``folder`` (``what`` names it in messages: "run folder", "runs folder", ...).

    ``acquire(create=True)`` creates the folder if it is absent; ``release()`` removes the lock file and, if
    ``acquire`` created the folder and it is still empty, the folder too: a command that stops before writing
    anything leaves no trace. Use it as a context manager.
    """

    def __init__(self, folder: str | Path, what: str = "run folder", subfolders: tuple[str, ...] = ()) -> None:
        self.folder = Path(folder)
        self.what = what
        self.subfolders = subfolders  # where else its writers write (a run folder's eval/), for remove_stray_temps
        self.file = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created: list[Path] = []
        self._key = ""

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self, create: bool = True) -> None:
        """Take the lock, or raise a one-line DardError naming who holds it. Re-entrant within one process."""
        self._key = str(self.file.resolve())
        if _held.get(self._key):
            _held[self._key] += 1
            return
        if not self.folder.is_dir():
            if not create:
                raise DardError(f"{self.what} {self.folder} not found")
            self._make_folder()
        for _ in range(10):  # retried only when the file was replaced between open and lock (a release racing us)
            fd = self._open()
            if self._lock(fd) and self._same_file(fd):
                break
            os.close(fd)
        else:
            raise DardError(f"cannot lock {self.what} {self.folder}: its lock file keeps changing")
        stale = _read_owner(fd)
        if stale is not None:  # a lock file with an owner that no longer holds it: left by a killed process
            text = f"dard: taking over the lock of {self.what} {self.folder}, left by {stale.describe()}"
            sys.stderr.write(one_line(text, 600) + " (that process has ended)\n")
        me = _me()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me.__dict__) + "\n").encode(), 0)
        self._fd = fd
        _held[self._key] = 1
        for where in (self.folder, *(self.folder / name for name in self.subfolders)):
            remove_stray_temps(where)  # every writer holds this lock: a temp file there now is a killed writer's

    def release(self) -> None:
        """Give the lock back (a no-op when not held); the lock file goes, and a folder ``acquire`` created and
        nothing else filled goes too."""
        if not _held.get(self._key) or self._fd is None:
            if _held.get(self._key):
                _held[self._key] -= 1
            return
        _held[self._key] -= 1
        if _held[self._key]:
            return
        del _held[self._key]
        # Unlink before unlocking: a process that opened the old file meanwhile sees it replaced and retries.
        self.file.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        for folder in reversed(self._created):
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break
        self._created = []

    # ------------------------------------------------------------------------------------------- internals

    def _make_folder(self) -> None:
        missing = [self.folder, *(p for p in self.folder.parents if not p.exists())]
        try:
            self.folder.mkdir(parents=True)
        except OSError as e:
            raise DardError(f"cannot create {self.what} {self.folder}: {e.strerror or e}") from None
        self._created = list(reversed(missing))  # outermost first; removed innermost first

    def _open(self) -> int:
        """The lock file, opened without following a link or blocking on a FIFO; anything but a regular file of
        its own (a link, FIFO, device, a hard link to another file) is refused: dard truncates the file it opens."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.file, flags, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise DardError(
                    f"cannot lock {self.what} {self.folder}: its lock file {self.file} is a symbolic link, not dard's; "
                    "remove it"
                ) from None
            raise DardError(f"cannot lock {self.what} {self.folder}: {e.strerror or e}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            os.close(fd)
            kind = file_kind(st.st_mode) if not stat.S_ISREG(st.st_mode) else "a hard link to another file"
            raise DardError(f"cannot lock {self.what} {self.folder}: its lock file {self.file} is {kind}; remove it")
        return fd

    def _lock(self, fd: int) -> bool:
        """Whether the lock was taken; a DardError naming the owner when another process holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            owner = _read_owner(fd)
        except OSError as e:
            if e.errno not in _NO_FLOCK:
                os.close(fd)
                raise DardError(f"cannot lock {self.what} {self.folder}: {e.strerror or e}") from None
            owner = _read_owner(fd)  # no flock here: a live owner on this host holds it, a dead one does not
            if owner is None or (owner.host == socket.gethostname() and owner.pid and not _alive(owner.pid)):
                return True
        os.close(fd)
        who = owner.describe() if owner else "another process"
        raise DardError(f"{self.what} {self.folder} is in use by {who} (lock file {self.file}); wait for it to end")

    def _same_file(self, fd: int) -> bool:
        try:
            return os.lstat(self.file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False
