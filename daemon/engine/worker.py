"""One worker's state shared by every step: its commits, what becomes of a job in
trouble (a retry, or a failed job with its reservation undone), the results a job ends
with. Every catalog write goes through the group committer, which returns only once it
is durable; a transaction function touches only the database (it may run twice).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..config import Config
from ..files.moves import same_file, unlink_quiet
from ..files.paths import Folders, Source
from ..media.metadata import resolve_timezone
from ..model import Identity, Job, MediaInfo, NotMedia, Outcome, Step, display
from ..rules.layout import numbered_name
from ..rules.retry import ONESHOT, Again, GiveUp, Policy, Trouble, classify
from ..store import catalog, journal, names
from ..store.db import Committer, catalog_trouble, state_blocked
from .hooks import NO_HOOKS, Hooks
from .naming import inbox_roots

if TYPE_CHECKING:
    import apsw

UNREADABLE = "unreadable:"  # a reject's reason starts with this: taken again once readable
WRITING = "still open for writing"
FULL_MARK = "the library is full"  # said in the reason of a copy that met a full library
T = TypeVar("T")


class Describer(Protocol):
    """What ingest needs from metadata.Reader."""

    def describe_many(
        self, items: Sequence[tuple[bytes, str, int]], heads: Sequence[bytes | None] | None = None
    ) -> list[MediaInfo | NotMedia]: ...

    def head_of(self, original_name: str) -> Callable[[memoryview], bytes] | None: ...


@dataclass(frozen=True)
class Finished:
    job: Job
    duration_ms: float = 0.0


@dataclass(frozen=True)
class Retry:
    """Not done yet: try the job again after `after` seconds."""

    job: Job
    after: float
    reason: str
    full: bool = False  # the library's filesystem is full
    state: str = ""  # the catalog's filesystem refuses writes: "full" or "read-only"


@dataclass(frozen=True)
class Skipped:
    """Nothing to do: the path is gone, is a directory, or was already settled."""

    path: bytes
    reason: str


Result = Finished | Retry | Skipped


def filled(out: list[T | None]) -> list[T]:
    """A step's answers, one for each job it was given (each was given one)."""
    assert all(o is not None for o in out)
    return [o for o in out if o is not None]


