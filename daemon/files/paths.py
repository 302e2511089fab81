"""Sources opened safely: every path under the inbox resolved beneath the inbox's
descriptor, never through a link (also past PATH_MAX); an entry used only after lstat says
it is a regular file, opened O_NOFOLLOW|O_NONBLOCK and checked again on the descriptor;
read leases that tell whether anyone has it open for writing. Nothing here changes a file.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import stat
from dataclasses import dataclass

from ..model import Identity

_libc = ctypes.CDLL(None, use_errno=True)


# errors that are the daemon's or the system's trouble of the moment, not the file's:
# a file that meets one is tried again later, never rejected
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
        errno.EIO,
        errno.EAGAIN,
        errno.EINTR,
        errno.ENOBUFS,
        errno.EBUSY,
        errno.ETIMEDOUT,
        errno.ESTALE,
        errno.EDEADLK,
    }
)


@dataclass(frozen=True)
class Unusable:
    """A source that is not a regular file we may read, and why (a value, not an error)."""

    reason: str
    missing: bool = False
    unreadable: bool = False  # permission denied: worth a new look once that changes


def identity(st: os.stat_result) -> Identity:
    return Identity(dev=st.st_dev, ino=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns)


def kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_source(path: bytes, expected: Identity | None = None) -> int | Unusable:
    """Open a regular file for reading, without following links or blocking.

    Returns the descriptor, or Unusable when the entry is missing, not a regular file,
    or unreadable. `expected` (its inode) guards against the entry being swapped.
    """
    got = _open_at(None, path)
    if isinstance(got, Unusable):
        return got
    fd, fst = got
    if expected is not None and identity(fst).ino != expected.ino:
        os.close(fd)
        return Unusable("a different file now stands at this path", missing=True)
    return fd


# -- paths beneath the inbox, never through a link ----------------------------------------
#
# Anyone who can write in the inbox can swap a folder for a symlink after the daemon saw
# a file in it. So every path under the inbox is resolved from the inbox's descriptor,
# one folder at a time, never following a link (openat2 RESOLVE_BENEATH|NO_SYMLINKS,
# else O_NOFOLLOW|O_DIRECTORY per component), and the entry itself is then used through
# its folder's descriptor (fstatat, openat, unlinkat, renameat2). Paths longer than
# PATH_MAX work the same way.

_SYS_OPENAT2 = 437  # the same number on every architecture
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x02, 0x04, 0x08
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_MAX = 4096
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_works = [True]  # set to False the first time the kernel (or seccomp) refuses it


def _openat2(dir_fd: int, rel: bytes) -> int | None:
    """openat2 of a folder beneath dir_fd without links; None where there is no openat2."""
    how = _OpenHow(_DIR_FLAGS, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(rel),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd >= 0:
        return int(fd)
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM, errno.E2BIG):
        _openat2_works[0] = False
        return None
    raise OSError(err, os.strerror(err), rel)


def open_dir_beneath(root_fd: int, rel: bytes) -> int:
    """The folder `rel` (relative, may be b"") beneath the open folder `root_fd`, opened
    without following any symlink and never leaving it. Raises OSError: ELOOP for a link
    on the way, ENOTDIR, ENOENT, EXDEV for '..' or a way out."""
    parts = [p for p in rel.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise OSError(errno.EXDEV, "a '..' in a path under the inbox", rel)
    if not parts:
        return os.dup(root_fd)
    joined = b"/".join(parts)
    if _openat2_works[0] and len(joined) < _PATH_MAX:
        fd = _openat2(root_fd, joined)
        if fd is not None:
            return fd
    return _down(os.dup(root_fd), parts, _DIR_FLAGS)


def _down(fd: int, parts: list[bytes], flags: int) -> int:
    """From the folder `fd` (taken over), open each of `parts` in turn beneath the last;
    the last one's descriptor (every other one closed, also on failure)."""
    try:
        for part in parts:
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def parent_beneath(root: bytes | None, path: bytes) -> tuple[int, bytes]:
    """(descriptor of the folder holding `path`, the entry's name). With a `root` (the
    inbox) that `path` lies under, the folder is resolved beneath it without links; else
    (a source the user named) it is opened as named. Raises OSError."""
    name = os.path.basename(path)
    if root is None or not path.startswith(root.rstrip(b"/") + b"/"):
        return open_dir(os.path.dirname(path) or b"/"), name
    root_fd = open_dir(root)
    try:
        rel = os.path.dirname(path[len(root.rstrip(b"/")) + 1 :])
        return open_dir_beneath(root_fd, rel), name
    finally:
        os.close(root_fd)


