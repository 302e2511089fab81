"""The step machine: take paths, resume a job, replay every unfinished job. The journal
row is the truth. Taking new files is "record a job for each, then run them"; replay is
"run every unfinished job": one code path, `_run`, taking a batch's jobs through the
steps together (steps.py); a single job is a batch of one.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..files.dirs import make_dirs
from ..files.moves import unlink_quiet
from ..files.paths import (
    WAY_ERRNOS,
    Folders,
    FolderStats,
    Unusable,
    identity,
    open_source_beneath,
    way_reason,
)
from ..model import Identity, Job, Step, display
from ..store import journal
from ..store.db import SQLiteError
from .naming import inbox_roots, preferred_path
from .steps import Steps
from .worker import UNREADABLE, Describer, Finished, Result, Retry, Skipped

if TYPE_CHECKING:
    import apsw

BATCH_BYTES = 64 << 20  # files go through a step together up to this size
REPLAY_FILES = 16  # unfinished jobs resumed together (each holds its source open)
ORDER = (Step.RECORDED, Step.COPIED, Step.DECIDED, Step.PLACED)


def sweep_staging(conn: apsw.Connection, staging: bytes, log: Any) -> None:
    """Remove staging files that no unfinished job owns (run before workers start)."""
    owned = journal.staged_paths(conn)
    try:
        names = os.listdir(staging)
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(staging, name)
        if path not in owned:
            unlink_quiet(path)
            log.info("ingest.staging_removed", path=display(path))


class Ingestor(Steps):
    """One worker's view: its own catalog connection and its own metadata reader."""

    # -- entry points -------------------------------------------------------------------

    def take(self, path: bytes, move: bool) -> Result:
        """Record a job for `path` (or find the one already recorded) and run it."""
        return self.take_many([path], move)[0][1]

    def take_many(self, paths: list[bytes], move: bool) -> list[tuple[bytes, Result]]:
        """take() for several paths, together: each step is done for every job before
        the next step starts, so they share one commit per step (through the group
        committer), one fsync per folder and one ExifTool request. Each job's durable
        order is exactly that of a job taken alone. Raises only when recording fails
        (the caller looks at every path again later)."""
        results: dict[int, Result] = {}
        chunk: list[tuple[int, bytes, Identity]] = []
        chunk_bytes = 0
        folders = FolderStats()  # one open of a folder for its run of paths
        try:
            for i, path in enumerate(paths):
                try:
                    st = folders.stat(self._root(path), path)
                except FileNotFoundError:
                    results[i] = self._skipped(path, "gone")
                    continue
                except OSError as e:
                    if e.errno not in WAY_ERRNOS:
                        raise
                    results[i] = self._skipped(path, way_reason(e))
                    continue
                if stat.S_ISDIR(st.st_mode):  # lstat: a link to a folder is an entry
                    results[i] = self._skipped(path, "a directory")
                    continue
                if chunk and chunk_bytes + st.st_size > BATCH_BYTES:
                    folders.close()  # resolved again after the batch's work
                    results.update(self._take(chunk, move))
                    chunk, chunk_bytes = [], 0
                chunk.append((i, path, identity(st)))
                chunk_bytes += st.st_size
        finally:
            folders.close()
        if chunk:
            results.update(self._take(chunk, move))
        return [(path, results[i]) for i, path in enumerate(paths)]

    def resume(self, job: Job) -> Result:
        """Run a job's remaining steps: a batch of one."""
        return self._run([job])[0]

    def replay(self) -> list[Result]:
        """Resume every unfinished job, then remove staging files that no job owns."""
        results: list[Result] = []
        chunk: list[Job] = []
        for job in journal.unfinished(self.conn):
            if chunk and (
                len(chunk) >= REPLAY_FILES
                or sum(j.identity.size for j in chunk) + job.identity.size > BATCH_BYTES
            ):
                results += self._run(chunk)
                chunk = []
            chunk.append(job)
        if chunk:
            results += self._run(chunk)
        self.sweep_staging()
        return results

    def sweep_staging(self) -> None:
        sweep_staging(self.conn, self.staging, self.log)

    # -- the one way through the steps ---------------------------------------------------

    def _take(self, batch: list[tuple[int, bytes, Identity]], move: bool) -> dict[int, Result]:
        """Record a job for each path (or find the unfinished one) and run them:
        {index: result}."""
        started = self.clock()
        make_dirs(self.staging, 0o700)
        recorded = self._commit_many(
            [self._recorder(path, ident, move) for _, path, ident in batch]
        )
        for out in recorded:
            if isinstance(out, (SQLiteError, OSError)):
                raise out  # the catalog's trouble, not one file's: the caller decides
        results: dict[int, Result] = {}
        jobs: dict[int, Job] = {}
        for (i, path, _), job in zip(batch, recorded, strict=True):
            if isinstance(job, Exception):  # one file's values the journal cannot hold
                self.log.error(
                    "ingest.unrecordable",
                    source=display(path),
                    error=f"{type(job).__name__}: {job}",
                )
                results[i] = self._skipped(path, f"cannot be recorded: {job}")
            elif job is None:
                results[i] = self._skipped(path, "already handled and left in place")
            else:
                self.log.debug("ingest.recorded", job_id=job.id, source=display(path))
                self.hooks.after_step(job)
                jobs[i] = job  # RECORDED, or found unfinished: resumed where it stands
        results.update(zip(jobs, self._run(list(jobs.values()), started), strict=True))
        return results

    def _run(self, jobs: list[Job], started: float | None = None) -> list[Result]:
        """Take `jobs` through their remaining steps together: the jobs at the earliest
        step take it, as one batch, until each is done or waits (a retry). Each step is
        committed before the job's next one starts."""
        started = self.clock() if started is None else started
        results: dict[int, Result] = {}
        pending = dict(enumerate(jobs))
        folders = self.folders = Folders()  # each source folder resolved once for them
        try:
            while pending:
                step = min((job.step for job in pending.values()), key=ORDER.index)
                batch = [i for i, job in pending.items() if job.step is step]
                answers = self.steps[step]([pending[i] for i in batch])
                for i, out in zip(batch, answers, strict=True):
                    if isinstance(out, Retry):
                        del pending[i]
                        self._let_go(out.job.id)
                        results[i] = self._deferred(out)
                        self.hooks.on_result(out)
                        continue
                    self.hooks.after_step(out)
                    if out.step is not Step.DONE:
                        pending[i] = out
                        continue
                    del pending[i]
                    self._let_go(out.id)
                    results[i] = done = Finished(out, (self.clock() - started) * 1000)
                    self._log_finished(done)
                    self.hooks.on_result(done)
        finally:
            for job in jobs:
                self._let_go(job.id)
                self.heads.pop(job.id, None)
            self.folders = None
            folders.close()
        return [results[i] for i in range(len(jobs))]

    def _skipped(self, path: bytes, reason: str) -> Skipped:
        self.hooks.on_result(skipped := Skipped(path, reason))
        return skipped

    def _recorder(
        self, path: bytes, ident: Identity, move: bool
    ) -> Callable[[apsw.Connection], Job | None]:
        """The transaction that records a job for `path` (or finds the unfinished one);
        None when `path` was already handled and left in place."""

        def record(conn: apsw.Connection) -> Job | None:
            job, settled = journal.for_source(conn, path, ident if move else None)
            if job is None:
                if settled is not None and not self._readable_again(settled):
                    return None
                job = journal.record(conn, self.batch, path, ident, move, self.staging)
            return job

        return record

    def _readable_again(self, settled: Job) -> bool:
        """A file left in place because it could not be read (and not moved) is taken
        again once it can be (a chmod: IN_ATTRIB or the rescan)."""
        if not (settled.error or "").startswith(UNREADABLE):
            return False
        got = open_source_beneath(self._root(settled.source), settled.source)
        if isinstance(got, Unusable):
            return False
        got.close()
        return True


__all__ = [
    "Describer",
    "Finished",
    "Ingestor",
    "Result",
    "Retry",
    "Skipped",
    "inbox_roots",
    "preferred_path",
    "sweep_staging",
]
