"""Folders made durable: `fsync_dir`, the one fsync of a folder in the package (the store's
new catalog name, the library's folders, every place, move and retire), and `make_dirs`
(mkdir -p). Crash invariant: when `make_dirs` returns, the folder's own entry is durable:
its parent was fsynced after the folder appeared, by this call or an earlier one in this
process (workers are threads: the one that sees the folder first waits for the maker).
"""

from __future__ import annotations

import errno
import os
import stat
import threading

# Folders whose entry this process has made durable, by path: (st_dev, st_ino) of the
# folder then (a folder removed and made again by someone else is a new one). `_making`
# serialises the slow path, taken once per folder per process, so that a worker that
# finds a folder another worker is still making waits for that worker's fsync.
_durable: dict[bytes, tuple[int, int]] = {}
_making = threading.Lock()


def fsync_dir(path: bytes | int) -> None:
    """fsync a folder, named by its path or given as an open descriptor."""
    if isinstance(path, int):
        os.fsync(path)
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: bytes, mode: int) -> None:
    """mkdir -p with `mode`, safe for threads and processes making the same folders at
    once. Every folder it creates has its parent fsynced; a folder it finds (made by
    another process, or before a crash) has its parent fsynced once per process before
    the first return, so nothing is linked into a folder whose entry could still be lost.
    A new folder keeps the setgid bit of its parent (the library's group stays on
    everything below it) and, made by root, its parent's owner and group."""
    if _known(path):
        return
    with _making:
        _make(path, mode)


def _known(path: bytes) -> bool:
    """Is `path` a folder this process made durable (the same folder: not since replaced)?"""
    known = _durable.get(path)
    if known is None:
        return False
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == known


def _make(path: bytes, mode: int) -> None:
    """make_dirs under `_making`."""
    if _known(path):
        return
    parent = os.path.dirname(path) or b"."
    if os.path.isdir(path):  # not ours: its entry is made durable before we use it
        try:
            fsync_dir(parent)
        except OSError as e:  # an admin's folder in a parent we may not read, or on a
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EINVAL):  # filesystem
                raise  # that cannot fsync a folder: its durability is not ours to give
        _remember(path)
        return
    if parent != path:
        _make(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:  # another process made it meanwhile: as found
        if not os.path.isdir(path):
            return  # not a folder: the caller's use of it says so
        fsync_dir(parent)
        _remember(path)
        return
    own_like_parent(path, parent)
    have = os.stat(path).st_mode  # mkdir gave it the setgid bit of a setgid parent
    want = mode | (have & stat.S_ISGID)
    if stat.S_IMODE(have) != want:  # the umask took some of `mode`
        try:
            os.chmod(path, want)
        except PermissionError:  # RestrictSUIDSGID= (the unit) refuses to set the bit
            os.chmod(path, mode)
    fsync_dir(parent)
    _remember(path)


def _remember(path: bytes) -> None:
    st = os.stat(path)
    _durable[path] = (st.st_dev, st.st_ino)


def own_like_parent(target: bytes | int, parent: bytes | int) -> None:
    """Run as root (an admin's `import` or `undo` on the service's folders), give a new
    file or folder (a path or a descriptor) the owner and group of the folder it is in (a
    path or a descriptor), so that the service can still use it; as anyone else, nothing."""
    if os.geteuid() == 0:
        st = os.stat(parent or b".")
        if isinstance(target, int):
            os.fchown(target, st.st_uid, st.st_gid)
        else:
            os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
