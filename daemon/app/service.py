"""Composition root of the daemon (`mediasortd run`), and what every writing command
shares: the state lock and `prepare` (finish an interrupted undo, replay unfinished jobs)
before any new work is taken. Signal handlers only set events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import config
from ..config import Config
from ..engine.hooks import Hooks
from ..engine.ingest import Finished, Ingestor, Result, Retry
from ..engine.undo import Undoer
from ..errors import CatalogError, ConfigError, ForeignCatalogError, LockedError
from ..files.dirs import fsync_dir, make_dirs, own_like_parent
from ..inbox.scan import Candidates, prune_empty_dirs, scan
from ..inbox.watcher import Watcher
from ..media.metadata import Reader, resolve_timezone
from ..rules.retry import DAEMON
from ..store import db, journal, query
from . import logs, notify, report
from .metrics import Gauges, Metrics, write_textfile
from .pool import Pool
from .testhooks import hooks_from_env


def batch_id(kind: str) -> str:
    return f"{kind}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"


_FLOCK = "hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len, l_pid (Linux)
LOCK_FILE = "lock"
HELD_PUBLISHED = 200  # held-back files named in daemon.json (all are counted)
COMMANDS = ("run", "import", "undo", "adopt", "verify")


class StateLock:
    """One writing mediasortd per catalog. Two locks: an exclusive flock on the state
    directory itself (it holds the catalog, so it cannot be removed, and removing any file
    in it lets no second writer in), and an OFD write lock on {state_dir}/lock, which
    holds "PID COMMAND" for `status` (report.writer asks with F_OFD_GETLK). `check()`
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
            raise LockedError(f"{self.dir}: another mediasortd ({self._holder()}) is using "
                              "this catalog; stop it first, or drop the files into its "
                              "inbox") from None
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
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK,
                        struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what older versions look for
        except OSError:
            os.close(fd)
            raise LockedError(f"{self.path}: another mediasortd ({self._holder()}) is using "
                              "this catalog; stop it first") from None
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
            raise LockedError(f"{self.dir}: the state directory is gone ({e.strerror}); "
                              "stopping: the catalog in use is no longer there") from None
        if (st.st_dev, st.st_ino) != self.dir_id:
            raise LockedError(f"{self.dir}: the state directory was replaced under the "
                              "running mediasortd; stopping") from None
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


PROBE = ".mediasortd-probe"


def writable_folders(cfg: Config) -> list[tuple[str, Path]]:
    """Every folder the daemon writes to, with what it is for."""
    out = [*(("inbox", inbox) for inbox in cfg.inboxes), ("library", cfg.library),
           ("duplicates folder", cfg.duplicates), ("rejected folder", cfg.rejected),
           ("state_dir", cfg.state_dir)]
    if cfg.metrics_textfile is not None:
        out.append(("metrics textfile folder", cfg.metrics_textfile.parent))
    return out


def check_writable(cfg: Config) -> None:
    """The start-up self-check: make each folder the daemon writes to (if missing), then
    really create and remove a probe file in it. A sandbox that leaves a folder read-only
    (the unit's ReadWritePaths=) or a wrong owner is found here, in one line naming the
    folder and what to write, instead of as sources left in the inbox later."""
    # One probe name per catalog, the same on every start: a probe that a crash or a
    # power cut left behind (in the inbox or a quarantine folder) is removed by the next
    # check instead of staying there as a file that no job made.
    name = f"{PROBE}-{hashlib.sha256(os.fsencode(cfg.state_dir)).hexdigest()[:12]}".encode()
    for what, path in writable_folders(cfg):
        raw = os.fsencode(path)
        probe = os.path.join(raw, name)
        try:
            existed = os.path.isdir(raw)
            make_dirs(raw, 0o750 if what == "state_dir" else cfg.dir_mode)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                         | os.O_NOFOLLOW, 0o600)
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)
        except OSError as e:
            how = "cannot be created" if not existed else "is not writable"
            raise ConfigError(
                f"{path}: the {what} ({cfg.source}) {how}: {e.strerror}. Under the systemd "
                f"unit, run `sudo mediasortd --config {cfg.source} unit-paths --write` (or "
                f"`sudo systemctl edit mediasortd` and add [Service] ReadWritePaths=-{path}),"
                " then `sudo systemctl restart mediasortd`; otherwise give the service's "
                "user write access to it") from None


