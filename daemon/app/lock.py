"""The state lock: one writing mediasortd per catalog. Owns the lock file ({state_dir}/lock,
"PID COMMAND"): taking it (StateLock), checking that it and the catalog file are still
ours (each batch; CatalogGuard), asking who holds it without taking anything (`holder`).
Crash invariant: the kernel drops the locks with the process; a killed writer blocks none.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import LockedError
from ..files.dirs import make_dirs, own_like_parent
from ..store import db

LOCK_FILE = "lock"
_FLOCK = "hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len, l_pid (Linux)
WRITING_COMMANDS = ("run", "import", "undo")  # what an older mediasortd's flock names
COMMANDS = (*WRITING_COMMANDS, "adopt", "verify")  # every command that takes the lock


class StateLock:
    """One writing mediasortd per catalog. Two locks: an exclusive flock on the state
    directory itself (it holds the catalog, so it cannot be removed, and removing any file
    in it lets no second writer in), and an OFD write lock on {state_dir}/lock, which
    holds "PID COMMAND" for `status` (`holder` asks with F_OFD_GETLK). `check()`
    (each batch) makes the lock file again if someone removed it, and says when the state
    directory itself was replaced."""

    def __init__(self, cfg: Config, command: str | None = None) -> None:
        self.dir = cfg.state_dir
        self.path = cfg.state_dir / LOCK_FILE
        self.command = command or next((a for a in sys.argv[1:] if a in COMMANDS), "?")
        try:
            make_dirs(os.fsencode(cfg.state_dir), 0o750)  # durable: its parent is fsynced
            self.dirfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:  # read-only or full: said with the path, exit 73 / 75
            raise db.os_error(e, self.dir, "cannot take the state lock") from None
        try:
            fcntl.flock(self.dirfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.dirfd)
            raise LockedError(
                f"{self.dir}: another mediasortd ({self._holder()}) is using "
                "this catalog; stop it first, or drop the files into its "
                "inbox"
            ) from None
        st = os.fstat(self.dirfd)
        self.dir_id = (st.st_dev, st.st_ino)
        self.fd = -1
        try:
            self._take_file()
        except BaseException:
            os.close(self.dirfd)
            raise

    def _holder(self) -> str:
        try:
            text = self.path.read_text(errors="replace").split()
        except OSError:
            text = []
        return f"pid {text[0]}, {text[1] if len(text) > 1 else '?'}" if text else "pid ?"

    def _take_file(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:  # read-only or full: said with the path, exit 73 / 75
            raise db.os_error(e, self.path, "cannot take the state lock") from None
        try:
            own_like_parent(fd, os.fsencode(self.dir))  # root's import: still the service's
            fcntl.fcntl(
                fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
            )
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what older versions look for
        except OSError:
            os.close(fd)
            raise LockedError(
                f"{self.path}: another mediasortd ({self._holder()}) is using "
                "this catalog; stop it first"
            ) from None
        try:  # who holds it, for `status` (on a full disk: untold)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {self.command}\n".encode(), 0)
        except OSError:
            pass
        self.fd = fd

    def check(self) -> str | None:
        """Still ours? Makes the lock file again if it was removed or replaced (returns
        what was done); raises LockedError when the state directory was replaced."""
        try:
            st = os.stat(self.dir)
        except OSError as e:
            raise LockedError(
                f"{self.dir}: the state directory is gone ({e.strerror}); "
                "stopping: the catalog in use is no longer there"
            ) from None
        if (st.st_dev, st.st_ino) != self.dir_id:
            raise LockedError(
                f"{self.dir}: the state directory was replaced under the "
                "running mediasortd; stopping"
            ) from None
        mine = os.fstat(self.fd)
        try:
            now = os.stat(self.path)
            if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                return None
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self._take_file()
        return f"{self.path} was removed or replaced; made it again"

    def release(self) -> None:
        os.close(self.fd)
        os.close(self.dirfd)


class CatalogGuard:
    """Notices the catalog file deleted, replaced or truncated under a running daemon
    (its connections would go on writing into a file no one will ever open again)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.size = os.fstat(self.fd).st_size

    def lost(self) -> str | None:
        """Why the catalog at the path is no longer the one we write (None: it is)."""
        st = os.fstat(self.fd)
        if st.st_nlink == 0:
            return "the catalog file was deleted"
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return "the catalog file was renamed or deleted"
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return "the catalog file was replaced by another file"
        if st.st_size < self.size:  # SQLite never shrinks it here (no VACUUM)
            return f"the catalog file was truncated ({self.size} -> {st.st_size} bytes)"
        self.size = st.st_size
        return None

    def close(self) -> None:
        os.close(self.fd)


def holder(state_dir: Path) -> dict[str, Any] | None:
    """The mediasortd process holding the state lock, if any: {pid, command}. The lock
    file holds "PID COMMAND" and is locked while that process runs: asked with F_OFD_GETLK
    (nothing is taken, so a daemon starting meanwhile is not refused; any filesystem,
    overlayfs included). An older mediasortd's flock is looked up in /proc/locks."""
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        text = os.pread(fd, 128, 0).decode(errors="replace").split()
        held = _ofd_locked(fd)
    finally:
        os.close(fd)
    if held and text and text[0].isdigit():
        return {
            "pid": int(text[0]),
            "command": text[1] if len(text) > 1 and text[1] in COMMANDS else "?",
        }
    pid = _flock_holder(st)
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except OSError:
        args = []
    return {"pid": pid, "command": next((a for a in args if a in WRITING_COMMANDS), "?")}


def _ofd_locked(fd: int) -> bool:
    """Some open file holds a lock on this file (F_OFD_GETLK; struct flock on Linux)."""
    try:
        got = fcntl.fcntl(
            fd, fcntl.F_OFD_GETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        )
    except OSError:
        return False
    return bool(struct.unpack(_FLOCK, got)[0] != fcntl.F_UNLCK)


def _flock_holder(st: os.stat_result) -> int | None:
    """The pid holding a flock on the file `st` describes, from /proc/locks lines like
    `1: FLOCK  ADVISORY  WRITE 4242 fe:01:1234 0 EOF` (device in hex, inode in decimal)."""
    try:
        with open("/proc/locks") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or "->" in parts:
            continue
        try:
            major, minor, ino = parts[5].split(":")
            if (int(ino), int(major, 16), int(minor, 16)) == (
                st.st_ino,
                os.major(st.st_dev),
                os.minor(st.st_dev),
            ):
                return int(parts[4])
        except ValueError:
            continue
    return None