def stat_beneath(root: bytes | None, path: bytes) -> os.stat_result:
    """lstat of `path`, its folders resolved as parent_beneath does. Raises OSError."""
    dir_fd, name = parent_beneath(root, path)
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.close(dir_fd)


class FolderStats:
    """stat_beneath for a run of paths: the folder of the last path stays open and is
    used again for the next path in the same folder under the same root (resolved once,
    as parent_beneath does), instead of opening it again for every file. The caller
    closes it before anything slow, so it is never older than its run of lstat calls."""

    def __init__(self) -> None:
        self.key: tuple[bytes | None, bytes] | None = None
        self.fd = -1

    def stat(self, root: bytes | None, path: bytes) -> os.stat_result:
        """stat_beneath(root, path). Raises OSError."""
        key = (root, os.path.dirname(path))
        if key != self.key:
            self.close()
            self.fd, _ = parent_beneath(root, path)
            self.key = key
        return os.stat(os.path.basename(path), dir_fd=self.fd, follow_symlinks=False)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.key = -1, None


WAY_ERRNOS = (errno.ELOOP, errno.ENOTDIR, errno.EXDEV)  # a folder on the way is not one


def way_reason(e: OSError) -> str:
    return (
        "a folder on its path is now a symbolic link or not a folder (not followed)"
        if e.errno in WAY_ERRNOS
        else f"cannot open its folder: {e.strerror}"
    )