def unit_paths(cfg: Config) -> str:
    """The unit drop-in that makes every folder of the config writable under the sandbox
    (`mediasortd unit-paths`). The `-` prefix: a folder that does not exist yet does not
    stop the unit with 226/NAMESPACE; the self-check then names it."""
    paths: list[str] = []
    for _, path in writable_folders(cfg):
        text = str(path)
        if not any(text == p or text.startswith(p + "/") for p in paths) \
                and not text.startswith("/var/lib/mediasortd"):
            paths.append(text)
    quoted = " ".join("-" + (f'"{p}"' if " " in p else p) for p in paths)
    return (f"# Written by `mediasortd unit-paths` from {cfg.source}: the folders the service\n"
            "# writes to. Run it again after changing [paths] or [metrics] there.\n"
            f"[Service]\nReadWritePaths={quoted}\n")


def check_catalog(cfg: Config, conn: Any, log: Any) -> None:
    """The library knows its catalog: {library}/.mediasortd.library holds the id of the
    catalog that filed it. A new (empty) catalog beside a library that holds files, or a
    catalog the library does not know, is refused (exit 78): starting would file every
    content a second time. Otherwise the marker is written if it is missing."""
    library = os.fsencode(cfg.library)
    ours, theirs = db.catalog_id(conn), report.library_marker(library)
    if theirs == ours:
        return
    empty = db.is_empty(conn)
    if empty and next(report.library_files(library), None) is not None:
        detail = ("this catalog is new, but the library holds files" if theirs is None else
                  f"this catalog ({ours}) is new, but the library was filed by catalog "
                  f"{theirs or '?'}")
    elif theirs is not None and not empty:
        detail = (f"the library was filed by catalog {theirs or '?'}, not by this one "
                  f"({ours})")
    else:
        if theirs is not None:
            log.warning("catalog.library_claimed", library=str(cfg.library),
                        previous=theirs, catalog=ours)
        try:
            claim_library(cfg, conn)
        except OSError as e:  # a library we cannot write to files nothing: said there
            log.warning("catalog.marker_unwritable", library=str(cfg.library),
                        error=f"{e.strerror}: {os.fsdecode(e.filename or b'')}")
        return
    raise ForeignCatalogError(
        f"{cfg.catalog}: {detail} ({cfg.library}). Nothing was started, so nothing is filed "
        "twice. If the catalog was lost or damaged, restore it from a backup or run "
        "`mediasortd verify --repair` to rebuild it from the library; to catalogue an "
        f"existing library for the first time, run `mediasortd adopt {cfg.library}`.")


def claim_library(cfg: Config, conn: Any) -> None:
    """Write this catalog's id into the library's marker (atomically, durably)."""
    library = os.fsencode(cfg.library)
    marker = os.path.join(library, report.MARKER)
    tmp = marker + b".tmp-%d" % os.getpid()
    text = ("# the mediasortd catalog that files this library; if the catalog is lost,\n"
            "# `mediasortd verify --repair` rebuilds it from the files here\n"
            f"catalog_id = {db.catalog_id(conn)}\ncatalog = {cfg.catalog}\n")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
        os.rename(tmp, marker)
    except BaseException:
        os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    fsync_dir(library)


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


def make_reader(cfg: Config) -> Callable[[], Reader]:
    return lambda: Reader(timezone=cfg.timezone)


