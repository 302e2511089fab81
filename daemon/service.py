"""Composition root of the daemon (`mediasortd run`), and what every writing command
shares: the state lock and `prepare` (finish an interrupted undo, replay unfinished jobs)
before any new work is taken. Signal handlers only set events.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import db, journal, notify, query
from .config import Config
from .errors import LockedError
from .fsops import make_dirs
from .ingest import Finished, Hook, Ingestor, Result, Retry, kill_hook_from_env
from .metadata import Reader
from .metrics import Gauges, Metrics, write_textfile
from .pool import Pool
from .undo import Undoer
from .watcher import Candidates, Watcher, prune_empty_dirs, scan


def batch_id(kind: str) -> str:
    return f"{kind}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"


class StateLock:
    """An exclusive flock on {state_dir}/lock: one writing mediasortd per catalog."""

    def __init__(self, cfg: Config) -> None:
        make_dirs(os.fsencode(cfg.state_dir), 0o750)  # durable: its parent is fsynced
        self.path = cfg.state_dir / "lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise LockedError(f"{self.path}: another mediasortd (pid {holder}) is using this "
                              "catalog; stop it first, or drop the files into its inbox") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        os.close(self.fd)


def make_reader(cfg: Config) -> Callable[[], Reader]:
    return lambda: Reader(timezone=cfg.timezone)


def prepare(cfg: Config, log: Any, hook: Hook,
            companion_grace: float = 0.0) -> list[tuple[int, bytes, float]]:
    """Make the library's folders, finish an interrupted undo, and replay every unfinished
    job once, here, before any new work is taken (then remove staging files no job owns).
    Returns the jobs that must wait (job id, source, seconds) for the pool to retry."""
    for path in (cfg.library, cfg.staging):
        make_dirs(os.fsencode(path), 0o700 if path == cfg.staging else cfg.dir_mode)
    conn = db.connect(cfg.catalog)
    reader = Reader(timezone=cfg.timezone)
    try:
        Undoer(cfg, conn, log).replay()  # an interrupted `undo` is finished first
        ingest = Ingestor(cfg, conn, reader, batch=batch_id("replay"), log=log, hook=hook,
                          companion_grace=companion_grace)
        if pending := journal.pending(conn):
            log.info("replay.started", jobs=pending)
        results = ingest.replay()
    finally:
        reader.close()
        conn.close()
    waiting = [(r.job.id, r.job.source, r.after) for r in results if isinstance(r, Retry)]
    if results:
        log.info("replay.finished", jobs=len(results), waiting=len(waiting))
    return waiting


# -- run ----------------------------------------------------------------------------------

STALL_SECONDS = 600.0  # one file in hand longer than this: the worker counts as wedged


class Daemon:
    """`mediasortd run`: replay, then watch the inbox and file what settles there."""

    def __init__(self, cfg: Config, log: Any, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.log = log
        self.clock = clock
        self.inbox = os.fsencode(cfg.inbox)
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.rescan_due = threading.Event()
        self.candidates = Candidates(cfg.settle_seconds, capacity=max(10 * cfg.queue_size, 1000),
                                     clock=clock)
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

    def request_stop(self, signum: int = 0, frame: object = None) -> None:
        self.stop.set()
        self.wake.set()

    def run(self) -> int:
        cfg, log = self.cfg, self.log
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        make_dirs(os.fsencode(cfg.inbox), 0o750)
        lock = StateLock(cfg)
        watcher: Watcher | None = None
        try:
            hook = kill_hook_from_env()
            unfinished = prepare(cfg, log, hook, cfg.companion_grace_seconds)
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
                                    make_reader=self._make_reader, max_attempts=None, hook=hook,
                                    on_result=self._on_result, clock=self.clock,
                                    companion_grace=cfg.companion_grace_seconds)
            pool.start()
            pool.replay(unfinished)
            watcher = Watcher(self.inbox, on_file=self._on_file, on_dir=self._on_dir,
                              on_overflow=self._on_overflow)
            watcher.start()
            self._rescan()
            notify.send("READY=1", f"STATUS={self.status_line()}")
            log.info("daemon.ready", inbox=str(cfg.inbox), library=str(cfg.library),
                     workers=cfg.workers, replayed=len(unfinished), batch=self.batch)
            self._write_metrics()
            self._serve(watcher, pool)
        finally:
            notify.send("STOPPING=1", "STATUS=stopping: finishing the files in hand")
            log.info("daemon.stopping")
            if watcher is not None:
                watcher.stop()
            if self.pool is not None:
                self.pool.stop()
            if self.metrics_conn is not None:
                self._write_metrics()
                self.metrics_conn.close()
            lock.release()
        if self.pool is not None and self.pool.errors:
            raise self.pool.errors[0]
        log.info("daemon.stopped")
        return 0

    def _serve(self, watcher: Watcher, pool: Pool) -> None:
        ping_every = notify.watchdog_interval()
        tick = min(0.25, max(self.cfg.settle_seconds / 4, 0.02))
        next_ping = next_status = self.clock()
        next_rescan = self.clock() + self.cfg.rescan_seconds
        next_metrics = self.clock() + self.cfg.metrics_interval
        last_status = ""
        while not self.stop.is_set():
            # sleep until the next candidate could be due (latency), at most one tick
            due_in = self.candidates.next_due() - self.clock()
            self.wake.wait(min(tick, max(due_in, 0.0), 0.05 if self.ready else tick))
            self.wake.clear()
            now = self.clock()
            if pool.errors:
                self.log.error("daemon.worker_failed", error=str(pool.errors[0]))
                return
            due = self.candidates.due()
            if due and not pool.busy() and now - self.last_busy >= self.cfg.batch_idle_seconds:
                pool.batch = self._new_batch()  # a new burst after a quiet inbox
                self.log.info("daemon.batch_started", batch=pool.batch)
            self.ready.update(dict.fromkeys(due))
            for path in list(self.ready):
                if not pool.offer(path):
                    break  # queue full: the rest wait for the next round, in order
                del self.ready[path]
                self.candidates.taken(path)
            if now >= next_rescan or (self.rescan_due.is_set() and pool.queued() == 0
                                      and len(self.candidates) < self.candidates.capacity // 2):
                self._rescan()
                next_rescan = now + self.cfg.rescan_seconds
            self._prune_dirs(now)
            if pool.busy():
                self.last_busy = now
            if self.metrics is not None and now >= next_metrics:
                self._write_metrics()
                next_metrics = now + self.cfg.metrics_interval
            if ping_every is not None and now >= next_ping:
                if watcher.alive() and pool.healthy(STALL_SECONDS):
                    notify.send("WATCHDOG=1")
                else:
                    self.log.error("daemon.unhealthy", watcher_alive=watcher.alive())
                next_ping = now + ping_every
            if now >= next_status:
                line = self.status_line()
                if line != last_status:
                    notify.send(f"STATUS={line}")
                    last_status = line
                next_status = now + 1.0

    # -- event callbacks (observer and worker threads: they only record and wake) --------

    def _on_file(self, path: bytes) -> None:
        self.candidates.add(path)
        self.wake.set()  # look at it now, so its settle time starts now

    def _on_dir(self, path: bytes) -> None:
        self.rescan_due.set()  # a folder moved in brings files without events of their own

    def _on_overflow(self) -> None:
        self.log.warning("watcher.overflowed")
        self.rescan_due.set()

    def _on_result(self, result: Result) -> None:
        if self.metrics is not None:
            self.metrics.observe(result)
        if isinstance(result, Finished):
            parent = os.path.dirname(result.job.source)
            if parent != self.inbox:
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

    def _rescan(self) -> None:
        self.rescan_due.clear()
        self.candidates.overflowed.clear()
        n = 0
        for path in scan(self.inbox):
            self.candidates.add(path)
            n += 1
            if self.candidates.overflowed.is_set():
                self.rescan_due.set()  # more than fits: scan again once these are filed
                break
        self.log.debug("watcher.scanned", files=n)

    def _prune_dirs(self, now: float) -> None:
        with self.candidates.lock:
            dirs, self.finished_dirs = self.finished_dirs, set()
        quiet = max(self.cfg.settle_seconds, 1.0)
        fresh = {f for d in dirs if (f := prune_empty_dirs(self.inbox, d, quiet, time.time()))}
        if fresh:
            with self.candidates.lock:
                self.finished_dirs |= fresh

    def status_line(self) -> str:
        pool = self.pool
        counts = dict(self.base_counts)
        if pool is not None:
            for k, n in pool.counts.items():
                counts[k] = counts.get(k, 0) + n
        queued = (pool.queued() if pool else 0) + len(self.candidates)
        head = f"watching {self.cfg.inbox}"
        if pool is not None and pool.library_full:
            head = f"library full, waiting for space; {head}"
        return (f"{head}: {queued:,} queued, {counts.get('filed', 0):,} filed, "
                f"{counts.get('duplicate', 0):,} duplicates, {counts.get('rejected', 0):,} "
                f"rejected, {counts.get('failed', 0):,} failed")


def run(cfg: Config, *, log: Any) -> int:
    return Daemon(cfg, log).run()
