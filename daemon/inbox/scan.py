"""Inbox logic without inotify: scans, settled candidates, who has a file open for
writing, and removing emptied folders. Everything here looks beneath the inbox's
descriptor, never through a link. Crash invariant: nothing here changes a file; only
`prune_empty_dirs` removes folders, and only empty, quiet, unsynced ones.

A file is a candidate on close-after-write, move-in or creation (hard links), and on
every scan. It is handed on only once it is complete: size and mtime unchanged for
settle_seconds, no process we can see has it open for writing and, for a file seen
being written (IN_MODIFY), a close-after-write (IN_CLOSE_WRITE) since its last write.
Files held back, and why, are in `Candidates.held` (published for `status`). Partial names
(`*.part`, dot-files, ...) wait until renamed. Memory is bounded: past `capacity`
candidates, new ones are dropped and a rescan is requested instead.
"""

from __future__ import annotations

import heapq
import os
import stat
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from ..files.paths import (
    TRANSIENT_ERRNOS,
    Unusable,
    open_dir,
    open_dir_beneath,
    open_source_beneath,
    parent_beneath,
    stat_beneath,
)
from ..rules.layout import is_partial
from .complete import cut_short


@dataclass
class _Seen:
    size: int = -1
    mtime_ns: int = -1
    since: float = 0.0  # when (size, mtime) was last seen to change
    version: int = 0  # bumped on every event; stale heap entries are skipped
    writing: bool = False  # written to (IN_MODIFY) and not closed after writing since


# why a settled file is held back (`status` shows these)
NOT_CLOSED = (
    "written to and not closed since (inotify saw a write and no close-after-"
    "write): taken once the writer closes it"
)
CUT_SHORT = "looks cut short"


