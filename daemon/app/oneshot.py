"""The one-shot commands that write: `import` (and its dry run) and `undo`.

Each takes the state lock and lets `runtime.prepare` finish what an earlier run left
(an interrupted undo, unfinished jobs) before it takes new work, through the same Pool
and Ingestor as the daemon.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..config import Config
from ..engine.ingest import Finished, Result, Skipped
from ..engine.naming import inbox_roots, preferred_path
from ..engine.undo import Undoer
from ..errors import MediasortError, UsageError
from ..files.copy import hash_fd
from ..files.paths import Unusable, open_dir, open_source
from ..media.metadata import Reader
from ..model import Job, MediaInfo, NotMedia, Outcome, UndoItem, UndoOutcome
from ..rules.companions import Companion, companion_of, library_name, matches_stem
from ..rules.layout import numbered
from ..rules.retry import ONESHOT, Policy
from ..store import catalog, db, journal, undolog
from .lock import StateLock
from .pool import Pool
from .runtime import batch_id, make_reader, prepare
from .show import printable
from .show import size as human_size
from .testhooks import hooks_from_env

# -- import -------------------------------------------------------------------------------

@dataclass
class ImportSummary:
    counts: dict[str, int]
    total: int
    batch: str = ""
    seconds: float = 0.0
    bytes: int = 0  # of the files handled
    reasons: dict[str, Counter[str]] = field(default_factory=dict)  # outcome -> why -> n

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
            try:  # through a descriptor: folders past PATH_MAX are walked too
                fd = open_dir(d)
                try:
                    with os.scandir(fd) as it:
                        entries = sorted((os.fsencode(e.name), e.is_dir(follow_symlinks=False))
                                         for e in it)
                finally:
                    os.close(fd)
            except OSError:
                continue
            for name, is_dir in entries:
                if is_dir:
                    stack.append(os.path.join(d, name))
                else:
                    yield os.path.join(d, name)


class Progress:
    """A terminal that talks: one progress line (files, bytes, rate, time left) redrawn in
    place, warnings and errors as short lines above it (per-file lines too with
    verbose), nothing with quiet. It is also the structlog renderer on a terminal
    (logs.configure(renderer=...)): events become those short lines, in local time.
    Silent when `out` is not a terminal (the structured logs are used there)."""

    def __init__(self, total: int, out: TextIO = sys.stderr, *, total_bytes: int = 0,
                 verbosity: int = 0, library: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.total_bytes = total_bytes
        self.out = out
        self.on = out.isatty()
        self.verbosity = verbosity  # -1 quiet, 0 normal, 1 verbose
        self.library = library.rstrip("/") + "/" if library else ""
        self.clock = clock
        self.done = 0
        self.done_bytes = 0
        self.counts: dict[str, int] = {}
        self.started = clock()
        self.last = 0.0
        self.drawn = False
        self.lock = threading.Lock()

    def start(self, total: int, total_bytes: int = 0) -> None:
        with self.lock:
            self.total, self.total_bytes, self.started = total, total_bytes, self.clock()

    def advance(self, size: int, counts: dict[str, int]) -> None:
        """One more file handled (from any worker thread)."""
        with self.lock:
            self.done += 1
            self.done_bytes += size
        self.update(dict(counts))

    def update(self, counts: dict[str, int] | None = None, force: bool = False) -> None:
        with self.lock:
            if counts is not None:
                self.counts = counts
            now = self.clock()
            if not self.on or self.verbosity < 0 or self.total == 0 \
                    or (not force and now - self.last < 0.1):
                return
            self.last = now
            self._draw()

    def _draw(self) -> None:
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        elapsed = max(self.clock() - self.started, 1e-6)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {self.done:,}/{self.total:,} files"
        if self.total_bytes:
            rate = self.done_bytes / elapsed
            line += f", {human_size(self.done_bytes)}/{human_size(self.total_bytes)}"
            line += f", {human_size(int(rate))}/s" if self.done_bytes else ""
            if rate > 0 and self.done < self.total:
                line += f", {_duration((self.total_bytes - self.done_bytes) / rate)} left"
        parts = ", ".join(f"{n:,} {k}" for k, n in self.counts.items() if n)
        self.out.write(f"\r{line}{'  ' + parts if parts else ''}\x1b[K")
        self.out.flush()
        self.drawn = True

    def line(self, text: str) -> None:
        """A short line above the progress line (control characters of names escaped)."""
        with self.lock:
            if not self.on or self.verbosity < 0:
                return
            self.out.write(f"\r\x1b[K{printable(text)}\n")
            if self.drawn:
                self._draw()
            else:
                self.out.flush()

    def close(self) -> None:
        with self.lock:
            if self.on and self.drawn:
                self.out.write("\n")
                self.out.flush()
            self.drawn = False

    # -- the log, on a terminal (logs.configure(on_event=...)) ---------------------------

    def event(self, event: dict[str, Any]) -> None:
        text = self.describe(event)
        if text is not None:
            self.line(f"{time.strftime('%H:%M:%S')} {text}")

    def describe(self, event: dict[str, Any]) -> str | None:
        """The short line for a log event, or None when it says nothing people need
        here (per-file lines only when verbose)."""
        name = str(event.get("event", ""))
        level = str(event.get("level", "info"))
        src = event.get("source")
        if name == "ingest.finished":
            outcome, error = event.get("outcome"), event.get("error")
            dest = str(event.get("dest") or "")
            dest = dest.removeprefix(self.library)
            if outcome in ("rejected", "failed") or (error and outcome != "filed"):
                return f"{str(outcome).upper() if outcome == 'failed' else outcome}  " \
                       f"{src}: {error or ''}".rstrip(": ")
            if self.verbosity > 0:
                return f"{outcome:9} {src}" + (f" -> {dest}" if dest else "")
            return None
        if level in ("warning", "error", "critical", "exception"):
            extra = ", ".join(f"{k}={v}" for k, v in event.items()
                              if k in ("source", "path", "error", "reason") and v is not None)
            return f"{level}: {name}" + (f": {extra}" if extra else "")
        if self.verbosity > 0 and name not in ("import.started", "import.finished"):
            extra = " ".join(f"{k}={v}" for k, v in event.items()
                             if k not in ("event", "level", "timestamp") and v is not None)
            return f"{name} {extra}".rstrip()
        return None


def _duration(secs: float) -> str:
    secs = max(0, int(secs))
    if secs >= 3600:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    if secs >= 60:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs}s"


def import_(cfg: Config, sources: list[str], *, move: bool, log: Any,
            progress: Progress | None = None, check_catalog: bool = True,
            policy: Policy = ONESHOT) -> ImportSummary:
    """Import `sources` (none: only finish what an earlier run left, saying nothing).
    `check_catalog`: refuse a catalog the library does not know (runtime.check_catalog);
    off only for the commands that make them agree (`verify --repair`, `adopt`).
    `policy`: how a file's trouble is retried (rules.retry)."""
    hooks = hooks_from_env()
    lock = StateLock(cfg)
    started = time.monotonic()
    try:
        unfinished = prepare(cfg, log, hooks, check=check_catalog)
        skip = [os.fsencode(p) for p in (cfg.library, cfg.state_dir)]
        paths = list(dict.fromkeys(walk(sources, skip)))  # a file named twice: once
        if progress is None:
            progress = Progress(0, io.StringIO())  # not a terminal: never drawn
        if progress.on:
            progress.start(len(paths), sum(_lsize(p) for p in paths))
        counts = {o.value: 0 for o in Outcome}
        reasons: dict[str, Counter[str]] = {}
        handled = [0]

        def on_result(result: Result) -> None:
            if isinstance(result, Finished) and result.job.outcome is not None:
                outcome = result.job.outcome.value
                counts[outcome] += 1
                size = result.job.size or result.job.identity.size
                handled[0] += size
                if result.job.error and outcome in ("rejected", "failed", "duplicate"):
                    reasons.setdefault(outcome, Counter())[result.job.error[:80]] += 1
            elif isinstance(result, Skipped):
                counts["skipped"] = counts.get("skipped", 0) + 1
                size = 0
            else:
                return
            progress.advance(size, counts)

        batch = batch_id("import")
        if paths:  # a replay alone (adopt, repair) is no import to announce
            log.info("import.started", batch=batch, files=len(paths), move=move)
        pool = Pool(cfg, move=move, batch=batch, log=log, make_reader=make_reader(cfg),
                    hooks=hooks, on_result=on_result, policy=policy)
        pool.expected = _Expected(cfg, paths)
        # unfinished jobs first (a path among them is then not queued again), then new
        # files, before the workers start, as far as the queue holds them: each worker
        # takes a full share, so a burst is decided together, in capture order
        pool.replay(unfinished)
        ahead = 0
        while ahead < len(paths) and pool.offer(paths[ahead]):
            ahead += 1
        pool.start()
        try:
            for p in paths[ahead:]:
                pool.put(p)
            pool.wait_idle()
        finally:
            pool.stop()
        if pool.errors:
            raise pool.errors[0]
        progress.update(counts, force=True)
        progress.close()
        if paths:
            log.info("import.finished", batch=batch, **counts)
        return ImportSummary(counts, len(paths), batch, time.monotonic() - started,
                             handled[0], reasons)
    finally:
        lock.release()


