"""The one-shot commands that write: `import` and `undo` (the dry runs read only).
Each takes the state lock and first finishes what an earlier run left: `import` through
`runtime.prepare` (an interrupted undo, unfinished jobs), then the same Pool and Ingestor
as the daemon; `undo` an interrupted undo (its `undos` rows) before it plans a new one.
"""

from __future__ import annotations

import io
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..engine.ingest import Finished, Result, Skipped
from ..engine.undo import Undoer
from ..errors import MediasortError, UsageError
from ..files.paths import open_dir
from ..model import Job, Outcome, UndoItem, UndoOutcome
from ..rules.retry import ONESHOT, Policy
from ..store import db, journal, undolog
from .lock import StateLock
from .pool import Pool
from .progress import Progress
from .runtime import batch_id, make_reader, prepare
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
                        entries = sorted(
                            (os.fsencode(e.name), e.is_dir(follow_symlinks=False)) for e in it
                        )
                finally:
                    os.close(fd)
            except OSError:
                continue
            for name, is_dir in entries:
                if is_dir:
                    stack.append(os.path.join(d, name))
                else:
                    yield os.path.join(d, name)


def import_(
    cfg: Config,
    sources: list[str],
    *,
    move: bool,
    log: Any,
    progress: Progress | None = None,
    check_catalog: bool = True,
    policy: Policy = ONESHOT,
) -> ImportSummary:
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
        pool = Pool(
            cfg,
            move=move,
            batch=batch,
            log=log,
            make_reader=make_reader(cfg),
            hooks=hooks,
            on_result=on_result,
            policy=policy,
        )
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
        return ImportSummary(
            counts, len(paths), batch, time.monotonic() - started, handled[0], reasons
        )
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
        return isinstance(path, bytes) and (
            path in self.paths or self.cfg.inbox_of(path) is not None
        )


def _lsize(path: bytes) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


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


def undo(
    cfg: Config, *, batches: list[str] | None, since: str | None, dry_run: bool, log: Any
) -> UndoSummary:
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
            summary = UndoSummary(
                "dry-run",
                batches or f"since {since}",
                [],
                resumed,
                unfinished_jobs=undolog.unfinished_jobs(conn, batches) if batches else 0,
                already_undone=undolog.already_undone(conn, batches, since),
            )
            if dry_run:
                summary.preview = undoer.preview(ids)
                return summary
            summary.batch = batch_id("undo")
            log.info("undo.started", batch=summary.batch, undoing=summary.undoing, files=len(ids))
            summary.items = [undoer.run(item) for item in undoer.plan(ids, summary.batch)]
            summary.sources = {
                i.job_id: journal.get(conn, i.job_id).source.decode("utf-8", "backslashreplace")
                for i in summary.items
            }
            log.info(
                "undo.completed",
                batch=summary.batch,
                **{o.value: sum(i.outcome is o for i in summary.items) for o in UndoOutcome},
            )
            return summary
        finally:
            conn.close()
    finally:
        if lock is not None:
            lock.release()