class Candidates:
    """Paths waiting to settle, each looked at only when it could be due (a heap of
    check times), so a burst of 20,000 files costs no polling. Thread-safe."""

    def __init__(
        self,
        settle_seconds: float,
        capacity: int,
        clock: Callable[[], float],
        root_of: Callable[[bytes], bytes | None] = lambda path: None,
        grace: float | None = None,
    ) -> None:
        # the inbox a path lies in: looked at beneath it, never through links
        self.root_of = root_of
        self.settle = settle_seconds
        self.capacity = capacity
        self.clock = clock
        self.lock = threading.Lock()
        self.seen: dict[bytes, _Seen] = {}
        self.heap: list[tuple[float, int, bytes]] = []
        self.overflowed = threading.Event()  # dropped something: rescan when there is room
        self.held: dict[bytes, str] = {}  # settled but held back, and why
        self.held_version = 0  # bumped when `held` changes (the daemon publishes it)
        self.newly_held: list[tuple[bytes, str]] = []  # (path, why) to log, newest last
        # a settled file that looks cut short (complete.cut_short) waits until it changes,
        # or `grace` s unchanged, then is handed on as it is (listed in `filed_short`)
        self.grace = grace
        self.filed_short: list[tuple[bytes, str]] = []

    def add(self, path: bytes, closed: bool = False) -> None:
        """A path to look at now (an event or a scan); `closed`: a close-after-write."""
        with self.lock:
            seen = self.seen.get(path)
            if seen is None:
                if len(self.seen) >= self.capacity:
                    self.overflowed.set()
                    return
                seen = self.seen[path] = _Seen()
            if closed:
                seen.writing = False
            seen.version += 1
            heapq.heappush(self.heap, (self.clock(), seen.version, path))

    def modified(self, path: bytes) -> None:
        """A write to `path` (IN_MODIFY): not taken before a close-after-write. Cheap (one
        per write): no heap entry unless the path is new."""
        with self.lock:
            seen = self.seen.get(path)
            if seen is not None:
                seen.writing = True
                return
        self.add(path)
        with self.lock:
            if (seen := self.seen.get(path)) is not None:
                seen.writing = True

    def events_lost(self) -> None:
        """Events were lost (inotify overflow, an observer restarted): a close may be
        among them, so no file waits for one; the settle rule (and the lease) stay."""
        with self.lock:
            for seen in self.seen.values():
                seen.writing = False

    def _hold(self, path: bytes, why: str | None) -> None:
        """Record (or clear, why=None) why `path` is held back. Under the lock."""
        if why is None:
            if self.held.pop(path, None) is not None:
                self.held_version += 1
        elif self.held.get(path) != why:
            self.held[path] = why
            self.held_version += 1
            if len(self.newly_held) < 1000:
                self.newly_held.append((path, why))

    def __len__(self) -> int:
        return len(self.seen)

    def due(self) -> list[bytes]:
        """The candidates that have settled (and are no longer open for writing)."""
        now = self.clock()
        ready: list[bytes] = []
        with self.lock:
            while self.heap and self.heap[0][0] <= now:
                _, version, path = heapq.heappop(self.heap)
                seen = self.seen.get(path)
                if seen is None or seen.version != version:
                    continue
                try:
                    st = stat_beneath(self.root_of(path), path)
                except OSError as e:
                    if e.errno in TRANSIENT_ERRNOS:  # our trouble (EMFILE...), not the
                        # file's: it stays a candidate and is looked at again later
                        heapq.heappush(self.heap, (now + max(self.settle, 1.0), version, path))
                        continue
                    del self.seen[path]
                    self._hold(path, None)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    del self.seen[path]
                    self._hold(path, None)
                    continue
                if (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
                    seen.size, seen.mtime_ns, seen.since = st.st_size, st.st_mtime_ns, now
                if now - seen.since < self.settle:
                    heapq.heappush(self.heap, (seen.since + self.settle, version, path))
                elif seen.writing:  # its writer has not closed it: look again later
                    self._hold(path, NOT_CLOSED)
                    heapq.heappush(self.heap, (now + max(self.settle, 0.1), version, path))
                else:
                    ready.append(path)
        if ready:
            ids = {p: _devino(self.root_of(p), p) for p in ready}
            writing = open_for_writing({i for i in ids.values() if i is not None})
            busy = {p for p in ready if ids[p] in writing}
            for p in busy:  # still open: look again after another settle period
                self._recheck(p, now, now + max(self.settle, 0.1))
            ready = [p for p in ready if p not in busy]
        return self._whole(ready, now) if ready and self.grace is not None else ready

    def _whole(self, ready: list[bytes], now: float) -> list[bytes]:
        """The settled files that do not look cut short, or have waited `grace` s
        unchanged; the others wait until they change (an event, a rescan) or that long."""
        assert self.grace is not None
        out = []
        for p in ready:
            try:
                why = self._cut_short(p)
            except OSError:  # EMFILE and the like (open_source_beneath raises only those):
                with self.lock:  # it stays a candidate, looked at again later
                    if (seen := self.seen.get(p)) is not None:
                        heapq.heappush(self.heap, (now + max(self.settle, 1.0), seen.version, p))
                continue
            with self.lock:
                seen = self.seen.get(p)
                if why is not None and seen is not None and now - seen.since < self.grace:
                    self._hold(
                        p,
                        f"{CUT_SHORT}: {why}; looked at again when it changes, "
                        f"else filed as it is after {self.grace:g} s unchanged",
                    )
                    heapq.heappush(self.heap, (seen.since + self.grace, seen.version, p))
                    continue
                if why is not None:
                    self.filed_short.append((p, why))
                self._hold(p, None)
            out.append(p)
        return out

    def _cut_short(self, path: bytes) -> str | None:
        src = open_source_beneath(self.root_of(path), path)
        if isinstance(src, Unusable):
            return None  # the worker says what is wrong with it
        try:
            assert src.fd is not None and src.st is not None
            return cut_short(src.fd, src.st.st_size)
        finally:
            src.close()

    def next_due(self) -> float:
        """When the earliest candidate could be due (infinity when there is none)."""
        with self.lock:
            return self.heap[0][0] if self.heap else float("inf")

    def _recheck(self, path: bytes, since: float, at: float) -> None:
        with self.lock:
            if (seen := self.seen.get(path)) is not None:
                seen.since = since
                heapq.heappush(self.heap, (at, seen.version, path))

    def taken(self, path: bytes) -> None:
        with self.lock:
            self.seen.pop(path, None)
            self._hold(path, None)

    def waiting(self) -> list[tuple[bytes, float]]:
        """(path, seconds since it last changed) for every candidate."""
        now = self.clock()
        with self.lock:
            return [(p, now - s.since) for p, s in self.seen.items()]


def _devino(root: bytes | None, path: bytes) -> tuple[int, int] | None:
    try:
        st = stat_beneath(root, path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def open_for_writing(wanted: Collection[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which of the `wanted` files (dev, ino) some visible process has open for writing
    (/proc). Under ProtectProc=invisible only our own user's processes are visible; the
    settle time covers the rest. Only a descriptor whose inode number (fdinfo `ino:`) is
    one of ours is stat'ed: a stat reaches the file's filesystem, and a hung NFS or FUSE
    server elsewhere on the machine must not freeze the daemon in uninterruptible sleep."""
    out: set[tuple[int, int]] = set()
    inos = {ino for _, ino in wanted}
    if not inos:
        return out
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    me = str(os.getpid())
    for pid in pids:
        if pid == me:
            continue
        fddir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fddir)
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
                    info = f.read(256)
                flags = int(info.split(b"flags:", 1)[1].split()[0], 8)
                if not flags & (os.O_WRONLY | os.O_RDWR):
                    continue
                if b"\nino:" in info and int(info.split(b"\nino:", 1)[1].split()[0]) not in inos:
                    continue  # not one of ours: its filesystem is never asked
                st = os.stat(f"{fddir}/{fd}")
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) in wanted:
                    out.add((st.st_dev, st.st_ino))
            except (OSError, IndexError, ValueError):
                continue
    return out


def candidate_name(name: bytes) -> bool:
    return not is_partial(os.fsdecode(name))


def scan(inbox: bytes) -> Iterator[bytes]:
    """Every candidate entry under the inbox (links not followed; hidden folders skipped).
    Each folder is opened beneath the inbox's descriptor (paths.open_dir_beneath), so a
    folder swapped for a link is never listed, and paths longer than PATH_MAX are found."""
    try:
        root = open_dir(inbox)
    except OSError:
        return
    try:
        stack = [b""]
        while stack:
            rel = stack.pop()
            try:
                fd = open_dir_beneath(root, rel)
            except OSError:
                continue
            try:
                with os.scandir(fd) as it:
                    entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            except OSError:
                continue
            finally:
                os.close(fd)
            for name, is_dir in entries:
                bname = os.fsencode(name)
                if not candidate_name(bname):
                    continue
                sub = rel + b"/" + bname if rel else bname
                if is_dir:
                    stack.append(sub)
                else:
                    yield inbox + b"/" + sub
    finally:
        os.close(root)


# Files a sync tool keeps in the folders it syncs (Syncthing, Android's media scanner):
# a folder holding one, and every folder below it, is long-lived and never removed.
SYNC_MARKERS = (b".stfolder", b".stignore", b".nomedia")


def in_synced_folder(inbox: bytes, folder: bytes) -> bool:
    """Whether `folder`, or a folder above it up to and including the inbox, holds a sync
    tool's marker."""
    d = folder
    while d == inbox or d.startswith(inbox + b"/"):
        if any(os.path.lexists(os.path.join(d, m)) for m in SYNC_MARKERS):
            return True
        d = os.path.dirname(d)
    return False


def prune_empty_dirs(inbox: bytes, start: bytes, quiet_seconds: float, now: float) -> bytes | None:
    """Remove `start` and its empty parents up to (never including) the inbox, when
    nothing changed in them for `quiet_seconds` (a copy may still be creating them),
    unless they are in a synced folder (`in_synced_folder`): a sync tool would remove
    them on the other side too. Returns the folder that was too fresh to judge (ask
    again later), else None."""
    if in_synced_folder(inbox, start):
        return None
    d = start
    while d.startswith(inbox + b"/"):
        try:  # through its parent's descriptor, resolved beneath the inbox: no link
            parent, name = parent_beneath(inbox, d)
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    return None
                if now - st.st_mtime < quiet_seconds:
                    return d
                os.rmdir(name, dir_fd=parent)
            finally:
                os.close(parent)
        except OSError:
            return None  # not empty, or gone: nothing more to do here
        d = os.path.dirname(d)
    return None