class _Expected:
    """The files an import will still see: the ones it was given, and any in an inbox (a
    daemon's unfinished job replayed here waits for its partner there, as the daemon
    would); a partner lying elsewhere beside them is not on its way."""

    def __init__(self, cfg: Config, paths: list[bytes]) -> None:
        self.cfg = cfg
        self.paths = frozenset(paths)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, bytes) and (path in self.paths
                                            or self.cfg.inbox_of(path) is not None)


def _lsize(path: bytes) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def summary_table(summary: ImportSummary, library: str) -> list[str]:
    """The end of an import on a terminal: what became of the files, the top reasons,
    where the library is."""
    c = summary.counts
    rate = summary.bytes / summary.seconds if summary.seconds > 0 else 0
    lines = [(f"  {summary.total:,} file(s), {human_size(summary.bytes)} in "
              f"{_duration(summary.seconds)} ({human_size(int(rate))}/s), batch {summary.batch}")]
    rows = [("filed", c.get("filed", 0), f"into {library}"),
            ("duplicates", c.get("duplicate", 0), "content already in the library"),
            ("rejected", c.get("rejected", 0), ""), ("failed", c.get("failed", 0), ""),
            ("vanished", c.get("vanished", 0), "gone before they could be read")]
    for name, n, note in rows:
        if not n and name == "vanished":
            continue
        key = {"duplicates": "duplicate"}.get(name, name)
        top = summary.reasons.get(key)
        if top and name in ("rejected", "failed"):
            text = "; ".join(f"{why} ({k})" for why, k in top.most_common(3))
        else:
            text = note
        lines.append(printable(f"  {name:<11}{n:>7,}  {text}".rstrip()))
    return lines


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
            undoer = Undoer(cfg, conn, log, hooks_from_env())
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




