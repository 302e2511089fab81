"""Durable file primitives: open a source safely, copy-and-hash, place without overwriting.

Invariants: nothing here ever replaces an existing directory entry (link, renameat2
RENAME_NOREPLACE); a source is opened only after lstat says it is a regular file, with
O_NOFOLLOW|O_NONBLOCK, and is checked again on the open descriptor; every new file and
every changed directory is fsynced before the caller is told it is done.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from ..model import Identity

CHUNK = 1 << 20
_libc = ctypes.CDLL(None, use_errno=True)
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


# errors that are the daemon's or the system's trouble of the moment, not the file's:
# a file that meets one is tried again later, never rejected
TRANSIENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EIO,
                              errno.EAGAIN, errno.EINTR, errno.ENOBUFS, errno.EBUSY,
                              errno.ETIMEDOUT, errno.ESTALE, errno.EDEADLK})


@dataclass(frozen=True)
class Unusable:
    """A source that is not a regular file we may read, and why (a value, not an error)."""

    reason: str
    missing: bool = False
    unreadable: bool = False  # permission denied: worth a new look once that changes


class SourceChanged(Exception):
    """The source changed while it was being copied."""


def identity(st: os.stat_result) -> Identity:
    return Identity(dev=st.st_dev, ino=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns)


def kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
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
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_openat2_works = [True]  # set to False the first time the kernel (or seccomp) refuses it


def _openat2(dir_fd: int, rel: bytes) -> int | None:
    """openat2 of a folder beneath dir_fd without links; None where there is no openat2."""
    how = _OpenHow(_DIR_FLAGS, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS
                   | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), ctypes.c_char_p(rel),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
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
        rel = os.path.dirname(path[len(root.rstrip(b"/")) + 1:])
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
    return ("a folder on its path is now a symbolic link or not a folder (not followed)"
            if e.errno in WAY_ERRNOS else f"cannot open its folder: {e.strerror}")


@dataclass
class Source:
    """A source opened beneath its root: its folder's descriptor and name (for the
    unlinkat or renameat2 that retires it), and the file's descriptor once opened."""

    dir_fd: int
    name: bytes
    fd: int | None = None
    st: os.stat_result | None = None
    leased: bool = False

    def close(self) -> None:
        for fd in (self.fd, self.dir_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.fd = None
        self.dir_fd = -1


def open_source_beneath(root: bytes | None, path: bytes) -> Source | Unusable:
    """open_source, with the folders resolved beneath `root` (parent_beneath): the entry
    is looked at (fstatat) and opened (openat, O_NOFOLLOW|O_NONBLOCK) through its
    folder's descriptor, which the caller keeps for removing it later."""
    try:
        dir_fd, name = parent_beneath(root, path)
    except FileNotFoundError:
        return Unusable("the file disappeared", missing=True)
    except OSError as e:
        if e.errno in TRANSIENT_ERRNOS:
            raise  # retried later
        return Unusable(way_reason(e), missing=e.errno in WAY_ERRNOS)
    src = Source(dir_fd, name)
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
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
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


def unlink_at_if(dir_fd: int, name: bytes, expected: Identity,
                 held: os.stat_result | None = None) -> bool:
    """Remove the entry `name` of folder `dir_fd` only if it is still the file `expected`
    describes (and, with `held`, the very inode of that open file); True if removed (or
    already gone), False if something else stands there now."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    if not identity(st).same_file(expected) or not stat.S_ISREG(st.st_mode) or (
            held is not None and (st.st_dev, st.st_ino) != (held.st_dev, held.st_ino)):
        return False
    os.unlink(name, dir_fd=dir_fd)
    return True


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


class Copied(NamedTuple):
    sha256: str
    size: int
    head: bytes  # what the `head` picker kept of the first chunk (b"" when not asked)


def copy_and_hash(src_fd: int, dst: bytes, mode: int, *,
                  head: Callable[[memoryview], bytes] | None = None,
                  before: os.stat_result | None = None, dir_fd: int | None = None,
                  intact: Callable[[], bool] | None = None) -> Copied:
    """Copy an open source into a new file `dst` (truncated if it exists), hashing in the
    same single read; fsync it. Holes stay holes (a 10 GiB sparse file costs no disk),
    memory stays two chunks. Raises SourceChanged if the source changed meanwhile.
    `head`: picks what to keep of the first chunk read (what a metadata reader needs,
    so it does not read the copy again); `before`: the source's fstat, if the caller has it;
    `dir_fd`: the folder `dst` is relative to; `intact`: asked every 16 MiB (and at the
    end) whether the source is still unwritten (its lease): SourceChanged at once if not,
    so a writer that opened it waits no longer than that.

    Each chunk read is hashed here while a writer thread writes it (both release the
    GIL), and written ranges are handed to the disk as they go (sync_file_range), so a
    large file's final fsync has little left to do: one read, hashing and disk writes
    overlap."""
    if before is None:
        before = os.fstat(src_fd)
    h = hashlib.sha256()
    large = before.st_size >= ADVISE_BYTES  # small files: no advice, no second thread
    if large:
        os.posix_fadvise(src_fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    out = _create(dst, mode, dir_fd)
    size = 0
    first = b""
    writer = _Writer(out) if before.st_size > PIPELINE_BYTES else None
    buffer = min(CHUNK, max(before.st_size, 4096))
    bufs = ([memoryview(bytearray(buffer)) for _ in range(2)] if writer
            else [_scratch(buffer)])
    # every block allocated: no hole to look for (a hole read as data is still right)
    regions = ([(0, before.st_size, True)] if before.st_blocks * 512 >= before.st_size
               else _regions(src_fd, before.st_size))
    ends_in_data = True
    try:
        i = 0
        for offset, length, is_data in regions:
            end = offset + length
            ends_in_data = is_data
            while offset < end:
                if is_data:
                    view = bufs[i % len(bufs)]
                    i += 1
                    n = os.preadv(src_fd, [view[:min(buffer, end - offset)]], offset)
                    if n == 0:
                        break  # shrank meanwhile: the identity check below says so
                    chunk = view[:n]
                    if head is not None and offset == 0:
                        first = head(chunk)
                    if intact is not None and i % 16 == 0 and not intact():
                        raise SourceChanged("a writer opened it")
                    if writer is None:
                        _pwrite_all(out, chunk, offset)
                        h.update(chunk)
                    else:  # the write of this chunk runs while it is hashed; the one before
                        writer.put(chunk, offset)  # it must end before its buffer is reused
                        h.update(chunk)
                else:
                    n = min(CHUNK, end - offset)
                    h.update(_ZEROS[:n])
                offset += n
                size = offset
        if writer is not None:
            writer.close()
        if not ends_in_data or size < before.st_size:
            os.ftruncate(out, size)  # a hole at the end, or the source shrank
        os.fsync(out)
        if large:
            os.posix_fadvise(out, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        if writer is not None:
            writer.close()
        os.close(out)
    if large:
        os.posix_fadvise(src_fd, 0, 0, os.POSIX_FADV_DONTNEED)
    after = os.fstat(src_fd)
    if intact is not None and not intact():
        raise SourceChanged("a writer opened it")
    if size != after.st_size or identity(before) != identity(after):
        raise SourceChanged(f"size {before.st_size} -> {after.st_size} bytes while copying")
    return Copied(h.hexdigest(), size, first)


def _scratch(size: int) -> memoryview:
    """This thread's copy buffer (kept: a new one per file costs page faults)."""
    buf: memoryview | None = getattr(_SCRATCH, "buf", None)
    if buf is None or len(buf) < size:
        buf = _SCRATCH.buf = memoryview(bytearray(max(size, 256 << 10)))
    return buf[:size]


_SCRATCH = threading.local()


def _create(path: bytes, mode: int, dir_fd: int | None = None) -> int:
    """A new, empty file with exactly `mode`, whatever the umask (one left by an
    earlier attempt is truncated), owned like its folder when made by root."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=dir_fd)
    try:
        own_like_parent(fd, dir_fd if dir_fd is not None else os.path.dirname(path))
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


PIPELINE_BYTES = 8 * CHUNK  # larger files are written by a second thread
ADVISE_BYTES = CHUNK  # larger files: read-ahead advice, and dropped from the page cache
_ZEROS = memoryview(bytes(CHUNK))  # what a hole hashes as
_SYNC_FILE_RANGE_WRITE = 2
_WRITEBACK_EVERY = 16 * CHUNK


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], offset + written)


class _Writer:
    """One writer thread for one large copy: put() hands it a chunk and waits for the
    chunk before it (so two buffers suffice); ranges already written are started
    towards the disk every 16 MiB. An error in the thread is raised by the next call."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending: tuple[memoryview, int] | None = None
        self.error: BaseException | None = None
        self.ready = threading.Semaphore(0)  # a chunk is waiting for the thread
        self.done = threading.Semaphore(1)  # the thread is free
        self.closed = False
        self.unsynced_from = 0
        self.thread = threading.Thread(target=self._run, name="copy-writer", daemon=True)
        self.thread.start()

    def put(self, chunk: memoryview, offset: int) -> None:
        self.done.acquire()  # the previous chunk is on its way to the disk
        if self.error is not None:
            self.done.release()  # free again: close() must not wait for it
            self._raise()
        self.pending = (chunk, offset)
        self.ready.release()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.done.acquire()
        self.pending = None
        self.ready.release()  # None: stop
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _run(self) -> None:
        while True:
            self.ready.acquire()
            item = self.pending
            if item is None:
                return
            chunk, offset = item
            try:
                _pwrite_all(self.fd, chunk, offset)
                end = offset + len(chunk)
                if end - self.unsynced_from >= _WRITEBACK_EVERY:
                    _libc.sync_file_range(self.fd, ctypes.c_int64(self.unsynced_from),
                                          ctypes.c_int64(end - self.unsynced_from),
                                          _SYNC_FILE_RANGE_WRITE)
                    self.unsynced_from = end
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self.error = e
            self.done.release()


def _regions(fd: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, is_data) covering [0, size): holes found with SEEK_HOLE."""
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole up to the end
                data = size
            else:  # no hole support here: it is all data
                yield pos, size - pos, True
                return
        data = min(data, size)
        if data > pos:
            yield pos, data - pos, False
            pos = data
        if pos >= size:
            return
        hole = min(os.lseek(fd, pos, os.SEEK_HOLE), size)
        yield pos, hole - pos, True
        pos = hole


def hash_fd(fd: int) -> tuple[str, int]:
    """The sha256 and size of what an open descriptor reads (from its current offset)."""
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    while n := os.readv(fd, [buf]):
        h.update(memoryview(buf)[:n])
        size += n
    return h.hexdigest(), size


def hash_file(path: bytes, *, strict: bool = False) -> tuple[str, int] | None:
    """The sha256 and size of a file, or None if it cannot be read (no links followed).
    `strict`: None only when there is no such file; any other trouble (out of file
    descriptors...) raises, for callers that act on "not there"."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if strict and e.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return hash_fd(fd)
    finally:
        os.close(fd)


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
    tmp = os.path.join(os.path.dirname(dst), b".mediasortd-tmp-" + os.path.basename(src))
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


# -- moves that never replace, across filesystems too -------------------------------------

def open_dir(path: bytes) -> int:
    """A folder the configuration or the user names (links in it followed: they chose
    it), also past PATH_MAX (opened one folder at a time from the longest prefix that
    fits)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    if len(path) < _PATH_MAX:
        return os.open(path, flags)
    head = path[:_PATH_MAX - 1].rpartition(b"/")[0] or b"/"
    rest = path[len(head):].lstrip(b"/")
    return _down(os.open(head, flags), [part for part in rest.split(b"/") if part], flags)


def move_at(src_dir: int, name: bytes, dst_dir: int, dst_name: bytes, *,
            expected_ino: int | None = None) -> bool:
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
            os.link(name, dst_name, src_dir_fd=src_dir, dst_dir_fd=dst_dir,
                    follow_symlinks=False)
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
    if identity(now) != identity(st) or (stat.S_ISLNK(st.st_mode) and
                                          os.readlink(name, dir_fd=src_dir) != made):
        os.unlink(dst_name, dir_fd=dst_dir)
        raise SourceChanged("the entry changed while it was being moved")
    os.unlink(name, dir_fd=src_dir)
    return True


def _recreate(src_dir: int, name: bytes, st: os.stat_result, dst_dir: int,
              dst_name: bytes) -> bytes | None:
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
        raise OSError(errno.EXDEV, f"{kind_of(st.st_mode)} cannot be moved to another "
                      "filesystem", name)
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                  dir_fd=src_dir)
    tmp = b".mediasortd-tmp-%d-%d" % (os.getpid(), threading.get_ident())
    try:
        before = os.fstat(src)
        if (before.st_dev, before.st_ino) != (st.st_dev, st.st_ino):
            raise SourceChanged("the entry was replaced while it was being opened")
        copy_and_hash(src, tmp, mode, before=before, dir_fd=dst_dir)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir,
                 follow_symlinks=False)
        try:
            os.link(tmp, dst_name, src_dir_fd=dst_dir, dst_dir_fd=dst_dir,
                    follow_symlinks=False)
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