def prepare(cfg: Config, log: Any, hooks: Hooks, companion_grace: float = 0.0, *,
            check: bool = True) -> list[tuple[int, bytes, float]]:
    """Make the library's folders, finish an interrupted undo, and replay every unfinished
    job once, here, before any new work is taken (then remove staging files no job owns).
    Returns the jobs that must wait (job id, source, seconds) for the pool to retry."""
    for path in (cfg.library, cfg.staging):
        make_dirs(os.fsencode(path), 0o700 if path == cfg.staging else cfg.dir_mode)
    conn = db.connect(cfg.catalog)
    try:
        if check:  # not for `verify --repair` and `adopt`: they make the catalog whole
            check_catalog(cfg, conn, log)
    except BaseException:
        conn.close()
        raise
    reader = Reader(timezone=cfg.timezone)
    committer: db.Committer | None = None
    try:
        Undoer(cfg, conn, log, hooks).replay()  # an interrupted `undo` is finished first
        committer = db.Committer(cfg.catalog)
        ingest = Ingestor(cfg, conn, reader, batch=batch_id("replay"), log=log, hooks=hooks,
                          companion_grace=companion_grace, committer=committer)
        if pending := journal.pending(conn):
            log.info("replay.started", jobs=pending)
        results = ingest.replay()
    finally:
        if committer is not None:
            committer.close()
        reader.close()
        conn.close()
    waiting = [(r.job.id, r.job.source, r.after) for r in results if isinstance(r, Retry)]
    if results:
        log.info("replay.finished", jobs=len(results), waiting=len(waiting))
    return waiting


# -- run ----------------------------------------------------------------------------------

STALL_SECONDS = 600.0  # one file in hand longer than this: the worker counts as wedged
# keys a reload (SIGHUP) cannot apply to the running daemon: logged as "needs a restart"
RESTART_KEYS = ("state_dir", "library", "duplicates", "rejected", "workers", "queue_size")
STATE_FILE = "daemon.json"  # {state_dir}/daemon.json: what `status` cannot see otherwise


