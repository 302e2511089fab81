"""The daemon's inboxes: a watcher on each (inotify) and rescans find files, `Candidates`
settles them, the settled ones wait in arrival order for room in the pool's queue, and
folders the daemon emptied are pruned. The observer threads only record and wake the
daemon's loop. Crash invariant: nothing here is durable; a restart rescans the inboxes.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..inbox.scan import Candidates, prune_empty_dirs, scan
from ..inbox.watcher import Watcher
from .pool import Pool


class InboxFeed:
    """What the inboxes offer the pool. `wake` is set when there is something to look at."""

    def __init__(
        self,
        cfg: Config,
        log: Any,
        wake: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.wake = wake
        self.inboxes = tuple(os.fsencode(i) for i in cfg.inboxes)
        self.watchers: dict[bytes, Watcher] = {}  # one per inbox
        self.rescan_due = threading.Event()
        self.candidates = Candidates(
            cfg.settle_seconds,
            capacity=max(10 * cfg.queue_size, 1000),
            clock=clock,
            root_of=self._inbox_of,
            grace=cfg.incomplete_grace_seconds,
        )
        # settled candidates waiting for room in the queue, in arrival order (a burst
        # larger than the queue waits here, not re-checked: the worker checks again)
        self.ready: dict[bytes, None] = {}
        self.finished_dirs: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.candidates)

    def start(self) -> None:
        for inbox in self.inboxes:
            self.watchers[inbox] = self._watch(inbox)
        self.rescan()

    def stop(self) -> None:
        for watcher in self.watchers.values():
            watcher.stop()

    def alive(self) -> bool:
        return all(w.alive() for w in self.watchers.values())

    def restart_dead(self, stopping: threading.Event) -> None:
        for watcher in list(self.watchers.values()):
            if not watcher.alive() and not stopping.is_set():
                error = watcher.restart()
                self.log.warning(
                    "watcher.restarted",
                    inbox=os.fsdecode(watcher.inbox),
                    reason="an observer thread died",
                    error=error,
                )
                self.candidates.events_lost()
                self.rescan_due.set()

    def settle(self) -> list[bytes]:
        """The candidates settled since the last call, now ready (and said: the files
        held back, and the ones filed as they are after the grace)."""
        due = self.candidates.due()
        self.ready.update(dict.fromkeys(due))
        while self.candidates.newly_held:
            path, why = self.candidates.newly_held.pop(0)
            self.log.info("watcher.held", source=os.fsdecode(path), reason=why)
        while self.candidates.filed_short:
            path, why = self.candidates.filed_short.pop()
            self.log.warning(
                "watcher.filed_cut_short",
                source=os.fsdecode(path),
                reason=why,
                note=f"unchanged for {self.cfg.incomplete_grace_seconds:g} s: filed as it is",
            )
        return due

    def offer(self, pool: Pool) -> None:
        for path in list(self.ready):
            if not pool.offer(path):
                break  # queue full: the rest wait for the next round, in order
            del self.ready[path]
            self.candidates.taken(path)

    def rescan_wanted(self) -> bool:
        # a rescan (overflow, folder moved in) as soon as half the candidates are
        # gone, not once the queue is empty: what it finds settles while the workers
        # still have work (waiting for an empty queue idled them settle_seconds
        # per 5,000 files of a large burst)
        return self.rescan_due.is_set() and len(self.candidates) < self.candidates.capacity // 2

    def held(self, most: int) -> tuple[int, dict[bytes, str], int]:
        """(version, up to `most` held-back files: why, how many are held)."""
        with self.candidates.lock:
            return (
                self.candidates.held_version,
                dict(itertools.islice(self.candidates.held.items(), most)),
                len(self.candidates.held),
            )

    def finished(self, source: bytes) -> None:
        """A file was filed (from a worker thread): its folder may be pruned."""
        parent = os.path.dirname(source)
        if parent not in self.inboxes:
            with self.candidates.lock:
                self.finished_dirs.add(parent)

    def apply(self, cfg: Config) -> None:
        """A reloaded config: other inboxes (first: if a watch cannot start, the old set
        runs on), settle times."""
        inboxes = tuple(os.fsencode(i) for i in cfg.inboxes)
        if inboxes != self.inboxes:
            self._switch(inboxes)
        self.cfg = cfg
        self.candidates.settle = cfg.settle_seconds
        self.candidates.grace = cfg.incomplete_grace_seconds

    # -- observer threads: they only record and wake ----------------------------------

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

    def _inbox_of(self, path: bytes) -> bytes | None:
        """The inbox a path lies in (its folders are looked at beneath it, no link)."""
        for inbox in self.inboxes:
            if path.startswith(inbox + b"/"):
                return inbox
        return None

    def _watch(self, inbox: bytes) -> Watcher:
        watcher = Watcher(
            inbox,
            on_file=self._on_file,
            on_dir=self._on_dir,
            on_overflow=self._on_overflow,
            on_write=self.candidates.modified,
            on_close=self._on_closed,
        )
        watcher.start()
        return watcher

    # -- rescans, pruning, other inboxes ------------------------------------------------

    def rescan(self) -> None:
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

    def prune(self) -> None:
        with self.candidates.lock:
            dirs, self.finished_dirs = self.finished_dirs, set()
        if not self.cfg.prune_folders:
            return
        quiet = max(self.cfg.settle_seconds, 1.0)
        try:
            fresh = {
                f
                for d in dirs
                for inbox in self.inboxes
                if d.startswith(inbox + b"/")
                and (f := prune_empty_dirs(inbox, d, quiet, time.time()))
            }
        except OSError as e:  # tried again with the next finished file
            self.log.warning("watcher.prune_failed", error=str(e))
            fresh = dirs
        if fresh:
            with self.candidates.lock:
                self.finished_dirs |= fresh

    def _switch(self, inboxes: tuple[bytes, ...]) -> None:
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
                self.finished_dirs = {d for d in self.finished_dirs if not d.startswith(prefixes)}
            for path in [p for p in self.ready if p.startswith(prefixes)]:
                del self.ready[path]
        self.rescan()
        self.log.info(
            "daemon.inboxes_changed",
            inbox=", ".join(map(os.fsdecode, inboxes)),
            stopped=", ".join(map(os.fsdecode, gone)) or None,
        )
