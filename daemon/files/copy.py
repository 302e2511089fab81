"""The durable copy: a source copied into a new file and hashed in the same single read,
holes kept (SourceChanged if the source changed meanwhile); hashing of files already in
place. Crash invariant: the copy is fsynced before `copy_and_hash` returns; making its
name durable (fsync of its folder) is the caller's.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .dirs import own_like_parent
from .paths import identity

CHUNK = 1 << 20
_libc = ctypes.CDLL(None, use_errno=True)


class SourceChanged(Exception):
    """The source changed while it was being copied."""


class Copied(NamedTuple):
    sha256: str
    size: int
    head: bytes  # what the `head` picker kept of the first chunk (b"" when not asked)


def copy_and_hash(
    src_fd: int,
    dst: bytes,
    mode: int,
    *,
    head: Callable[[memoryview], bytes] | None = None,
    before: os.stat_result | None = None,
    dir_fd: int | None = None,
    intact: Callable[[], bool] | None = None,
) -> Copied:
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
    bufs = [memoryview(bytearray(buffer)) for _ in range(2)] if writer else [_scratch(buffer)]
    # every block allocated: no hole to look for (a hole read as data is still right)
    regions = (
        [(0, before.st_size, True)]
        if before.st_blocks * 512 >= before.st_size
        else _regions(src_fd, before.st_size)
    )
    ends_in_data = True
    try:
        i = 0
        for start, length, is_data in regions:
            offset, end = start, start + length
            ends_in_data = is_data
            while offset < end:
                if is_data:
                    view = bufs[i % len(bufs)]
                    i += 1
                    n = os.preadv(src_fd, [view[: min(buffer, end - offset)]], offset)
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
    fd = os.open(
        path,
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
        mode,
        dir_fd=dir_fd,
    )
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
                    _libc.sync_file_range(
                        self.fd,
                        ctypes.c_int64(self.unsynced_from),
                        ctypes.c_int64(end - self.unsynced_from),
                        _SYNC_FILE_RANGE_WRITE,
                    )
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
