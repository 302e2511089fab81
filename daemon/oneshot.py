"""The one-shot commands that write: `import` (and its dry run) and `undo`.

Each takes the state lock and lets `service.prepare` finish what an earlier run left
(an interrupted undo, unfinished jobs) before it takes new work, through the same Pool
and Ingestor as the daemon.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import catalog, db, journal, undolog
from .config import Config
from .errors import MediasortError, UsageError
from .fsops import Unusable, hash_fd, open_source
from .ingest import Finished, Result, Skipped, kill_hook_from_env
from .layout import library_path, numbered
from .metadata import Reader
from .model import Job, NotMedia, Outcome, UndoItem, UndoOutcome
from .pool import Pool
from .service import StateLock, batch_id, make_reader, prepare
from .undo import Undoer
from .undo import kill_hook_from_env as undo_kill_hook_from_env

# -- import -------------------------------------------------------------------------------

@dataclass
class ImportSummary:
    counts: dict[str, int]
    total: int

    @property
    def ok(self) -> bool:
        return self.counts.get(Outcome.FAILED.value, 0) == 0


def walk(sources: list[str], skip: list[bytes]) -> Iterator[bytes]:
    """Every non-directory entry under the sources (links not followed), absolute."""
    for src in sources:
        top = os.fsencode(os.path.abspath(src))
        try:
            st = os.lstat(top)
        except OSError as e:
            raise MediasortError(f"{src}: cannot read: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            yield top
            continue
        stack = [top]
        while stack:
            d = stack.pop()
            if any(d == s or d.startswith(s + b"/") for s in skip):
                continue
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    yield entry.path


class Progress:
    """One status line on a terminal, redrawn in place; silent elsewhere."""

    def __init__(self, total: int, out: TextIO = sys.stderr) -> None:
        self.total = total
        self.out = out
        self.on = out.isatty()
        self.done = 0
        self.last = 0.0

    def update(self, counts: dict[str, int], force: bool = False) -> None:
        now = time.monotonic()
        if not self.on or (not force and now - self.last < 0.1):
            return
        self.last = now
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        parts = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        self.out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] "
                       f"{self.done}/{self.total} {parts}\x1b[K")
        self.out.flush()

    def close(self) -> None:
        if self.on:
            self.out.write("\n")


def import_(cfg: Config, sources: list[str], *, move: bool, log: Any) -> ImportSummary:
    hook = kill_hook_from_env()
    lock = StateLock(cfg)
    try:
        unfinished = prepare(cfg, log, hook)
        skip = [os.fsencode(p) for p in (cfg.library, cfg.state_dir)]
        paths = list(walk(sources, skip))
        progress = Progress(len(paths))
        counts = {o.value: 0 for o in Outcome}

        def on_result(result: Result) -> None:
            if isinstance(result, Finished) and result.job.outcome is not None:
                counts[result.job.outcome.value] += 1
            elif isinstance(result, Skipped):
                counts["skipped"] = counts.get("skipped", 0) + 1
            else:
                return
            progress.done += 1
            progress.update(counts)

        batch = batch_id("import")
        log.info("import.started", batch=batch, files=len(paths), move=move)
        pool = Pool(cfg, move=move, batch=batch, log=log, make_reader=make_reader(cfg),
                    hook=hook, on_result=on_result)
        # queued before the workers start, as far as the queue holds them: each worker
        # then takes a full share, so a burst is decided together, in capture order
        ahead = 0
        while ahead < len(paths) and pool.offer(paths[ahead]):
            ahead += 1
        pool.start()
        try:
            pool.replay(unfinished)
            for p in paths[ahead:]:
                pool.put(p)
            pool.wait_idle()
        finally:
            pool.stop()
        if pool.errors:
            raise pool.errors[0]
        progress.update(counts, force=True)
        progress.close()
        log.info("import.finished", batch=batch, **counts)
        return ImportSummary(counts, len(paths))
    finally:
        lock.release()


# -- undo ---------------------------------------------------------------------------------

@dataclass
class UndoSummary:
    batch: str  # this undo's own batch id
    undoing: list[str] | str  # the batches undone, or "since WHEN"
    items: list[UndoItem]
    resumed: list[UndoItem]  # an interrupted undo, finished first
    unfinished_jobs: int = 0  # jobs of these batches still in progress: not undone
    already_undone: int = 0  # files of these batches undone by an earlier undo
    preview: list[tuple[Job, UndoItem]] | None = None  # --dry-run
    sources: dict[int, str] = field(default_factory=dict)  # job id -> its source, for people

    @property
    def ok(self) -> bool:
        return all(i.outcome is not UndoOutcome.KEPT for i in self.items + self.resumed)


def undo(cfg: Config, *, batches: list[str] | None, since: str | None, dry_run: bool,
         log: Any) -> UndoSummary:
    """Put the files of these batches (or of every job finished since `since`) back where
    they came from: crash-safe, journalled in `undos`, resumed by the next undo, import
    or run. --dry-run reads only and needs no lock."""
    lock = None if dry_run else StateLock(cfg)
    try:
        conn = db.connect(cfg.catalog, readonly=dry_run)
        try:
            undoer = Undoer(cfg, conn, log, hook=undo_kill_hook_from_env())
            resumed = undolog.unfinished(conn) if dry_run else undoer.replay()
            if batches is not None:
                batches, problems = undolog.resolve_batches(conn, batches)
                if problems:
                    raise UsageError("; ".join(problems))
            ids = undolog.undoable_jobs(conn, batches, since)
            summary = UndoSummary("dry-run", batches or f"since {since}", [], resumed,
                                  unfinished_jobs=undolog.unfinished_jobs(conn, batches)
                                  if batches else 0,
                                  already_undone=undolog.already_undone(conn, batches, since))
            if dry_run:
                summary.preview = undoer.preview(ids)
                return summary
            summary.batch = batch_id("undo")
            log.info("undo.started", batch=summary.batch, undoing=summary.undoing,
                     files=len(ids))
            summary.items = [undoer.run(item) for item in undoer.plan(ids, summary.batch)]
            summary.sources = {i.job_id: journal.get(conn, i.job_id).source.decode(
                "utf-8", "backslashreplace") for i in summary.items}
            log.info("undo.completed", batch=summary.batch, **{
                o.value: sum(i.outcome is o for i in summary.items) for o in UndoOutcome})
            return summary
        finally:
            conn.close()
    finally:
        if lock is not None:
            lock.release()




@dataclass(frozen=True)
class Plan:
    """What `import --dry-run` predicts for one source."""

    source: bytes
    outcome: str
    where: str  # the library path, or the file it duplicates, or ""
    reason: str


def dry_run(cfg: Config, sources: list[str]) -> Iterator[Plan]:
    """Where each file would go, reading only: no lock, no catalog writes, no copies.
    ExifTool reads each source through our open descriptor (/proc/PID/fd/N), so what is
    examined is what was opened, whatever its name."""
    conn = db.connect(cfg.catalog, readonly=True) if cfg.catalog.exists() else None
    reader = Reader(timezone=cfg.timezone)
    seen: dict[str, str] = {}
    taken: set[str] = set()
    library = os.fsencode(cfg.library)
    try:
        skip = [os.fsencode(p) for p in (cfg.library, cfg.state_dir)]
        for path in walk(sources, skip):
            fd = open_source(path)
            if isinstance(fd, Unusable):
                yield Plan(path, "vanished" if fd.missing else "rejected", "", fd.reason)
                continue
            try:
                sha256, size = hash_fd(fd)
                existing = catalog.by_sha256(conn, sha256) if conn is not None else None
                if existing is not None or sha256 in seen:
                    yield Plan(path, "duplicate", existing.path if existing else seen[sha256],
                               "")
                    continue
                name = os.fsdecode(os.path.basename(path))
                info = NotMedia("an empty file") if size == 0 else reader.describe(
                    f"/proc/{os.getpid()}/fd/{fd}".encode(), name, os.fstat(fd).st_mtime_ns)
            finally:
                os.close(fd)
            if isinstance(info, NotMedia):
                yield Plan(path, "rejected", "", info.reason)
                continue
            preferred = library_path(cfg.layout, info.captured, info.ext)
            n = 0
            while True:
                rel = numbered(preferred, n)
                in_catalog = conn is not None and catalog.by_path(conn, rel) is not None
                if rel not in taken and not in_catalog and not os.path.lexists(
                        os.path.join(library, os.fsencode(rel))):
                    break
                n += 1
            taken.add(rel)
            seen[sha256] = rel
            yield Plan(path, "filed", rel, f"date from {info.date_source}")
    finally:
        reader.close()
        if conn is not None:
            conn.close()