def _sidecar_plan(conn: Any, path: bytes, companion: Companion,
                  planned: dict[bytes, str]) -> Plan:
    """A sidecar goes beside its photo (one this dry run files, or one filed before from
    the same folder), under the photo's new name; with no photo it is rejected."""
    folder = os.path.dirname(path)
    try:
        beside = [n for n in os.listdir(folder) if matches_stem(companion, n)]
    except OSError:
        beside = []
    partners = [os.path.join(folder, n) for n in (*companion.names, *sorted(beside))]
    rel = next((planned[p] for p in partners if p in planned), None)
    if rel is None and conn is not None:
        for job in journal.latest_for(conn, partners).values():
            entry = (catalog.by_job(conn, job.id) if job.outcome is Outcome.FILED else
                     catalog.by_id(conn, job.duplicate_of or -1)
                     if job.outcome is Outcome.DUPLICATE else None)
            if entry is not None and not entry.missing_since:
                rel = entry.path
                break
    if rel is None:
        return Plan(path, "rejected", "", "a sidecar whose photo is not in the library")
    return Plan(path, "filed", library_name(rel, companion), f"a sidecar of {rel}")


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
    planned: dict[bytes, str] = {}  # source -> the library path it would be filed at
    nexts: dict[str, int] = {}  # the next number to try for a preferred path
    library = os.fsencode(cfg.library)
    roots = inbox_roots(cfg)
    try:
        skip = [os.fsencode(p) for p in (cfg.library, cfg.state_dir)]
        sidecars: list[tuple[bytes, Companion]] = []  # planned once their photos are
        for path in dict.fromkeys(walk(sources, skip)):  # as import_ does
            companion = companion_of(os.path.basename(path))
            if companion is not None and companion.kind == "sidecar":
                sidecars.append((path, companion))
                continue
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
            if isinstance(info, MediaInfo) and info.date_source == "mtime" \
                    and cfg.undated == "reject":
                info = NotMedia("no capture date in its content, name or sidecar "
                                "(ingest.undated = \"reject\")")
            if isinstance(info, NotMedia):
                yield Plan(path, "rejected", "", info.reason)
                continue
            preferred = preferred_path(cfg, roots, path, info)
            n = nexts.get(preferred) or (min(catalog.first_number(conn, preferred),
                                             catalog.first_number(conn, catalog.stem_key(
                                                 preferred))) if conn is not None else 0)
            while True:
                rel = numbered(preferred, n)
                in_catalog = conn is not None and catalog.by_path(conn, rel) is not None
                if rel not in taken and not in_catalog and not os.path.lexists(
                        os.path.join(library, os.fsencode(rel))):
                    break
                n += 1
            taken.add(rel)
            nexts[preferred] = n + 1  # as free_number counts on
            seen[sha256] = rel
            planned[path] = rel
            yield Plan(path, "filed", rel, f"date from {info.date_source}")
        for path, companion in sidecars:
            yield _sidecar_plan(conn, path, companion, planned)
    finally:
        reader.close()
        if conn is not None:
            conn.close()
