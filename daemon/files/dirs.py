"""Folders made durable: `fsync_dir`, the one fsync of a folder in the package (the store's
new catalog name, the library's folders, every place, move and retire), and `make_dirs`
(mkdir -p). Crash invariant: every folder `make_dirs` creates has its parent fsynced
before the call returns.
"""

from __future__ import annotations

import os
import stat


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
    """mkdir -p with `mode`, fsyncing the parent of every directory it creates. A new
    folder keeps the setgid bit of its parent (the library's group stays on everything
    below it) and, made by root, its parent's owner and group."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    make_dirs(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
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