class Worker:
    """One worker's state: its own catalog connection (for reading) and metadata reader,
    the group committer (for writing), what it holds open for the jobs in hand."""

    def __init__(
        self,
        config: Config,
        conn: apsw.Connection,
        reader: Describer,
        *,
        batch: str,
        log: Any,
        committer: Committer,
        hooks: Hooks = NO_HOOKS,
        policy: Policy = ONESHOT,
        clock: Callable[[], float] = time.monotonic,
        companion_grace: float = 0.0,
    ):
        self.cfg = config
        self.conn = conn
        self.reader = reader
        self.batch = batch
        self.log = log
        self.hooks = hooks
        self.policy = policy
        self.clock = clock
        self.companion_grace = companion_grace
        self.expected: Container[bytes] | None = None  # an import's paths (see pairing)
        self.committer = committer
        self.tz: tzinfo = resolve_timezone(config.timezone)
        self.library = os.fsencode(config.library)
        self.roots = inbox_roots(config)
        self.staging = os.fsencode(config.staging)
        # Sources opened by this worker's copies (by job id): their folder's descriptor
        # (the source is removed through it) and the file's, with its read lease.
        self.held: dict[int, Source] = {}
        self.lease_trouble: set[str] = set()  # why leases could not be had (logged once)
        # The first bytes of copies made by this worker and not yet described (by job
        # id): the metadata reader takes them instead of reading the copy again.
        self.heads: dict[int, bytes] = {}
        self.folders: Folders | None = None  # the source folders of the batch at work

    # -- writing ------------------------------------------------------------------------

    def _commit(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run `fn` in a write transaction and return once it is durable."""
        return self.committer.run(fn)

    def _commit_many(self, fns: list[Callable[[apsw.Connection], T]]) -> list[T | Exception]:
        """_commit for several transactions, together: each one's result or the exception
        it raised (rolled back alone)."""
        return self.committer.run_many(fns)

    def _advance(self, job: Job, step: Step, **fields: Any) -> Job:
        """Commit `job` at `step` with `fields`."""
        return self._commit(lambda conn: journal.advance(conn, job.id, step, **fields))

    def _restart(self, job: Job) -> Job:
        """Back to RECORDED, its library name given back: the job copies again."""

        def restart(conn: apsw.Connection) -> Job:
            if (entry := catalog.by_job(conn, job.id)) is not None:
                catalog.delete(conn, entry.id)
            return journal.advance(conn, job.id, Step.RECORDED, outcome=None, dest=None)

        return self._commit(restart)

    # -- small facts --------------------------------------------------------------------

    def _root(self, path: bytes) -> bytes | None:
        """The inbox `path` lies in: its folders are resolved beneath it, never through a
        link (paths.parent_beneath); None for a source named by the user (an import)."""
        inbox = self.cfg.inbox_of(path)
        return os.fsencode(inbox) if inbox is not None else None

    def _let_go(self, job_id: int) -> None:
        """Close what this worker holds open for a job (its source and folder)."""
        if (src := self.held.pop(job_id, None)) is not None:
            src.close()

    def _side_path(self, root: os.PathLike[str], job: Job) -> bytes:
        """Where a duplicate or reject goes: its own name under `root`."""
        return os.path.join(os.fsencode(root), numbered_name(os.path.basename(job.source), 0))

    def _rename_dest(self, job: Job, dest: bytes) -> bytes:
        """The next free name after `dest`, committed before it is used."""
        side = b""  # a duplicate's or reject's next name: the first free one on disk
        if job.outcome is not Outcome.FILED:
            base, n = os.path.basename(job.source), 1
            while os.path.lexists(
                side := os.path.join(os.path.dirname(dest), numbered_name(base, n))
            ):
                n += 1

        def rename(conn: apsw.Connection) -> bytes:
            name = side
            if job.outcome is Outcome.FILED:
                entry = catalog.by_job(conn, job.id)
                assert entry is not None
                rel = names.free_name(conn, self.library, entry.path)
                catalog.rename(conn, entry.id, rel)
                name = os.path.join(self.library, os.fsencode(rel))
            journal.advance(conn, job.id, job.step, dest=name)
            return name

        new = self._commit(rename)
        self.log.info("ingest.name_taken", job_id=job.id, taken=display(dest), dest=display(new))
        return new

    # -- trouble ------------------------------------------------------------------------

    def _retry(
        self,
        job: Job,
        trouble: Trouble,
        reason: str,
        ident: Identity | None = None,
        *,
        error: Exception | None = None,
        state: str = "",
    ) -> Retry | Job:
        """Record the attempt (when the journal can take it), then do what the retry
        policy decides: try again later, fail the job, or stop with `error`."""
        age = 0.0
        if trouble.records:

            def note(conn: apsw.Connection) -> tuple[Job, float]:
                journal.note_attempt(
                    conn, job.id, reason, ident, count=trouble.counts, full=trouble is Trouble.FULL
                )
                # a writer still at work: an import waits for it by the job's age
                return journal.get(conn, job.id), (
                    journal.age(conn, job.id) if trouble is Trouble.WRITER else 0.0
                )

            job, age = self._commit(note)
        decision = self.policy.decide(
            trouble, job.attempts, age=age, settle=self.cfg.settle_seconds
        )
        if isinstance(decision, Again):
            return Retry(job, decision.after, reason, full=trouble is Trouble.FULL, state=state)
        if isinstance(decision, GiveUp):
            return self._fail(job, reason + decision.why)
        assert error is not None, f"{trouble} stops only with an error"
        raise error  # the catalog's trouble: a one-shot command (or the service) stops

    def _trouble(self, job: Job, e: Exception) -> Job | Retry:
        """An unexpected error in a step: retried, the job failed, or the error raised,
        as the retry policy says of its kind."""
        trouble = classify(e, catalog_trouble(e, self.cfg.catalog))
        state = ""
        if trouble is Trouble.LOCKED:
            reason = f"the catalog is locked: {e}"
        elif trouble is Trouble.STATE:
            state = state_blocked(e, self.cfg.catalog) or ""
            reason = f"{job.step.value}: the catalog's filesystem is {state} ({self.cfg.state_dir})"
        elif trouble is Trouble.TOOL:  # ExifTool missing or dying: not this file's fault
            reason = f"{job.step.value}: {e}"
        elif isinstance(e, OSError):
            where = display(e.filename) if isinstance(e.filename, bytes) else e.filename
            reason = f"{job.step.value}: {e.strerror or e} ({where})"
        else:
            if trouble is Trouble.BUG:
                # e may come from a batch's results, outside its except: named for the traceback
                self.log.error("ingest.bug", job_id=job.id, source=display(job.source), exc_info=e)
            reason = f"{job.step.value}: {type(e).__name__}: {e}"
        return self._retry(job, trouble, reason, error=e, state=state)

    def _fail(self, job: Job, error: str) -> Job:
        """Give up on a job: undo whatever it reserved, leave the source untouched."""
        if job.step not in (Step.RECORDED, Step.COPIED, Step.DECIDED):
            # the bytes are placed; only retiring the source went wrong
            return self._advance(job, Step.DONE, error=error)
        if job.staged and job.dest and same_file(job.staged, job.dest):
            os.unlink(job.dest)
        if job.staged:
            unlink_quiet(job.staged)

        def fail(conn: apsw.Connection) -> Job:
            if (entry := catalog.by_job(conn, job.id)) is not None:
                catalog.delete(conn, entry.id)
            return journal.advance(
                conn, job.id, Step.DONE, outcome=Outcome.FAILED, error=error, dest=None
            )

        return self._commit(fail)

    def _deferred(self, out: Retry) -> Retry:
        job = out.job
        self.log.info(
            "ingest.deferred",
            job_id=job.id,
            source=display(job.source),
            reason=out.reason,
            retry_in=round(out.after, 1),
        )
        return out

    def _log_finished(self, result: Finished) -> None:
        job = result.job
        level = (
            "warning"
            if job.outcome in (Outcome.FAILED, Outcome.REJECTED)
            or (job.error and "left in place" in job.error)
            else "info"
        )
        getattr(self.log, level)(
            "ingest.finished",
            job_id=job.id,
            outcome=job.outcome.value if job.outcome else None,
            source=display(job.source),
            dest=display(job.dest) if job.dest else None,
            sha256=job.sha256,
            bytes=job.size,
            duration_ms=round(result.duration_ms, 1),
            error=job.error,
            batch=job.batch,
        )
