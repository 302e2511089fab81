"""Moves and removals that never replace anything: link, renameat2(RENAME_NOREPLACE) or,
across filesystems, copy + fsync + link, the destination's folder fsynced before the
source goes; removals only of the very file that was looked at (unlinkat by identity).
Crash invariant: at every moment each entry exists in at least one place.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading

from ..model import Identity
from .copy import SourceChanged, copy_and_hash
from .dirs import fsync_dir
from .paths import identity, kind_of, open_dir

_libc = ctypes.CDLL(None, use_errno=True)
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def link_noreplace(src: bytes, dst: bytes) -> bool:
    """Give `src` a second name `dst`; False (and nothing done) when `dst` exists.

    Falls back to a copy when they are on different filesystems. The caller fsyncs
    the destination directory."""
    try:
        os.link(src, dst, follow_symlinks=False)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP):
            raise
    # Another filesystem: copy beside the destination, then link it into place.
    tmp = link_temp(src, dst)
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        copy_and_hash(fd, tmp, stat.S_IMODE(os.fstat(fd).st_mode))
    finally:
        os.close(fd)
    try:
        os.link(tmp, dst)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def link_temp(src: bytes, dst: bytes) -> bytes:
    """The copy of `src` that link_noreplace makes beside `dst` on another filesystem
    before linking it into place: a crash in between leaves it there, holding nothing
    `dst` does not (undo removes it when it finishes a restore)."""
    return os.path.join(os.path.dirname(dst), b".mediasortd-tmp-" + os.path.basename(src))


def rename_noreplace(src: bytes, dst: bytes) -> bool:
    """Move the entry `src` (any type, links not followed) to `dst`; False if `dst` exists.

    Uses renameat2(RENAME_NOREPLACE); where the filesystem lacks it, link+unlink.
    Raises OSError(EXDEV) across filesystems: the caller leaves such a source alone."""
    if _libc.renameat2(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        return False
    if err not in (errno.EINVAL, errno.ENOSYS):
        raise OSError(err, os.strerror(err), src)
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        return False
    os.unlink(src)
    return True


def same_file(a: bytes, b: bytes) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def unlink_if(path: bytes, expected: Identity) -> bool:
    """Remove `path` only if it is still the file `expected` describes; True if removed
    (or already gone), False if something else stands there now."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    if not identity(st).same_file(expected):
        return False
    os.unlink(path)
    return True


def unlink_quiet(path: bytes) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def unlink_at_if(
    dir_fd: int, name: bytes, expected: Identity, held: os.stat_result | None = None
) -> bool:
    """Remove the entry `name` of folder `dir_fd` only if it is still the file `expected`
    describes (and, with `held`, the very inode of that open file); True if removed (or
    already gone), False if something else stands there now."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    if (
        not identity(st).same_file(expected)
        or not stat.S_ISREG(st.st_mode)
        or (held is not None and (st.st_dev, st.st_ino) != (held.st_dev, held.st_ino))
    ):
        return False
    os.unlink(name, dir_fd=dir_fd)
    return True


def move_at(
    src_dir: int, name: bytes, dst_dir: int, dst_name: bytes, *, expected_ino: int | None = None
) -> bool:
    """Move the entry `name` of folder `src_dir` (any type; links are moved, never
    followed) to `dst_name` in `dst_dir`, never replacing anything: False (and nothing
    done) when `dst_name` exists. renameat2(RENAME_NOREPLACE) where it can; across
    filesystems (or bind mounts) the entry is recreated: a regular file copied and
    fsynced, a symlink made again with the same target, a FIFO or socket made again
    (they hold no bytes); the destination folder is fsynced before the source is removed
    (unlinkat on `src_dir`, only if it is still the entry that was copied). A device or
    a folder across filesystems raises OSError(EXDEV). The caller fsyncs both folders
    afterwards (for the rename). `expected_ino`: the entry must still be this inode."""
    st = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
    if expected_ino is not None and identity(st).ino != expected_ino:
        raise SourceChanged("a different file now stands at the source")
    if _libc.renameat2(src_dir, name, dst_dir, dst_name, _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        return False
    if err in (errno.EINVAL, errno.ENOSYS):  # no RENAME_NOREPLACE here: link + unlink
        try:
            os.link(name, dst_name, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            err = errno.EXDEV
        else:
            os.unlink(name, dir_fd=src_dir)
            return True
    if err != errno.EXDEV:
        raise OSError(err, os.strerror(err), name)
    made = _recreate(src_dir, name, st, dst_dir, dst_name)
    if made is None:
        return False
    fsync_dir(dst_dir)  # the new entry is durable before the old one goes
    now = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
    if identity(now) != identity(st) or (
        stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=src_dir) != made
    ):
        os.unlink(dst_name, dir_fd=dst_dir)
        raise SourceChanged("the entry changed while it was being moved")
    os.unlink(name, dir_fd=src_dir)
    return True


def _recreate(
    src_dir: int, name: bytes, st: os.stat_result, dst_dir: int, dst_name: bytes
) -> bytes | None:
    """Make `dst_name` in `dst_dir` a durable copy of the entry `st` describes (its
    folder not yet fsynced): a symlink's target (b"" for other types), or None when the
    name is taken."""
    mode = stat.S_IMODE(st.st_mode)
    try:
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(name, dir_fd=src_dir)
            os.symlink(target, dst_name, dir_fd=dst_dir)
            return target
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            os.mknod(dst_name, mode | stat.S_IFMT(st.st_mode), dir_fd=dst_dir)
            return b""
    except FileExistsError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise OSError(
            errno.EXDEV, f"{kind_of(st.st_mode)} cannot be moved to another filesystem", name
        )
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_dir)
    tmp = b".mediasortd-tmp-%d-%d" % (os.getpid(), threading.get_ident())
    try:
        before = os.fstat(src)
        if (before.st_dev, before.st_ino) != (st.st_dev, st.st_ino):
            raise SourceChanged("the entry was replaced while it was being opened")
        copy_and_hash(src, tmp, mode, before=before, dir_fd=dst_dir)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir, follow_symlinks=False)
        try:
            os.link(tmp, dst_name, src_dir_fd=dst_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
        except FileExistsError:
            return None
        return b""
    finally:
        os.close(src)
        try:
            os.unlink(tmp, dir_fd=dst_dir)
        except FileNotFoundError:
            pass


def move_noreplace(src: bytes, dst: bytes) -> bool:
    """Move `src` to `dst` (paths; any entry type, links not followed), never replacing
    anything, across filesystems too (copy + fsync + unlink: see move_at). Durable on
    return: both folders fsynced. False (and nothing done) when `dst` exists."""
    src_dir = open_dir(os.path.dirname(src) or b".")
    try:
        dst_dir = open_dir(os.path.dirname(dst) or b".")
        try:
            if not move_at(src_dir, os.path.basename(src), dst_dir, os.path.basename(dst)):
                return False
            fsync_dir(dst_dir)
            fsync_dir(src_dir)
            return True
        finally:
            os.close(dst_dir)
    finally:
        os.close(src_dir)
