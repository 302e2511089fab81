"""The only watchdog import: inotify events on the inbox become calls to the daemon
(a file, a folder, a write, a close-after-write, an overflow, which asks for a rescan).
It holds nothing durable: events lost in a crash are found again by the next scan. The
settle rules, scans and pruning are in `inbox.scan`, which needs no watchdog.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver

from .scan import candidate_name


class _Overflow(logging.Handler):
    """watchdog only logs an inotify queue overflow; turn that log line into a rescan."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow()


class _Handler(FileSystemEventHandler):
    def __init__(
        self,
        on_file: Callable[[bytes], None],
        on_dir: Callable[[bytes], None],
        on_write: Callable[[bytes], None],
        on_close: Callable[[bytes], None],
    ):
        self.on_file = on_file
        self.on_dir = on_dir
        self.on_write = on_write  # IN_MODIFY
        self.on_close = on_close  # IN_CLOSE_WRITE

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = (
            event.dest_path
            if isinstance(event, (FileMovedEvent, DirMovedEvent))
            else event.src_path
        )
        p = os.fsencode(path)
        if not candidate_name(os.path.basename(p)):
            return
        if event.is_directory:
            self.on_dir(p)
        elif isinstance(event, FileModifiedEvent):
            self.on_write(p)
        elif isinstance(event, FileClosedEvent):
            self.on_close(p)
        else:
            self.on_file(p)


class Watcher:
    """An inotify observer on the inbox and every folder under it."""

    # IN_MODIFY (FileModifiedEvent) marks a file as being written until its
    # IN_CLOSE_WRITE (FileClosedEvent). (A chmod that makes an unreadable file readable is
    # seen by the rescan: watchdog's FileAttribEvent is not among these.)
    EVENTS = (
        FileClosedEvent,
        FileModifiedEvent,
        FileMovedEvent,
        FileCreatedEvent,
        DirCreatedEvent,
        DirMovedEvent,
    )

    def __init__(
        self,
        inbox: bytes,
        on_file: Callable[[bytes], None],
        on_dir: Callable[[bytes], None],
        on_overflow: Callable[[], None],
        on_write: Callable[[bytes], None] = lambda path: None,
        on_close: Callable[[bytes], None] | None = None,
    ) -> None:
        self.inbox = inbox
        self.handler = _Handler(on_file, on_dir, on_write, on_close or on_file)
        self.observer = self._observer()
        self.overflow = _Overflow(on_overflow)

    def _observer(self) -> InotifyObserver:
        observer = InotifyObserver()
        observer.schedule(
            self.handler, os.fsdecode(self.inbox), recursive=True, event_filter=list(self.EVENTS)
        )
        return observer

    def start(self) -> None:
        logging.getLogger("watchdog.observers").addHandler(self.overflow)
        self.observer.start()

    def alive(self) -> bool:
        """The observer and every thread of it run (watchdog's inotify reader thread can
        die on an error of its own, e.g. folders swapped and removed in quick succession,
        and the observer would go on, deaf)."""
        threads = [
            self.observer,
            *self.observer.emitters,
            getattr(self.observer, "_inotify_fd", self.observer),
        ]
        return all(t.is_alive() for t in threads)

    def restart(self) -> str | None:
        """A new observer in place of one with a dead thread (the caller rescans: events
        meanwhile were lost). Returns the old one's error on stopping, if any."""
        error = None
        try:
            self.observer.stop()
            self.observer.join(10)
        except Exception as e:  # noqa: BLE001 - the old one is broken anyway; a new one follows
            error = str(e)
        self.observer = self._observer()
        self.observer.start()
        return error

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(10)
        logging.getLogger("watchdog.observers").removeHandler(self.overflow)