class Daemon:
    """`mediasortd run`: replay, then watch the inbox and file what settles there."""

    def __init__(self, cfg: Config, log: Any, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.log = log
        self.clock = clock
        self.inboxes = tuple(os.fsencode(i) for i in cfg.inboxes)
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.reload_due = threading.Event()
        self.reload_error = ""  # the last reload's config error (the old config runs on)
        self.needs_restart: list[str] = []  # changed keys that only a restart applies
        self.watchers: dict[bytes, Watcher] = {}  # one per inbox
        self.lock: StateLock | None = None
        self.fatal: BaseException | None = None
        self.rescan_due = threading.Event()
        self.candidates = Candidates(cfg.settle_seconds, capacity=max(10 * cfg.queue_size, 1000),
                                     clock=clock, root_of=self._inbox_of,
                                     grace=cfg.incomplete_grace_seconds)
        # settled candidates waiting for room in the queue, in arrival order (a burst
        # larger than the queue waits here, not re-checked: the worker checks again)
        self.ready: dict[bytes, None] = {}
        self.base_counts: dict[str, int] = {}
        self.finished_dirs: set[bytes] = set()
        self.pool: Pool | None = None
        self.last_busy = clock()  # the last moment a file was queued or in hand
        self.batch = ""
        self.batch_seq = 1
        self.readers: list[Reader] = []  # every worker's, for their ExifTool restarts
        self.metrics: Metrics | None = None
        self.metrics_conn: Any = None
        self.metrics_error = ""
        self.guard: CatalogGuard | None = None
        self.catalog_lost = ""
        self.published = (-1, 0)  # (held files version, lease troubles) last published

    def request_stop(self, signum: int = 0, frame: object = None) -> None:
        self.stop.set()
        self.wake.set()

    def request_reload(self, signum: int = 0, frame: object = None) -> None:
        self.reload_due.set()
        self.wake.set()

    def run(self) -> int:
        cfg, log = self.cfg, self.log
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)  # never stops the daemon
        check_writable(cfg)
        self.lock = lock = StateLock(cfg, "run")
        try:
            hooks = hooks_from_env()
            unfinished = prepare(cfg, log, hooks, cfg.companion_grace_seconds)
            self.guard = CatalogGuard(cfg.catalog)
            conn: Any = db.connect(cfg.catalog)
            try:
                self.base_counts = journal.counts(conn)
                if cfg.metrics_textfile is not None:
                    self.metrics = Metrics(self.base_counts, query.filed_bytes(conn), time.time())
                    self.metrics_conn, conn = conn, None  # kept open for the gauges
            finally:
                if conn is not None:
                    conn.close()
            self.pool = pool = Pool(cfg, move=True, batch=self._new_batch(), log=log,
                                    make_reader=self._make_reader, policy=DAEMON, hooks=hooks,
                                    on_result=self._on_result, clock=self.clock,
                                    companion_grace=cfg.companion_grace_seconds)
            pool.start()
            pool.replay(unfinished)
            for inbox in self.inboxes:
                self.watchers[inbox] = self._watch(inbox)
            self._rescan()
            self._publish()
            notify.send("READY=1", f"STATUS={self.status_line()}")
            log.info("daemon.ready", inbox=", ".join(map(str, cfg.inboxes)),
                     library=str(cfg.library),
                     workers=cfg.workers, replayed=len(unfinished), batch=self.batch)
            self._write_metrics()
            self._serve(pool)
        finally:
            notify.send("STOPPING=1", "STATUS=stopping: finishing the files in hand")
            log.info("daemon.stopping")
            for watcher in self.watchers.values():
                watcher.stop()
            if self.pool is not None:
                self.pool.stop()
            if self.metrics_conn is not None:
                self._write_metrics()
                self.metrics_conn.close()
            if self.guard is not None:
                self.guard.close()
            lock.release()
        if self.catalog_lost:
            raise CatalogError(f"{cfg.catalog}: {self.catalog_lost} while the daemon was "
                               "running; stopped so that nothing more is recorded in a "
                               "catalog no one will read. What was filed is in the library: "
                               "`mediasortd verify --repair` rebuilds the catalog from it")
        if self.pool is not None and self.pool.errors:
            raise self.pool.errors[0]
        if self.fatal is not None:
            raise self.fatal
        log.info("daemon.stopped")
        return 0

    def _serve(self, pool: Pool) -> None:
        ping_every = notify.watchdog_interval()
        next_ping = next_status = self.clock()
        next_rescan = self.clock() + self.cfg.rescan_seconds
        next_metrics = self.clock() + self.cfg.metrics_interval
        last_status = ""
        while not self.stop.is_set():
            tick = min(0.25, max(self.cfg.settle_seconds / 4, 0.02))
            # sleep until the next candidate could be due (latency), at most one tick
            due_in = self.candidates.next_due() - self.clock()
            self.wake.wait(min(tick, max(due_in, 0.0), 0.05 if self.ready else tick))
            self.wake.clear()
            now = self.clock()
            if pool.errors:
                self.log.error("daemon.worker_failed", error=str(pool.errors[0]))
                return
            if self.reload_due.is_set():
                self._reload()
                last_status = ""
            for watcher in list(self.watchers.values()):
                if not watcher.alive() and not self.stop.is_set():
                    error = watcher.restart()
                    self.log.warning("watcher.restarted", inbox=os.fsdecode(watcher.inbox),
                                     reason="an observer thread died", error=error)
                    self.candidates.events_lost()
                    self.rescan_due.set()
            due = self.candidates.due()
            if due and not pool.busy() and now - self.last_busy >= self.cfg.batch_idle_seconds:
                if not self._lock_ok():  # each batch: is the catalog still ours alone?
                    return
                pool.batch = self._new_batch()  # a new burst after a quiet inbox
                self.log.info("daemon.batch_started", batch=pool.batch)
            self.ready.update(dict.fromkeys(due))
            while self.candidates.newly_held:
                path, why = self.candidates.newly_held.pop(0)
                self.log.info("watcher.held", source=os.fsdecode(path), reason=why)
            while self.candidates.filed_short:
                path, why = self.candidates.filed_short.pop()
                self.log.warning("watcher.filed_cut_short", source=os.fsdecode(path), reason=why,
                                 note=f"unchanged for {self.cfg.incomplete_grace_seconds:g} s: "
                                 "filed as it is")
            for path in list(self.ready):
                if not pool.offer(path):
                    break  # queue full: the rest wait for the next round, in order
                del self.ready[path]
                self.candidates.taken(path)
            # a rescan (overflow, folder moved in) as soon as half the candidates are
            # gone, not once the queue is empty: what it finds settles while the workers
            # still have work (waiting for an empty queue idled them settle_seconds
            # per 5,000 files of a large burst)
            if now >= next_rescan or (self.rescan_due.is_set()
                                      and len(self.candidates) < self.candidates.capacity // 2):
                self._rescan()
                next_rescan = now + self.cfg.rescan_seconds
            self._prune_dirs(now)
            if (self.candidates.held_version, len(pool.lease_trouble)) != self.published:
                self._publish()  # files held back, and why; why no lease can be had
            if pool.busy():
                self.last_busy = now
            if self.metrics is not None and now >= next_metrics:
                self._write_metrics()
                next_metrics = now + self.cfg.metrics_interval
            if ping_every is not None and now >= next_ping:
                alive = all(w.alive() for w in self.watchers.values())
                if alive and pool.healthy(STALL_SECONDS):
                    notify.send("WATCHDOG=1")
                else:
                    self.log.error("daemon.unhealthy", watcher_alive=alive)
                next_ping = now + ping_every
            if now >= next_status:
                if not self._lock_ok():
                    return
                if self.guard is not None and (lost := self.guard.lost()):
                    self.log.error("daemon.catalog_lost", catalog=str(self.cfg.catalog),
                                   error=lost)
                    self.catalog_lost = lost
                    return
                line = self.status_line()
                if line != last_status:
                    notify.send(f"STATUS={line}")
                    last_status = line
                next_status = now + 1.0

    # -- event callbacks (observer and worker threads: they only record and wake) --------

    def _on_file(self, path: bytes) -> None:
        self.candidates.add(path)
        self.wake.set()  # look at it now, so its settle time starts now

    def _on_closed(self, path: bytes) -> None:
        self.candidates.add(path, closed=True)
        self.wake.set()

    def _on_dir(self, path: bytes) -> None:
        self.rescan_due.set()  # a folder moved in brings files without events of their own

    def _on_overflow(self) -> None:
        self.log.warning("watcher.overflowed")
        self.candidates.events_lost()
        self.rescan_due.set()

    def _on_result(self, result: Result) -> None:
        if self.metrics is not None:
            self.metrics.observe(result)
        if isinstance(result, Finished):
            parent = os.path.dirname(result.job.source)
            if parent not in self.inboxes:
                with self.candidates.lock:
                    self.finished_dirs.add(parent)

    def _new_batch(self) -> str:
        """`run-<UTC time>-<pid>`, made unique within the second (`.2`, `.3`, ...)."""
        new = batch_id("run")
        if self.batch.split(".")[0] == new:  # a second burst within the same second
            self.batch_seq += 1
            new = f"{new}.{self.batch_seq}"
        else:
            self.batch_seq = 1
        self.batch = new
        return new

    def _make_reader(self) -> Reader:
        reader = Reader(timezone=self.cfg.timezone)
        self.readers.append(reader)
        return reader

    def _write_metrics(self) -> None:
        """Rewrite the metrics textfile; trouble is logged once and never stops the daemon."""
        path, pool = self.cfg.metrics_textfile, self.pool
        if self.metrics is None or path is None:
            return
        try:
            try:
                vfs = os.statvfs(self.cfg.library)
                free: int | None = vfs.f_bavail * vfs.f_frsize
            except OSError:
                free = None
            gauges = Gauges(queue_depth=pool.queued() if pool else 0,
                            inbox_waiting=len(self.candidates),
                            jobs_pending=query.pending_jobs(self.metrics_conn),
                            library_full=bool(pool and pool.library_full),
                            library_free_bytes=free,
                            exiftool_restarts=sum(r.restarts for r in list(self.readers)),
                            workers=self.cfg.workers)
            write_textfile(path, self.metrics.render(gauges))
            self.metrics_error = ""
        except Exception as e:  # noqa: BLE001 - metrics must never stop the filing
            if str(e) != self.metrics_error:
                self.log.warning("metrics.write_failed", path=str(path), error=str(e))
                self.metrics_error = str(e)

    def _inbox_of(self, path: bytes) -> bytes | None:
        """The inbox a path lies in (its folders are looked at beneath it, no link)."""
        for inbox in self.inboxes:
            if path.startswith(inbox + b"/"):
                return inbox
        return None

    def _rescan(self) -> None:
        try:
            self._scan_inbox()
        except OSError as e:  # out of descriptors, the inbox unreadable a moment: later
            self.log.warning("watcher.scan_failed", error=str(e))
            self.rescan_due.set()

    def _scan_inbox(self) -> None:
        self.rescan_due.clear()
        self.candidates.overflowed.clear()
        n = 0
        for inbox in self.inboxes:
            for path in scan(inbox):
                self.candidates.add(path)
                n += 1
                if self.candidates.overflowed.is_set():
                    self.rescan_due.set()  # more than fits: scan again once these are filed
                    break
        self.log.debug("watcher.scanned", files=n)

    def _prune_dirs(self, now: float) -> None:
        with self.candidates.lock:
            dirs, self.finished_dirs = self.finished_dirs, set()
        if not self.cfg.prune_folders:
            return
        quiet = max(self.cfg.settle_seconds, 1.0)
        try:
            fresh = {f for d in dirs for inbox in self.inboxes if d.startswith(inbox + b"/")
                     and (f := prune_empty_dirs(inbox, d, quiet, time.time()))}
        except OSError as e:  # tried again with the next finished file
            self.log.warning("watcher.prune_failed", error=str(e))
            fresh = dirs
        if fresh:
            with self.candidates.lock:
                self.finished_dirs |= fresh

    # -- reload (SIGHUP), the lock, what `status` reads -----------------------------------

    def _watch(self, inbox: bytes) -> Watcher:
        watcher = Watcher(inbox, on_file=self._on_file, on_dir=self._on_dir,
                          on_overflow=self._on_overflow, on_write=self.candidates.modified,
                          on_close=self._on_closed)
        watcher.start()
        return watcher

    def _reload(self) -> None:
        """Re-read the config file and apply what can change live; a config with an error
        (or a folder the service cannot write) leaves the old one running, and says so in
        the log, STATUS= and `status`. Never stops the daemon."""
        self.reload_due.clear()
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notify.send("RELOADING=1", f"MONOTONIC_USEC={usec}",
                    "STATUS=reloading the configuration")
        old = self.cfg
        try:
            new = config.load(old.source)
            fixed = {k: getattr(old, k) for k in RESTART_KEYS
                     if getattr(new, k) != getattr(old, k)}
            new = dataclasses.replace(new, **fixed)
            check_writable(new)
        except ConfigError as e:
            self.reload_error = str(e)
            self.log.error("daemon.reload_failed", error=str(e), config=old.source,
                           kept="the previous configuration")
        else:
            self.reload_error = ""
            try:
                self._apply(old, new, sorted(fixed))
            except Exception as e:  # noqa: BLE001 - a reload never stops the daemon
                self.reload_error = f"applying it failed: {e}"
                self.log.error("daemon.reload_failed", error=self.reload_error,
                               config=old.source)
        self._publish()
        notify.send("READY=1", f"STATUS={self.status_line()}")

    def _apply(self, old: Config, new: Config, restart: list[str]) -> None:
        changed = [f.name for f in dataclasses.fields(Config)
                   if f.name not in ("source", "extra") and getattr(new, f.name) != getattr(
                       old, f.name)]
        # first what can fail (a new connection, a new inotify watch): then nothing else
        # has changed yet, and the old config runs on
        if new.metrics_textfile is not None and self.metrics is None:
            conn = db.connect(new.catalog)
            self.metrics = Metrics(journal.counts(conn), query.filed_bytes(conn), time.time())
            self.metrics_conn = conn
        if new.inboxes != old.inboxes:
            self._switch_inboxes(tuple(os.fsencode(i) for i in new.inboxes))
        if (new.log_level, new.log_format) != (old.log_level, old.log_format):
            logs.configure(new.log_level, new.log_format)
        self.cfg = new
        if self.pool is not None:
            self.pool.cfg = new  # each worker takes it up before its next files
            self.pool.companion_grace = new.companion_grace_seconds
        self.candidates.settle = new.settle_seconds
        self.candidates.grace = new.incomplete_grace_seconds
        if new.timezone != old.timezone:
            tz = resolve_timezone(new.timezone)
            for reader in list(self.readers):
                reader.tz = tz
        self.needs_restart = restart  # the file's values that differ from the running ones
        if restart:
            self.log.warning("daemon.reload_needs_restart", keys=",".join(restart),
                             detail="these keys changed but apply only after "
                                    "`systemctl restart mediasortd`")
        self.log.info("daemon.reloaded", config=new.source, changed=",".join(changed) or None,
                      inbox=", ".join(map(str, new.inboxes)))

    def _switch_inboxes(self, inboxes: tuple[bytes, ...]) -> None:
        """Stop watching the inboxes that left the config, start on the new ones. Files of
        an old one already queued are filed; the ones still settling there are dropped
        (left in place)."""
        gone = [i for i in self.inboxes if i not in inboxes]
        for inbox in inboxes:  # first: if a watch cannot start, the old set runs on
            if inbox not in self.watchers:
                self.watchers[inbox] = self._watch(inbox)
        self.inboxes = inboxes
        for inbox in gone:
            self.watchers.pop(inbox).stop()
        prefixes = tuple(i + b"/" for i in gone)
        if prefixes:
            with self.candidates.lock:
                for path in [p for p in self.candidates.seen if p.startswith(prefixes)]:
                    del self.candidates.seen[path]
                self.finished_dirs = {d for d in self.finished_dirs
                                      if not d.startswith(prefixes)}
            for path in [p for p in self.ready if p.startswith(prefixes)]:
                del self.ready[path]
        self._rescan()
        self.log.info("daemon.inboxes_changed", inbox=", ".join(map(os.fsdecode, inboxes)),
                      stopped=", ".join(map(os.fsdecode, gone)) or None)

    def _lock_ok(self) -> bool:
        """Re-check the state lock; False (the daemon stops) when the catalog is no longer
        ours alone. A removed lock file is made again."""
        if self.lock is None:
            return True
        try:
            note = self.lock.check()
        except LockedError as e:
            self.log.error("daemon.lock_lost", error=str(e))
            self.fatal = e
            return False
        if note:
            self.log.warning("daemon.lock_remade", detail=note)
            self._publish()
        return True

    def _publish(self) -> None:
        """{state_dir}/daemon.json: what `status` shows of this daemon beyond the catalog
        (a failed reload, keys that need a restart, the inbox watched). Best effort."""
        with self.candidates.lock:
            version = self.candidates.held_version
            held = dict(itertools.islice(self.candidates.held.items(), HELD_PUBLISHED))
            n_held = len(self.candidates.held)
        trouble = sorted(self.pool.lease_trouble) if self.pool is not None else []
        self.published = (version, len(trouble))
        state = {"pid": os.getpid(), "config": self.cfg.source,
                 "inboxes": [str(i) for i in self.cfg.inboxes],
                 "config_error": self.reload_error, "needs_restart": self.needs_restart,
                 # why a file the daemon sees is not taken yet (path: why), and how many
                 "held": {os.fsdecode(p): why for p, why in held.items()}, "held_files": n_held,
                 # why no read lease can be had (then the settle rule is all there is)
                 "no_lease": trouble, "settle_seconds": self.cfg.settle_seconds}
        path = self.cfg.state_dir / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(state) + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as e:
            self.log.warning("daemon.state_unwritten", path=str(path), error=e.strerror)

    def status_line(self) -> str:
        pool = self.pool
        counts = dict(self.base_counts)
        if pool is not None:
            for k, n in pool.counts.items():
                counts[k] = counts.get(k, 0) + n
        queued = (pool.queued() if pool else 0) + len(self.candidates)
        head = f"watching {', '.join(map(str, self.cfg.inboxes))}"
        if pool is not None and pool.library_full:
            head = f"library full, waiting for space; {head}"
        if pool is not None and pool.lease_trouble:
            head = (f"no read lease ({'; '.join(sorted(pool.lease_trouble))}): filing on the "
                    f"settle guess; {head}")
        if self.reload_error:
            head = (f"config reload failed, running on the previous config "
                    f"({self.reload_error}); {head}")
        elif self.needs_restart:
            head = f"restart to apply {', '.join(self.needs_restart)}; {head}"
        if pool is not None and pool.state:
            head = (f"catalog's filesystem {pool.state} ({self.cfg.state_dir}), waiting; "
                    f"{head}")
        return (f"{head}: {queued:,} queued, {counts.get('filed', 0):,} filed, "
                f"{counts.get('duplicate', 0):,} duplicates, {counts.get('rejected', 0):,} "
                f"rejected, {counts.get('failed', 0):,} failed")


def run(cfg: Config, *, log: Any) -> int:
    return Daemon(cfg, log).run()
