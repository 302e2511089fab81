"""Composition root of the daemon (`mediasortd run`): the state lock, `prepare` (replay),
the pool of workers, the inbox feed, metrics, reloads (SIGHUP) and what `status` reads of
it, wired together and run until a signal stops it. Signal handlers only set events.
Crash invariant: nothing is taken from an inbox before `prepare` finished the last run.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import config
from ..config import Config
from ..engine.ingest import Finished, Result
from ..errors import CatalogError, ConfigError, LockedError
from ..media.metadata import Reader, resolve_timezone
from ..rules.retry import DAEMON
from ..store import db, journal, query
from . import logs, notify, report
from .feed import InboxFeed
from .lock import CatalogGuard, StateLock
from .metrics import Gauges, Metrics, write_textfile
from .pool import Pool
from .runtime import check_writable, next_batch, prepare
from .testhooks import hooks_from_env

STALL_SECONDS = 600.0  # one file in hand longer than this: the worker counts as wedged
# keys a reload (SIGHUP) cannot apply to the running daemon: logged as "needs a restart"
RESTART_KEYS = ("state_dir", "library", "duplicates", "rejected", "workers", "queue_size")
HELD_PUBLISHED = 200  # held-back files named in daemon.json (all are counted)


class Daemon:
    """`mediasortd run`: replay, then watch the inbox and file what settles there."""

    def __init__(self, cfg: Config, log: Any, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.log = log
        self.clock = clock
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.reload_due = threading.Event()
        self.reload_error = ""  # the last reload's config error (the old config runs on)
        self.needs_restart: list[str] = []  # changed keys that only a restart applies
        self.lock: StateLock | None = None
        self.fatal: BaseException | None = None
        self.feed = InboxFeed(cfg, log, self.wake, clock)
        self.base_counts: dict[str, int] = {}
        self.pool: Pool | None = None
        self.last_busy = clock()  # the last moment a file was queued or in hand
        self.batch = ""
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
            self.pool = pool = Pool(
                cfg,
                move=True,
                batch=self._new_batch(),
                log=log,
                make_reader=self._make_reader,
                policy=DAEMON,
                hooks=hooks,
                on_result=self._on_result,
                clock=self.clock,
                companion_grace=cfg.companion_grace_seconds,
            )
            pool.start()
            pool.replay(unfinished)
            self.feed.start()
            self._publish()
            notify.send("READY=1", f"STATUS={self.status_line()}")
            log.info(
                "daemon.ready",
                inbox=", ".join(map(str, cfg.inboxes)),
                library=str(cfg.library),
                workers=cfg.workers,
                replayed=len(unfinished),
                batch=self.batch,
            )
            self._write_metrics()
            self._serve(pool)
        finally:
            notify.send("STOPPING=1", "STATUS=stopping: finishing the files in hand")
            log.info("daemon.stopping")
            self.feed.stop()
            if self.pool is not None:
                self.pool.stop()
            if self.metrics_conn is not None:
                self._write_metrics()
                self.metrics_conn.close()
            if self.guard is not None:
                self.guard.close()
            lock.release()
        if self.catalog_lost:
            raise CatalogError(
                f"{cfg.catalog}: {self.catalog_lost} while the daemon was "
                "running; stopped so that nothing more is recorded in a "
                "catalog no one will read. What was filed is in the library: "
                "`mediasortd verify --repair` rebuilds the catalog from it"
            )
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
            due_in = self.feed.candidates.next_due() - self.clock()
            self.wake.wait(min(tick, max(due_in, 0.0), 0.05 if self.feed.ready else tick))
            self.wake.clear()
            now = self.clock()
            if pool.errors:
                self.log.error("daemon.worker_failed", error=str(pool.errors[0]))
                return
            if self.reload_due.is_set():
                self._reload()
                last_status = ""
            self.feed.restart_dead(self.stop)
            due = self.feed.settle()
            if due and not pool.busy() and now - self.last_busy >= self.cfg.batch_idle_seconds:
                if not self._lock_ok():  # each batch: is the catalog still ours alone?
                    return
                pool.batch = self._new_batch()  # a new burst after a quiet inbox
                self.log.info("daemon.batch_started", batch=pool.batch)
            self.feed.offer(pool)
            if now >= next_rescan or self.feed.rescan_wanted():
                self.feed.rescan()
                next_rescan = now + self.cfg.rescan_seconds
            self.feed.prune()
            if (self.feed.candidates.held_version, len(pool.lease_trouble)) != self.published:
                self._publish()  # files held back, and why; why no lease can be had
            if pool.busy():
                self.last_busy = now
            if self.metrics is not None and now >= next_metrics:
                self._write_metrics()
                next_metrics = now + self.cfg.metrics_interval
            if ping_every is not None and now >= next_ping:
                alive = self.feed.alive()
                if alive and pool.healthy(STALL_SECONDS):
                    notify.send("WATCHDOG=1")
                else:
                    self.log.error("daemon.unhealthy", watcher_alive=alive)
                next_ping = now + ping_every
            if now >= next_status:
                if not self._lock_ok():
                    return
                if self.guard is not None and (lost := self.guard.lost()):
                    self.log.error("daemon.catalog_lost", catalog=str(self.cfg.catalog), error=lost)
                    self.catalog_lost = lost
                    return
                line = self.status_line()
                if line != last_status:
                    notify.send(f"STATUS={line}")
                    last_status = line
                next_status = now + 1.0

    # -- event callbacks (observer and worker threads: they only record and wake) --------

    def _on_result(self, result: Result) -> None:
        if self.metrics is not None:
            self.metrics.observe(result)
        if isinstance(result, Finished):
            self.feed.finished(result.job.source)

    def _new_batch(self) -> str:
        self.batch = next_batch("run", self.batch)  # a burst of its own, also in one second
        return self.batch

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
            gauges = Gauges(
                queue_depth=pool.queued() if pool else 0,
                inbox_waiting=len(self.feed),
                jobs_pending=query.pending_jobs(self.metrics_conn),
                library_full=bool(pool and pool.library_full),
                library_free_bytes=free,
                exiftool_restarts=sum(r.restarts for r in list(self.readers)),
                workers=self.cfg.workers,
            )
            write_textfile(path, self.metrics.render(gauges))
            self.metrics_error = ""
        except Exception as e:  # noqa: BLE001 - metrics must never stop the filing
            if str(e) != self.metrics_error:
                self.log.warning("metrics.write_failed", path=str(path), error=str(e))
                self.metrics_error = str(e)

    # -- reload (SIGHUP), the lock, what `status` reads -----------------------------------

    def _reload(self) -> None:
        """Re-read the config file and apply what can change live; a config with an error
        (or a folder the service cannot write) leaves the old one running, and says so in
        the log, STATUS= and `status`. Never stops the daemon."""
        self.reload_due.clear()
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notify.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the configuration")
        old = self.cfg
        try:
            new = config.load(old.source)
            fixed = {k: getattr(old, k) for k in RESTART_KEYS if getattr(new, k) != getattr(old, k)}
            new = dataclasses.replace(new, **fixed)
            check_writable(new)
        except ConfigError as e:
            self.reload_error = str(e)
            self.log.error(
                "daemon.reload_failed",
                error=str(e),
                config=old.source,
                kept="the previous configuration",
            )
        else:
            self.reload_error = ""
            try:
                self._apply(old, new, sorted(fixed))
            except Exception as e:  # noqa: BLE001 - a reload never stops the daemon
                self.reload_error = f"applying it failed: {e}"
                self.log.error("daemon.reload_failed", error=self.reload_error, config=old.source)
        self._publish()
        notify.send("READY=1", f"STATUS={self.status_line()}")

    def _apply(self, old: Config, new: Config, restart: list[str]) -> None:
        changed = [
            f.name
            for f in dataclasses.fields(Config)
            if f.name not in ("source", "extra") and getattr(new, f.name) != getattr(old, f.name)
        ]
        # first what can fail (a new connection, a new inotify watch): then nothing else
        # has changed yet, and the old config runs on
        if new.metrics_textfile is not None and self.metrics is None:
            conn = db.connect(new.catalog)
            self.metrics = Metrics(journal.counts(conn), query.filed_bytes(conn), time.time())
            self.metrics_conn = conn
        self.feed.apply(new)  # other inboxes first: if a watch cannot start, nothing changed
        if (new.log_level, new.log_format) != (old.log_level, old.log_format):
            logs.configure(new.log_level, new.log_format)
        self.cfg = new
        if self.pool is not None:
            self.pool.cfg = new  # each worker takes it up before its next files
            self.pool.companion_grace = new.companion_grace_seconds
        if new.timezone != old.timezone:
            tz = resolve_timezone(new.timezone)
            for reader in list(self.readers):
                reader.tz = tz
        self.needs_restart = restart  # the file's values that differ from the running ones
        if restart:
            self.log.warning(
                "daemon.reload_needs_restart",
                keys=",".join(restart),
                detail="these keys changed but apply only after `systemctl restart mediasortd`",
            )
        self.log.info(
            "daemon.reloaded",
            config=new.source,
            changed=",".join(changed) or None,
            inbox=", ".join(map(str, new.inboxes)),
        )

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
        version, held, n_held = self.feed.held(HELD_PUBLISHED)
        trouble = sorted(self.pool.lease_trouble) if self.pool is not None else []
        self.published = (version, len(trouble))
        state = {
            "pid": os.getpid(),
            "config": self.cfg.source,
            "inboxes": [str(i) for i in self.cfg.inboxes],
            "config_error": self.reload_error,
            "needs_restart": self.needs_restart,
            # why a file the daemon sees is not taken yet (path: why), and how many
            "held": {os.fsdecode(p): why for p, why in held.items()},
            "held_files": n_held,
            # why no read lease can be had (then the settle rule is all there is)
            "no_lease": trouble,
            "settle_seconds": self.cfg.settle_seconds,
        }
        try:
            report.publish(self.cfg.state_dir, state)
        except OSError as e:
            self.log.warning(
                "daemon.state_unwritten",
                path=str(self.cfg.state_dir / report.STATE_FILE),
                error=e.strerror,
            )

    def status_line(self) -> str:
        pool = self.pool
        counts = dict(self.base_counts)
        if pool is not None:
            for k, n in pool.counts.items():
                counts[k] = counts.get(k, 0) + n
        queued = (pool.queued() if pool else 0) + len(self.feed)
        head = f"watching {', '.join(map(str, self.cfg.inboxes))}"
        if pool is not None and pool.library_full:
            head = f"library full, waiting for space; {head}"
        if pool is not None and pool.lease_trouble:
            head = (
                f"no read lease ({'; '.join(sorted(pool.lease_trouble))}): filing on the "
                f"settle guess; {head}"
            )
        if self.reload_error:
            head = (
                f"config reload failed, running on the previous config "
                f"({self.reload_error}); {head}"
            )
        elif self.needs_restart:
            head = f"restart to apply {', '.join(self.needs_restart)}; {head}"
        if pool is not None and pool.state:
            head = f"catalog's filesystem {pool.state} ({self.cfg.state_dir}), waiting; {head}"
        return (
            f"{head}: {queued:,} queued, {counts.get('filed', 0):,} filed, "
            f"{counts.get('duplicate', 0):,} duplicates, {counts.get('rejected', 0):,} "
            f"rejected, {counts.get('failed', 0):,} failed"
        )


def run(cfg: Config, *, log: Any) -> int:
    return Daemon(cfg, log).run()
