"""Worker threads, each with its own catalog connection and ExifTool, fed by a bounded
queue of hints ("look at this path"); a worker takes its share of the waiting hints at
once and files them together (Ingestor.take_many: shared commits and folder fsyncs). The
queue is never the truth, the journal is: a hint that is dropped is found again by the
next scan.

A path is never queued or worked on twice at once. Retries wait in a timer heap.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Container
from typing import Any, Protocol

from ..config import Config
from ..engine.hooks import NO_HOOKS, Hooks
from ..engine.ingest import Describer, Finished, Ingestor, Result, Retry, Skipped
from ..errors import MediasortError
from ..media.metadata import resolve_timezone
from ..rules.retry import ONESHOT, Policy, Stop, Trouble
from ..store import db, journal

RETRY_SECONDS = 5.0  # a path whose job could not be recorded is tried again after this
BATCH_FILES = 16  # new files a worker takes from the queue at once (Ingestor.take_many)


class Closeable(Describer, Protocol):
    def close(self) -> None: ...


class Pool:
    def __init__(
        self,
        cfg: Config,
        *,
        move: bool,
        batch: str,
        log: Any,
        make_reader: Callable[[], Closeable],
        workers: int | None = None,
        queue_size: int | None = None,
        policy: Policy = ONESHOT,
        hooks: Hooks = NO_HOOKS,
        on_result: Callable[[Result], None] | None = None,
        companion_grace: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.move = move
        self.batch = batch
        self.log = log
        self.make_reader = make_reader
        self.n_workers = workers or cfg.workers
        self.hints: queue.Queue[bytes] = queue.Queue(maxsize=queue_size or cfg.queue_size)
        self.policy = policy
        self.hooks = hooks
        self.on_result = on_result
        self.companion_grace = companion_grace
        self.expected: Container[bytes] | None = None  # an import's paths (see pairing)
        # why read leases cannot be had here, shared by the workers (logged once; `status`)
        self.lease_trouble: set[str] = set()
        self.clock = clock
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.in_flight: set[bytes] = set()  # queued, being worked on, or waiting to retry
        self.delayed: list[tuple[float, int, int | None, bytes]] = []  # (due, seq, job id, path)
        self.seq = itertools.count()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.committer: db.Committer | None = None
        self.beats: dict[int, float] = {}
        self.busy_since: dict[int, float] = {}
        self.counts: Counter[str] = Counter()
        self.library_full = False
        self.state = ""  # the catalog's filesystem is "full" or "read-only": waiting
        self.errors: list[BaseException] = []

    # -- feeding ------------------------------------------------------------------------

    def offer(self, path: bytes) -> bool:
        """Queue a hint without blocking; False when the queue is full (rescan later)."""
        with self.lock:
            if path in self.in_flight:
                return True
            try:
                self.hints.put_nowait(path)
            except queue.Full:
                return False
            self.in_flight.add(path)
            return True

    def put(self, path: bytes) -> None:
        """Queue a hint, waiting for room (one-shot imports)."""
        while not self.offer(path):
            if self.stopping.is_set():
                return
            with self.idle:
                self.idle.wait(0.05)

    def replay(self, jobs: list[tuple[int, bytes, float]]) -> None:
        """Resume waiting jobs (job id, source path, after seconds) ahead of new hints."""
        with self.idle:
            for job_id, path, after in jobs:
                self.in_flight.add(path)
                heapq.heappush(self.delayed, (self.clock() + after, next(self.seq), job_id, path))

    def queued(self) -> int:
        return self.hints.qsize() + len(self.delayed)

    def busy(self) -> bool:
        with self.lock:
            return bool(self.in_flight)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued, in hand, or waiting to retry."""
        end = None if timeout is None else self.clock() + timeout
        with self.idle:
            while self.in_flight and not self.errors:
                left = None if end is None else end - self.clock()
                if left is not None and left <= 0:
                    return False
                self.idle.wait(0.1 if left is None else min(left, 0.1))
        return not self.in_flight

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.committer = db.Committer(self.cfg.catalog)  # group commit for every worker
        for i in range(self.n_workers):
            t = threading.Thread(target=self._worker, args=(i,), name=f"worker-{i}", daemon=True)
            self.beats[i] = self.clock()
            t.start()
            self.threads.append(t)

    def stop(self, timeout: float | None = None) -> None:
        """Let each worker finish the file in hand, then end. Unstarted hints are
        dropped: the journal and the next scan hold the truth."""
        self.stopping.set()
        for t in self.threads:
            t.join(timeout)
        if self.committer is not None:
            self.committer.close()

    def healthy(self, stall_seconds: float) -> bool:
        """Every worker thread is alive and none has been stuck on one file too long."""
        now = self.clock()
        return (
            all(t.is_alive() for t in self.threads)
            and not self.errors
            and all(now - since < stall_seconds for since in self.busy_since.values())
        )

    # -- the worker ---------------------------------------------------------------------

    def _next(self) -> tuple[bytes, int | None] | None:  # (path, job id or None: take it)
        with self.lock:
            if self.delayed and self.delayed[0][0] <= self.clock():
                _, _, job_id, path = heapq.heappop(self.delayed)
                return path, job_id
        try:
            return self.hints.get(timeout=0.05), None
        except queue.Empty:
            return None

    def _more(self, first: bytes) -> list[bytes]:
        """`first` and more waiting hints, to go through the steps together: this
        worker's share of the queue (the others take theirs), at most BATCH_FILES."""
        paths = [first]
        share = min(BATCH_FILES, -(-(self.hints.qsize() + 1) // self.n_workers))  # + first
        while len(paths) < share:
            try:
                paths.append(self.hints.get_nowait())
            except queue.Empty:
                break
        return paths

    def _worker(self, i: int) -> None:
        conn: db.Connection | None = None
        reader: Closeable | None = None
        try:  # a worker that cannot even start (no fd left...) says so: no silent hang
            conn = db.connect(self.cfg.catalog)
            reader = self.make_reader()
            assert self.committer is not None  # start() made it
            ingest = Ingestor(
                self.cfg,
                conn,
                reader,
                batch=self.batch,
                log=self.log,
                hooks=self.hooks,
                policy=self.policy,
                clock=self.clock,
                companion_grace=self.companion_grace,
                committer=self.committer,
            )
            ingest.expected = self.expected
            ingest.lease_trouble = self.lease_trouble
            while not self.stopping.is_set():
                self.beats[i] = self.clock()
                item = self._next()
                if item is None:
                    continue
                path, job_id = item
                paths = [path] if job_id is not None else self._more(path)
                self.busy_since[i] = self.clock()
                ingest.batch = self.batch  # the daemon starts a new batch per burst
                if ingest.cfg is not self.cfg:  # the daemon reloaded its config (SIGHUP)
                    ingest.cfg = self.cfg
                    ingest.companion_grace = self.companion_grace
                    ingest.tz = resolve_timezone(self.cfg.timezone)
                try:
                    results = (
                        [(path, ingest.resume(journal.get(conn, job_id)))]
                        if job_id is not None
                        else ingest.take_many(paths, self.move)
                    )
                except (*db.PASSING, OSError) as e:
                    # recording the jobs met a locked catalog, a passing I/O error or (the
                    # daemon) a full state directory: the paths are looked at again
                    # later (a broken catalog still stops us; a one-shot import stops
                    # with a full one and says so)
                    if isinstance(e, db.SQLiteError) and not isinstance(e, db.BusyError):
                        blocked = db.state_blocked(e, self.cfg.catalog)
                        if not blocked or isinstance(self.policy.decide(Trouble.STATE, 0), Stop):
                            raise
                        self.state = blocked
                    self.log.warning(
                        "pool.deferred",
                        source=path.decode("utf-8", "replace"),
                        files=len(paths),
                        error=str(e),
                    )
                    with self.idle:
                        for p in paths:
                            heapq.heappush(
                                self.delayed,
                                (self.clock() + RETRY_SECONDS, next(self.seq), job_id, p),
                            )
                    continue
                finally:
                    self.busy_since.pop(i, None)
                for p, result in results:
                    self._settle(p, result)
        except BaseException as e:  # a broken catalog: the service stops with it
            if isinstance(e, (db.SQLiteError, MediasortError)):  # said clearly, no traceback
                self.log.error("pool.worker_died", worker=i, error=f"{type(e).__name__}: {e}")
            else:
                self.log.exception("pool.worker_died", worker=i)
            with self.idle:
                self.errors.append(e)
                self.idle.notify_all()
        finally:
            if reader is not None:
                reader.close()
            if conn is not None:
                conn.close()

    def _settle(self, path: bytes, result: Result) -> None:
        with self.idle:
            if isinstance(result, Retry):
                self.library_full = result.full
                self.state = result.state
                heapq.heappush(
                    self.delayed, (self.clock() + result.after, next(self.seq), result.job.id, path)
                )
            else:
                self.in_flight.discard(path)
                if isinstance(result, Finished):
                    self.library_full, self.state = False, ""
                    assert result.job.outcome is not None
                    self.counts[result.job.outcome.value] += 1
                # Wake put() and wait_idle() when there is something for them (half the
                # queue free, or nothing left), not at every file: each wake-up costs
                # two thread switches.
                if not self.in_flight or self.hints.qsize() <= self.hints.maxsize // 2:
                    self.idle.notify_all()
        if self.on_result is not None:
            self.on_result(result)


__all__ = ["Finished", "Pool", "Retry", "Skipped"]