@dataclass
class Source:
    """A source opened beneath its root: its folder's descriptor and name (for the
    unlinkat or renameat2 that retires it), and the file's descriptor once opened.
    `shared`: the folder's descriptor belongs to a batch's Folders, which closes it."""

    dir_fd: int
    name: bytes
    fd: int | None = None
    st: os.stat_result | None = None
    leased: bool = False
    shared: bool = False

    def close(self) -> None:
        for fd in (self.fd, None if self.shared else self.dir_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.fd = None
        self.dir_fd = -1


class Folders:
    """The source folders of one batch, each resolved beneath its root once (as
    parent_beneath does: no link followed) instead of once per file. Every source is
    still opened through its folder's descriptor and later removed through that same
    descriptor, so a folder swapped for a link meanwhile is never followed; the
    descriptors live only as long as the batch's work (the caller closes them)."""

    def __init__(self) -> None:
        self.fds: dict[tuple[bytes | None, bytes], int] = {}

    def parent(self, root: bytes | None, path: bytes) -> tuple[int, bytes]:
        """parent_beneath(root, path), the folder's descriptor kept for the batch (the
        caller does not close it). Raises OSError."""
        key = (root, os.path.dirname(path))
        fd = self.fds.get(key)
        if fd is None:
            fd = self.fds[key] = parent_beneath(root, path)[0]
        return fd, os.path.basename(path)

    def close(self) -> None:
        fds, self.fds = list(self.fds.values()), {}
        for fd in fds:
            os.close(fd)


def open_source_beneath(
    root: bytes | None, path: bytes, folders: Folders | None = None
) -> Source | Unusable:
    """open_source, with the folders resolved beneath `root` (parent_beneath): the entry
    is looked at (fstatat) and opened (openat, O_NOFOLLOW|O_NONBLOCK) through its
    folder's descriptor, which the caller keeps for removing it later. `folders`: the
    batch's folders, whose descriptor the source then shares."""
    try:
        dir_fd, name = parent_beneath(root, path) if folders is None else folders.parent(root, path)
    except FileNotFoundError:
        return Unusable("the file disappeared", missing=True)
    except OSError as e:
        if e.errno in TRANSIENT_ERRNOS:
            raise  # retried later
        return Unusable(way_reason(e), missing=e.errno in WAY_ERRNOS)
    src = Source(dir_fd, name, shared=folders is not None)
    try:
        got = _open_at(dir_fd, name)
    except BaseException:
        src.close()
        raise
    if isinstance(got, Unusable):
        src.close()
        return got
    src.fd, src.st = got
    return src


def _open_at(dir_fd: int | None, name: bytes) -> tuple[int, os.stat_result] | Unusable:
    """lstat, open without following a link, and check the descriptor is that entry;
    `dir_fd` None: `name` is a path."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return Unusable("the file disappeared", missing=True)
    except OSError as e:
        if e.errno in TRANSIENT_ERRNOS:
            raise  # retried later
        return Unusable(f"cannot stat: {e.strerror}")
    if not stat.S_ISREG(st.st_mode):
        return Unusable(f"{kind_of(st.st_mode)}, not a regular file")
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except FileNotFoundError:
        return Unusable("the file disappeared", missing=True)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return Unusable("a symbolic link, not a regular file")
        if e.errno in TRANSIENT_ERRNOS:
            raise  # retried later
        return Unusable(f"cannot open: {e.strerror}", unreadable=e.errno == errno.EACCES)
    fst = os.fstat(fd)
    if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        return Unusable("the entry was replaced while it was being opened")
    return fd, fst


def open_dir(path: bytes) -> int:
    """A folder the configuration or the user names (links in it followed: they chose
    it), also past PATH_MAX (opened one folder at a time from the longest prefix that
    fits)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    if len(path) < _PATH_MAX:
        return os.open(path, flags)
    head = path[: _PATH_MAX - 1].rpartition(b"/")[0] or b"/"
    rest = path[len(head) :].lstrip(b"/")
    return _down(os.open(head, flags), [part for part in rest.split(b"/") if part], flags)


# -- leases: the kernel says whether anyone has a file open for writing ------------------

_F_SETSIG, _F_SETLEASE, _F_GETLEASE = 10, 1024, 1025
_F_RDLCK, _F_UNLCK = 0, 2
# filesystems whose writers are elsewhere (a lease there says nothing about them)
_REMOTE_FS = {0x6969: "NFS", 0xFF534D42: "CIFS", 0xFE534D42: "SMB2", 0x517B: "SMB"}


def take_lease(fd: int) -> str | None:
    """Take a read lease on an open source: None when taken (no one has the file open
    for writing, and a writer that opens it from now on breaks the lease), "busy" when
    someone has it open for writing, else why a lease cannot be had here (not the
    owner and no CAP_LEASE, a filesystem without leases, a network filesystem)."""
    try:
        kind = _REMOTE_FS.get(_fs_type(fd))
        if kind is not None:
            return f"{kind}: a lease there does not see the writers"
        # a broken lease signals its holder (SIGIO kills by default): SIGURG is ignored
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, _F_SETLEASE, _F_RDLCK)
        return None
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EBUSY):
            return "busy"
        return e.strerror or str(e)


def lease_held(fd: int) -> bool:
    """The read lease on `fd` is intact: no writer has opened the file since."""
    try:
        return fcntl.fcntl(fd, _F_GETLEASE) == _F_RDLCK
    except OSError:
        return False


class _StatFS(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_long * 15)]


def _fs_type(fd: int) -> int:
    buf = _StatFS()
    if _libc.fstatfs(fd, ctypes.byref(buf)) != 0:
        return 0
    return int(buf.f_type) & 0xFFFFFFFF
