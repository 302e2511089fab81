"""The step machine: take a path, resume a job, replay every unfinished job.

The journal row is the truth. Each step does one durable effect, then advances the row
in one commit; every step looks at the disk first, so running it twice is harmless.
Taking a new file is "record a job, then resume it"; replay is "resume every unfinished
job": one code path. Several new files are taken in lockstep (take_many: each step for
all, sharing commits and folder fsyncs), through the same step functions. Nothing is
deleted except a source whose bytes are safely placed.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Protocol, TypeVar

import apsw

from ..config import Config
from ..files.copy import SourceChanged, copy_and_hash, hash_file
from ..files.dirs import fsync_dir, make_dirs
from ..files.moves import link_noreplace, move_at, same_file, unlink_at_if, unlink_quiet
from ..files.paths import (
    WAY_ERRNOS,
    FolderStats,
    Source,
    Unusable,
    identity,
    lease_held,
    open_dir,
    open_source_beneath,
    parent_beneath,
    take_lease,
    way_reason,
)
from ..media.metadata import resolve_timezone
from ..model import Identity, Job, MediaInfo, NotMedia, Outcome, Step, display
from ..rules.companions import companion_of, library_name
from ..rules.layout import (
    UNDATED_LAYOUT,
    Naming,
    number_of,
    numbered,
    numbered_name,
    pairs_with,
    render,
)
from ..rules.retry import FULL_ERRNOS, ONESHOT, Again, GiveUp, Policy, Trouble, classify
from ..store import catalog, journal
from ..store.db import Committer, catalog_trouble, state_blocked, transaction
from . import pairing

UNREADABLE = "unreadable:"  # a reject's reason starts with this: taken again once readable
WRITING = "still open for writing"
FULL_MARK = "the library is full"  # said in the reason of a copy that met a full library
BATCH_BYTES = 64 << 20  # take_many: files go through a step together up to this size
T = TypeVar("T")


class Describer(Protocol):
    """What ingest needs from metadata.Reader."""

    def describe_many(self, items: Sequence[tuple[bytes, str, int]],
                      heads: Sequence[bytes | None] | None = None
                      ) -> list[MediaInfo | NotMedia]:
        ...

    def head_of(self, original_name: str) -> Callable[[memoryview], bytes] | None:
        ...


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


def _when(info: MediaInfo | NotMedia | None) -> datetime:
    return info.captured if isinstance(info, MediaInfo) else datetime.max
Hook = Callable[[Job], None]


def _distinct_folders(fds: list[int]) -> list[int]:
    """One descriptor per folder (workers' sources often share one)."""
    seen: dict[tuple[int, int], int] = {}
    for fd in fds:
        st = os.fstat(fd)
        seen.setdefault((st.st_dev, st.st_ino), fd)
    return list(seen.values())


def _no_hook(job: Job) -> None:
    pass


def kill_hook_from_env() -> Hook:
    """Test seam for crash tests of the real command: MEDIASORTD_TEST_KILL_AT=STEP[:N]
    SIGKILLs this process right after the N-th job (default 1st) reaches STEP."""
    spec = os.environ.get("MEDIASORTD_TEST_KILL_AT")
    if not spec:
        return _no_hook
    step, _, nth = spec.partition(":")
    target = Step(step)
    remaining = [int(nth or 1)]

    def hook(job: Job) -> None:
        if job.step is target:
            remaining[0] -= 1
            if remaining[0] <= 0:
                os.kill(os.getpid(), 9)

    return hook


def inbox_roots(cfg: Config) -> list[bytes]:
    """The inbox folders, for {source}: `paths.inbox` (one path, or a list where the
    config has several)."""
    found = getattr(cfg, "inboxes", None) or cfg.inbox
    return [os.fsencode(p) for p in (found if isinstance(found, (list, tuple)) else [found])]


def source_name(path: bytes, roots: Sequence[bytes]) -> str:
    """The {source} of a file: with one inbox, the inbox sub-folder it came from (the
    first folder under the inbox; '' for a file right in the inbox); with several, the
    name of the inbox it came from; '' for a file from elsewhere (an import)."""
    for root in roots:
        top = root.rstrip(b"/")
        if path.startswith(top + b"/"):
            if len(roots) > 1:
                return os.fsdecode(os.path.basename(top))
            first, sep, _ = path[len(top) + 1:].partition(b"/")
            return os.fsdecode(first) if sep else ""
    return ""


def is_undated(cfg: Config, info: MediaInfo) -> bool:
    """Dated by nothing but its mtime, and undated files have a folder of their own."""
    return info.date_source == "mtime" and cfg.undated == "folder"


def preferred_path(cfg: Config, roots: Sequence[bytes], source: bytes,
                   info: MediaInfo) -> str:
    """The layout's library path for a new file (undated/ORIGINAL.ext for an undated one
    when undated = "folder"), before `.N`; LayoutError if it would leave the library."""
    original = os.fsdecode(os.path.basename(source))
    naming = Naming(info.captured, info.ext, original=original.rpartition(".")[0] or original,
                    make=info.make, model=info.model,
                    kind="video" if info.kind == "video" else "photo",
                    source=source_name(source, roots))
    return render(UNDATED_LAYOUT if is_undated(cfg, info) else cfg.layout, naming)


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


class Ingestor:
    """One worker's view: its own catalog connection and its own metadata reader."""

    def __init__(self, config: Config, conn: apsw.Connection, reader: Describer, *,
                 batch: str, log: Any, hook: Hook = _no_hook,
                 policy: Policy = ONESHOT, clock: Callable[[], float] = time.monotonic,
                 companion_grace: float = 0.0, committer: Committer | None = None):
        self.cfg = config
        self.conn = conn
        self.reader = reader
        self.batch = batch
        self.log = log
        self.hook = hook
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
        self.steps: dict[Step, Callable[[Job], Job | Retry]] = {
            Step.RECORDED: self._copy, Step.COPIED: self._decide,
            Step.DECIDED: self._place, Step.PLACED: self._retire,
        }

    # -- entry points -------------------------------------------------------------------

    def take(self, path: bytes, move: bool) -> Result:
        """Record a job for `path` (or find the one already recorded) and run it."""
        return self.take_many([path], move)[0][1]

    def take_many(self, paths: list[bytes], move: bool) -> list[tuple[bytes, Result]]:
        """take() for several paths, in lockstep: each step is done for every job of the
        batch before the next step starts, so they share one commit per step (through
        the group committer), one fsync per folder and one ExifTool request. Each job's
        durable order is exactly take()'s. A job that leaves the common path (a retry,
        a companion, a reject that was never copied, any trouble) goes on alone through
        resume(), the one code path of work and recovery. Raises only when recording
        fails (the caller looks at every path again later)."""
        results: dict[int, Result] = {}
        chunk: list[tuple[int, bytes, Identity]] = []
        chunk_bytes = 0
        folders = FolderStats()  # one open of a folder for its run of paths
        try:
            for i, path in enumerate(paths):
                try:
                    st = folders.stat(self._root(path), path)
                except FileNotFoundError:
                    results[i] = Skipped(path, "gone")
                    continue
                except OSError as e:
                    if e.errno not in WAY_ERRNOS:
                        raise
                    results[i] = Skipped(path, way_reason(e))
                    continue
                if stat.S_ISDIR(st.st_mode):  # lstat: a link to a folder is an entry
                    results[i] = Skipped(path, "a directory")
                    continue
                if chunk and chunk_bytes + st.st_size > BATCH_BYTES:
                    folders.close()  # resolved again after the batch's work
                    results.update(self._lockstep(chunk, move))
                    chunk, chunk_bytes = [], 0
                chunk.append((i, path, identity(st)))
                chunk_bytes += st.st_size
        finally:
            folders.close()
        if chunk:
            results.update(self._lockstep(chunk, move))
        return [(path, results[i]) for i, path in enumerate(paths)]

    def resume(self, job: Job) -> Result:
        """Run a job's remaining steps; each step is committed before the next starts."""
        started = self.clock()
        try:
            while job.step is not Step.DONE:
                out = self._step(job)
                if isinstance(out, Retry):
                    return self._deferred(out)
                job = out
                self.hook(job)
        finally:
            self._let_go(job.id)
        result = Finished(job, (self.clock() - started) * 1000)
        self._log_finished(result)
        return result

    def _let_go(self, job_id: int) -> None:
        """Close what this worker holds open for a job (its source and folder)."""
        if (src := self.held.pop(job_id, None)) is not None:
            src.close()

    def replay(self) -> list[Result]:
        """Resume every unfinished job, then remove staging files that no job owns."""
        results = [self.resume(job) for job in journal.unfinished(self.conn)]
        self.sweep_staging()
        return results

    def sweep_staging(self) -> None:
        sweep_staging(self.conn, self.staging, self.log)

    # -- lockstep -----------------------------------------------------------------------

    def _lockstep(self, batch: list[tuple[int, bytes, Identity]], move: bool
                  ) -> dict[int, Result]:
        """take_many's work for one chunk: {index: result}."""
        started = self.clock()
        make_dirs(self.staging, 0o700)
        recorded = self._commit_many([self._recorder(path, ident, move)
                                      for _, path, ident in batch])
        for out in recorded:
            if isinstance(out, (apsw.Error, OSError)):
                raise out  # the catalog's trouble, not one file's: the caller decides
        results: dict[int, Result] = {}
        alone: dict[int, Job | Retry] = {}  # jobs that go on by themselves
        jobs: dict[int, Job] = {}
        for (i, path, _), job in zip(batch, recorded):
            if isinstance(job, Exception):  # one file's values the journal cannot hold
                self.log.error("ingest.unrecordable", source=display(path),
                               error=f"{type(job).__name__}: {job}")
                results[i] = Skipped(path, f"cannot be recorded: {job}")
                continue
            if job is None:
                results[i] = Skipped(path, "already handled and left in place")
                continue
            assert isinstance(job, Job)
            self.log.debug("ingest.recorded", job_id=job.id, source=display(path))
            self.hook(job)
            if job.step is Step.RECORDED:
                jobs[i] = job
            else:
                alone[i] = job  # found unfinished: resumed where it stands

        def advanced(i: int, out: Job | Retry, want: Step) -> bool:
            """Keep a job in the lockstep if it reached `want`, else let it go alone."""
            if isinstance(out, Job):
                self.hook(out)
                if out.step is want:
                    jobs[i] = out
                    return True
            jobs.pop(i, None)
            alone[i] = out
            return False

        for i, job in list(jobs.items()):  # RECORDED -> COPIED
            advanced(i, self._step(job), Step.COPIED)
        self._decide_all(jobs, advanced)  # COPIED -> DECIDED
        self._place_all(jobs, advanced, alone)  # DECIDED -> PLACED
        self._retire_all(jobs, alone, results, started)  # PLACED -> DONE
        for i, left in alone.items():
            if isinstance(left, Retry):
                self._let_go(left.job.id)
                results[i] = self._deferred(left)
            else:
                results[i] = self.resume(left)
        self.heads.clear()
        for job_id in list(self.held):
            self._let_go(job_id)
        return results

    def _decide_all(self, jobs: dict[int, Job],
                    advanced: Callable[[int, Job | Retry, Step], bool]) -> None:
        """_decide for a batch: one ExifTool request for the files that need one, one
        commit for all."""
        ready = [i for i, job in jobs.items() if job.size and job.staged
                 and companion_of(os.path.basename(job.source)) is None]
        described: dict[int, MediaInfo | NotMedia] = {}
        try:
            described = dict(zip(ready, self.reader.describe_many(
                [(jobs[i].staged or b"", os.fsdecode(os.path.basename(jobs[i].source)),
                  jobs[i].identity.mtime_ns) for i in ready],
                [self.heads.pop(jobs[i].id, None) for i in ready])))
        except Exception as e:  # noqa: BLE001 - each job asks again, alone, and meets it there
            self.log.debug("ingest.describe_many_failed", error=str(e))
        plans: dict[int, Callable[[apsw.Connection], Job]] = {}
        for i, job in list(jobs.items()):
            try:
                plan = self._decision(job, described.get(i))
            except Exception as e:  # noqa: BLE001 - a worker survives one bad file
                plan = self._trouble(job, e)
            if isinstance(plan, (Job, Retry)):
                advanced(i, plan, Step.DECIDED)
            else:
                plans[i] = plan
        # reserved in capture order: a burst sharing a second is numbered by sub-second
        plans = dict(sorted(plans.items(), key=lambda kv: _when(described.get(kv[0]))))
        for i, out in zip(plans, self._commit_many(list(plans.values()))):
            advanced(i, self._trouble(jobs[i], out) if isinstance(out, Exception) else out,
                     Step.DECIDED)

    def _place_all(self, jobs: dict[int, Job],
                   advanced: Callable[[int, Job | Retry, Step], bool],
                   alone: dict[int, Job | Retry]) -> None:
        """_place for a batch: every copy linked, each folder fsynced once, then the
        staged names dropped."""
        linked: dict[int, Job] = {}
        for i, job in list(jobs.items()):
            if job.dest is None or job.sha256 is None or not job.staged \
                    or not os.path.exists(job.staged) or self._written_since(job):
                advanced(i, self._step(job), Step.PLACED)  # the rare cases, as resume would
                continue
            try:
                linked[i] = self._link(job)
            except Exception as e:  # noqa: BLE001 - a worker survives one bad file
                advanced(i, self._trouble(job, e), Step.PLACED)
        try:
            for folder in {os.path.dirname(job.dest or b"") for job in linked.values()}:
                fsync_dir(folder)
        except OSError:
            for i, job in linked.items():  # each finds its link and fsyncs again, alone
                jobs.pop(i)
                alone[i] = job
            return
        for i, job in linked.items():
            try:
                advanced(i, self._unstage(job), Step.PLACED)
            except Exception as e:  # noqa: BLE001 - a worker survives one bad file
                advanced(i, self._trouble(job, e), Step.PLACED)

    def _retire_all(self, jobs: dict[int, Job], alone: dict[int, Job | Retry],
                    results: dict[int, Result], started: float) -> None:
        """_retire for a batch: the sources removed, each folder fsynced once, one
        commit for all."""
        errors = {i: self._release(job) for i, job in jobs.items()}
        try:
            for folder in _distinct_folders([f for _, f in errors.values() if f is not None]):
                fsync_dir(folder)
        except OSError:
            alone.update(jobs)  # each removes (finds removed) and fsyncs again, alone
            return
        done = self._commit_many([self._done(job, errors[i][0]) for i, job in jobs.items()])
        for (i, job), out in zip(jobs.items(), done):
            if isinstance(out, Exception):
                alone[i] = self._trouble(job, out)
                continue
            self.hook(out)
            results[i] = result = Finished(out, (self.clock() - started) * 1000)
            self._log_finished(result)

    # -- the steps ----------------------------------------------------------------------

    def _recorder(self, path: bytes, ident: Identity, move: bool
                  ) -> Callable[[apsw.Connection], Job | None]:
        """The transaction that records a job for `path` (or finds the unfinished one);
        None when `path` was already handled and left in place."""
        def record(conn: apsw.Connection) -> Job | None:
            job = journal.active_for(conn, path)
            if job is None:
                settled = journal.settled_for(conn, path, ident) if move else None
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

    def _root(self, path: bytes) -> bytes | None:
        """The inbox `path` lies in: its folders are resolved beneath it, never through a
        link (paths.parent_beneath); None for a source named by the user (an import)."""
        inbox = self.cfg.inbox_of(path)
        return os.fsencode(inbox) if inbox is not None else None

    def _step(self, job: Job) -> Job | Retry:
        """Run the job's next step; any trouble becomes a retry or a failed job."""
        try:
            return self.steps[job.step](job)
        except Exception as e:  # noqa: BLE001 - a worker survives one bad file
            return self._trouble(job, e)

    def _deferred(self, out: Retry) -> Retry:
        job = out.job
        self.log.info("ingest.deferred", job_id=job.id, source=display(job.source),
                      reason=out.reason, retry_in=round(out.after, 1))
        return out

    def _copy(self, job: Job) -> Job | Retry:
        """RECORDED -> COPIED: a fsynced private copy and its sha256, in one read.

        The source is opened beneath the inbox (no link followed) and, when it is to be
        removed, under a read lease: the kernel's word that no one has it open for
        writing (a writer we cannot see, too); one who opens it later breaks the lease,
        and the job starts again. The source and its folder stay open until retired."""
        assert job.staged is not None
        self._let_go(job.id)
        src = open_source_beneath(self._root(job.source), job.source)
        if isinstance(src, Unusable):
            return self._unusable(job, src)
        assert src.fd is not None and src.st is not None
        fd, st, keep = src.fd, src.st, False
        try:
            ident = identity(st)
            if job.move:
                why = take_lease(fd)
                if why == "busy":
                    return self._retry(job, Trouble.WRITER,
                                       f"{WRITING}; waiting until it is closed", ident)
                src.leased = why is None
                if why is not None and why not in self.lease_trouble:
                    self.lease_trouble.add(why)
                    self.log.warning("ingest.no_lease", source=display(job.source), reason=why,
                                     note="a writer the daemon cannot see is not detected: "
                                     "grant CAP_LEASE, or make the daemon's user own the inbox")
            try:
                copied = copy_and_hash(fd, job.staged, self.cfg.file_mode, before=st,
                                       head=self.reader.head_of(
                                           os.fsdecode(os.path.basename(job.source))),
                                       intact=(lambda: lease_held(fd)) if src.leased else None)
            except SourceChanged as e:
                unlink_quiet(job.staged)
                return self._retry(job, Trouble.CHANGED,
                                   f"the file changed while being copied ({e})", ident)
            except OSError as e:
                unlink_quiet(job.staged)
                if e.errno in FULL_ERRNOS:
                    return self._retry(job, Trouble.FULL,
                                       f"copy failed: {e.strerror}: {FULL_MARK}")
                raise
            self.held[job.id], keep = src, True
        finally:
            if not keep:
                src.close()
        # The staged copy is durable (fsynced). COPIED is committed together with the
        # decision that follows at once (one commit fewer per file): a crash in between
        # leaves the job at RECORDED, and replay copies again (the source is still
        # there). No fsync of the staging folder either, for the same reason.
        if copied.head:
            self.heads[job.id] = copied.head
        return dataclasses.replace(job, step=Step.COPIED, sha256=copied.sha256,
                                   size=copied.size, identity=ident)

    @staticmethod
    def _copied(job: Job) -> dict[str, Any]:
        """The columns COPIED sets, written with the next commit."""
        return {"sha256": job.sha256, "bytes": job.size, "dev": job.identity.dev,
                "ino": job.identity.ino, "size": job.identity.size,
                "mtime_ns": job.identity.mtime_ns, "error": None}

    def _unusable(self, job: Job, why: Unusable) -> Job:
        """A source we cannot read: gone (vanished) or not a readable regular file
        (rejected: the entry itself is moved to `rejected`, never opened)."""
        with transaction(self.conn):
            if why.missing:
                return journal.advance(self.conn, job.id, Step.DONE,
                                       outcome=Outcome.VANISHED, error=why.reason)
            dest = self._side_path(self.cfg.rejected, job) if job.move else None
            reason = f"{UNREADABLE} {why.reason}" if why.unreadable else why.reason
            return journal.advance(self.conn, job.id, Step.DECIDED, outcome=Outcome.REJECTED,
                                   error=reason, dest=dest, sha256=None)

    def _decide(self, job: Job) -> Job | Retry:
        """COPIED -> DECIDED, in one transaction: duplicate, rejected, or a catalog row
        with a reserved library name."""
        plan = self._decision(job)
        return plan if isinstance(plan, (Job, Retry)) else self._commit(plan)

    def _decision(self, job: Job, described: MediaInfo | NotMedia | None = None
                  ) -> Job | Retry | Callable[[apsw.Connection], Job]:
        """The transaction that decides a COPIED job, or what became of the job when
        there is nothing to decide yet. `described`: what the staged file is, when it
        was already read (take_many reads a whole batch in one ExifTool request)."""
        assert job.staged is not None and job.sha256 is not None and job.size is not None
        head = self.heads.pop(job.id, None)
        if not os.path.exists(job.staged):  # lost (power cut before the staging fsync)
            with transaction(self.conn):
                return journal.advance(self.conn, job.id, Step.RECORDED)
        name = os.path.basename(job.source)
        companion = companion_of(name)
        partner: catalog.Entry | None = None
        if companion is not None:
            found = pairing.partner(self.conn, job, companion, self.companion_grace,
                                    self.expected)
            if found is pairing.WAIT:  # keep the copy while waiting: commit COPIED
                with transaction(self.conn):
                    journal.advance(self.conn, job.id, Step.COPIED, **self._copied(job))
                return Retry(job, 1.0, "waiting for the photo it belongs with")
            partner = found if isinstance(found, catalog.Entry) else None
        info: MediaInfo | NotMedia
        if job.size == 0:
            info = NotMedia("an empty file")
        elif companion is not None and companion.kind == "sidecar" and partner is not None:
            info = pairing.as_companion(partner, companion, "sidecar")
        else:
            info = described or self.reader.describe_many(
                [(job.staged, os.fsdecode(name), job.identity.mtime_ns)], [head])[0]
            if isinstance(info, MediaInfo) and partner is not None and not \
                    pairing.motion_pairs(info, partner):
                partner = None  # a video of its own that only shares the name
            if isinstance(info, MediaInfo) and partner is not None:
                info = dataclasses.replace(pairing.as_companion(partner, companion, info.kind),
                                           file_type=info.file_type, mime=info.mime,
                                           content_id=info.content_id)
            elif isinstance(info, MediaInfo) and info.confidence != "high":
                info = pairing.takeout_date(job.source, info, self.tz,
                                            self._root(job.source))
            if isinstance(info, MediaInfo) and partner is None \
                    and info.date_source == "mtime" and self.cfg.undated == "reject":
                info = NotMedia("no capture date in its content, name or sidecar "
                                "(ingest.undated = \"reject\")")
        copied = self._copied(job)
        sha256, size = job.sha256, job.size
        mtime_ns = os.stat(job.staged).st_mtime_ns  # the library file's (it is linked)
        # a sidecar filed with its photo: (the photo's row id, what dates a sidecar of it)
        sidecar_of = ((partner.id, f"partner:{catalog.printable(partner.path)}")
                      if companion is not None and companion.kind == "sidecar"
                      and partner is not None and isinstance(info, MediaInfo) else None)

        def decide(conn: apsw.Connection) -> Job:
            key = sha256
            existing = catalog.by_sha256(conn, sha256)
            if existing is not None and sidecar_of is not None \
                    and existing.date_source != sidecar_of[1]:
                # the same bytes as another photo's sidecar: this photo keeps its own
                key = catalog.companion_key(sha256, sidecar_of[0])
                existing = catalog.by_sha256(conn, key)
            if existing is not None and existing.missing_since:
                catalog.delete(conn, existing.id)  # lost from the library: file it anew
                existing = None
            if existing is not None:
                quarantine = job.move and self.cfg.on_duplicate == "quarantine"
                return journal.advance(conn, job.id, Step.DECIDED, **copied,
                                       outcome=Outcome.DUPLICATE,
                                       duplicate_of=existing.id,
                                       dest=self._side_path(self.cfg.duplicates, job)
                                       if quarantine else None)
            if isinstance(info, NotMedia) or (companion is not None and partner is None
                                              and companion.kind == "sidecar"):
                reason = info.reason if isinstance(info, NotMedia) else ""
                if companion is not None and companion.kind == "sidecar" and job.size:
                    reason = "a sidecar whose photo is not in the library"
                return journal.advance(
                    conn, job.id, Step.DECIDED, **{**copied, "error": reason},
                    outcome=Outcome.REJECTED,
                    dest=self._side_path(self.cfg.rejected, job) if job.move else None)
            rel = (catalog.free_name(conn, self.library, library_name(partner.path, companion))
                   if partner is not None and companion is not None
                   else self._library_name(conn, job, info))
            catalog.insert(conn, sha256=key, size=size, path=rel, info=info,
                           original_name=display(name), source=job.source,
                           imported_at=journal.now(), job_id=job.id, mtime_ns=mtime_ns)
            return journal.advance(conn, job.id, Step.DECIDED, **copied,
                                   outcome=Outcome.FILED,
                                   dest=os.path.join(self.library, os.fsencode(rel)))

        return decide

    # -- naming -------------------------------------------------------------------------

    def _library_name(self, conn: apsw.Connection, job: Job, info: MediaInfo) -> str:
        """The library name reserved for a new file (inside the decision's transaction):
        the layout's path (an undated file's own one under undated/ when undated =
        "folder"), checked to stay beneath the library, then `.N` if taken. A RAW and
        the JPEG or HEIC shot with it share one stem (`x.cr2`, `x.jpg`)."""
        preferred = preferred_path(self.cfg, self.roots, job.source, info)
        if is_undated(self.cfg, info) or not pairs_with(info.ext):
            return catalog.free_name(conn, self.library, preferred)
        return self._pair_name(conn, job, info, preferred)

    def _pair_name(self, conn: apsw.Connection, job: Job, info: MediaInfo,
                   preferred: str) -> str:
        """A RAW or a JPEG/HEIC: the stem of its partner (same folder, same name but the
        extension, shot in the same second), when already catalogued and free with our
        extension; else the first stem that no catalogued file has with any extension,
        so that the partner, decided later, finds it free: in a burst of pairs sharing
        a second, the `.N` is chosen for the pair."""
        folder, base = os.path.split(job.source)
        stem = base.rpartition(b".")[0] or base
        second = info.captured.replace(microsecond=0)
        for src, entry in catalog.filed_from(conn, os.path.join(folder, stem + b".")):
            other_base = os.path.basename(src)
            if entry.job_id == job.id or other_base.rpartition(b".")[0] != stem \
                    or not pairs_with(info.ext, os.fsdecode(other_base.rpartition(b".")[2])):
                continue
            if entry.missing_since or datetime.fromisoformat(
                    entry.captured).replace(microsecond=0) != second:
                continue
            n = number_of(entry.path, preferred)
            if n is not None and catalog.is_free(conn, self.library,
                                                 candidate := numbered(preferred, n)):
                return candidate
        return catalog.free_stem(conn, self.library, preferred)

    def _place(self, job: Job) -> Job | Retry:
        """DECIDED -> PLACED: the staged copy gets its final name without overwriting
        anything (or is dropped, when nothing is to be kept); rejects that were never
        copied are moved as they are.

        PLACED is not committed on its own: retiring the source follows at once and
        commits DONE. Replay of a job still at DECIDED finds the placed copy (and no
        staged one) and goes on from there, so the commit would buy nothing."""
        assert job.staged is not None
        if job.outcome is Outcome.REJECTED and job.sha256 is None:
            return self._move_entry(job)
        if self._written_since(job):
            return self._copy_again(job, "a writer opened the source while it was being filed")
        if job.dest is None:
            unlink_quiet(job.staged)
        elif os.path.exists(job.staged):
            linked = self._link(job)
            fsync_dir(os.path.dirname(linked.dest or b""))
            return self._unstage(linked)
        elif hash_file(job.dest, strict=True) != (job.sha256, job.size):
            # neither the staged copy nor a placed one survived: copy again from the source
            with transaction(self.conn):
                if (entry := catalog.by_job(self.conn, job.id)) is not None:
                    catalog.delete(self.conn, entry.id)
                return journal.advance(self.conn, job.id, Step.RECORDED, outcome=None, dest=None)
        return dataclasses.replace(job, step=Step.PLACED)

    def _written_since(self, job: Job) -> bool:
        """A writer opened this worker's leased source since it was copied."""
        src = self.held.get(job.id)
        return (src is not None and src.leased and src.fd is not None
                and not lease_held(src.fd))

    def _copy_again(self, job: Job, reason: str) -> Retry | Job:
        """Before anything is placed: drop the copy and its reservation, and start the job
        again from the source (once the writer is done), so no file is filed in pieces."""
        assert job.staged is not None
        self._let_go(job.id)
        unlink_quiet(job.staged)
        with transaction(self.conn):
            if (entry := catalog.by_job(self.conn, job.id)) is not None:
                catalog.delete(self.conn, entry.id)
            job = journal.advance(self.conn, job.id, Step.RECORDED, outcome=None, dest=None)
        return self._retry(job, Trouble.REOPENED, reason)

    def _link(self, job: Job) -> Job:
        """The staged copy linked at the job's destination, or at the next free name if
        a stranger took it (not durable until the folder is fsynced)."""
        assert job.staged is not None and job.dest is not None
        dest, made = job.dest, False
        while True:
            try:
                if link_noreplace(job.staged, dest):
                    break
            except FileNotFoundError:
                if made or not os.path.exists(job.staged):
                    raise
                make_dirs(os.path.dirname(dest), self.cfg.dir_mode)  # a new folder
                made = True
                continue
            if same_file(job.staged, dest):
                break  # linked before (replay)
            dest = self._rename_dest(job, dest)  # a stranger took the name
        return dataclasses.replace(job, dest=dest)

    @staticmethod
    def _unstage(job: Job) -> Job:
        """Drop the staged name of a copy whose library name is durable: PLACED."""
        assert job.staged is not None
        os.unlink(job.staged)
        return dataclasses.replace(job, step=Step.PLACED)

    def _move_entry(self, job: Job) -> Job:
        """Move a rejected entry (FIFO, symlink, unreadable file...) into `rejected` as it
        is, or leave it alone where that is not safe."""
        dest, note = job.dest, None
        if dest is not None:
            try:
                src_dir, name = parent_beneath(self._root(job.source), job.source)
            except OSError as e:  # moved before a crash, or removed, or its folder swapped
                src_dir, name = -1, b""
                if e.errno != errno.ENOENT:
                    dest, note = None, f"left alone: {way_reason(e)}"
            try:
                if src_dir >= 0 and dest is not None:
                    dest, note = self._move_from(job, src_dir, name, dest)
            finally:
                if src_dir >= 0:
                    os.close(src_dir)
        with transaction(self.conn):
            fields: dict[str, Any] = {"dest": dest}
            if note:
                fields["error"] = f"{job.error}; {note}"
            return journal.advance(self.conn, job.id, Step.PLACED, **fields)

    def _move_from(self, job: Job, src_dir: int, name: bytes, dest: bytes
                   ) -> tuple[bytes | None, str | None]:
        """_move_entry's move of the entry `name` of folder `src_dir` (renameat2, or
        recreated across filesystems: moves.move_at): where it went and a note."""
        try:
            st = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
        except FileNotFoundError:
            return dest, None  # moved before a crash, or removed by someone
        if identity(st).ino != job.identity.ino:  # not st_dev: see Identity
            return None, "a different file now stands at the source; left alone"
        make_dirs(os.path.dirname(dest), self.cfg.dir_mode)
        try:
            dst_dir = open_dir(os.path.dirname(dest))
            try:
                while not move_at(src_dir, name, dst_dir, os.path.basename(dest),
                                  expected_ino=job.identity.ino):
                    dest = self._rename_dest(job, dest)
                fsync_dir(dst_dir)
                fsync_dir(src_dir)
            finally:
                os.close(dst_dir)
        except SourceChanged:
            return None, "a different file now stands at the source; left alone"
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM) and (job.error or "").startswith(
                    UNREADABLE):
                return None, ("left in the inbox (it cannot be read, so not copied to "
                              "another filesystem): filed once it is readable")
            return None, f"left in place: cannot move it: {e.strerror}"
        return dest, None

    def _retire(self, job: Job) -> Job:
        """PLACED -> DONE: remove the source, but only if its bytes are safely placed
        elsewhere and it is still the very file that was copied."""
        error, folder = self._release(job)
        if folder is not None:
            fsync_dir(folder)
        return self._commit(self._done(job, error))

    def _release(self, job: Job) -> tuple[str | None, int | None]:
        """Remove a PLACED job's source if it is to go (unlinkat through the folder it was
        opened from, only if it is still the inode that was copied): the error to record,
        and the folder (descriptor) to fsync before DONE is committed (None: nothing was
        removed)."""
        keep = (not job.move or job.sha256 is None
                or (job.outcome is Outcome.DUPLICATE and self.cfg.on_duplicate == "keep"))
        if keep:
            return job.error, None
        src = self.held.get(job.id)
        try:
            if src is None:  # resumed after a restart: its folder found again, no link
                try:
                    dir_fd, name = parent_beneath(self._root(job.source), job.source)
                except FileNotFoundError:
                    return job.error, None
                except OSError as e:
                    if e.errno not in WAY_ERRNOS:
                        raise
                    return f"the source's folder was replaced ({way_reason(e)}); left alone", \
                        None
                src = self.held[job.id] = Source(dir_fd, name)
            if src.leased and src.fd is not None and not lease_held(src.fd):
                return ("a writer opened the source while it was being filed; left in "
                        "place"), None
            if unlink_at_if(src.dir_fd, src.name, job.identity, src.st):
                return job.error, src.dir_fd
            return "the source changed after it was copied; left in place", None
        except OSError as e:
            return f"cannot remove the source: {e.strerror}; left in place", None

    @staticmethod
    def _done(job: Job, error: str | None) -> Callable[[apsw.Connection], Job]:
        def done(conn: apsw.Connection) -> Job:
            return journal.advance(conn, job.id, Step.DONE, error=error)

        return done

    # -- helpers ------------------------------------------------------------------------

    def _commit_many(self, fns: list[Callable[[apsw.Connection], T]]) -> list[T | Exception]:
        """_commit for several transactions (together, through the group committer):
        each one's result or the exception it raised (rolled back alone)."""
        if self.committer is not None:
            return self.committer.run_many(fns)
        out: list[T | Exception] = []
        for fn in fns:
            try:
                out.append(self._commit(fn))
            except Exception as e:  # noqa: BLE001 - handed back with its job
                out.append(e)
        return out

    def _commit(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run `fn` in a write transaction and return once it is durable: through the
        pool's group committer when there is one, else on our own connection."""
        if self.committer is not None:
            return self.committer.run(fn)
        with transaction(self.conn):
            return fn(self.conn)

    def _side_path(self, root: os.PathLike[str], job: Job) -> bytes:
        """Where a duplicate or reject goes: its own name under `root`."""
        return os.path.join(os.fsencode(root), numbered_name(os.path.basename(job.source), 0))

    def _rename_dest(self, job: Job, dest: bytes) -> bytes:
        """The next free name after `dest`, committed before it is used."""
        with transaction(self.conn):
            if job.outcome is Outcome.FILED:
                entry = catalog.by_job(self.conn, job.id)
                assert entry is not None
                rel = catalog.free_name(self.conn, self.library, entry.path)
                catalog.rename(self.conn, entry.id, rel)
                new = os.path.join(self.library, os.fsencode(rel))
            else:
                base, n = os.path.basename(job.source), 1
                while os.path.lexists(new := os.path.join(os.path.dirname(dest),
                                                          numbered_name(base, n))):
                    n += 1
            journal.advance(self.conn, job.id, job.step, dest=new)
        self.log.info("ingest.name_taken", job_id=job.id, taken=display(dest), dest=display(new))
        return new

    def _retry(self, job: Job, trouble: Trouble, reason: str, ident: Identity | None = None,
               *, error: Exception | None = None, state: str = "") -> Retry | Job:
        """Record the attempt (when the journal can take it), then do what the retry
        policy decides: try again later, fail the job, or stop with `error`."""
        age = 0.0
        if trouble.records:
            with transaction(self.conn):
                journal.note_attempt(self.conn, job.id, reason, ident, count=trouble.counts,
                                     full=trouble is Trouble.FULL)
                job = journal.get(self.conn, job.id)
                if trouble is Trouble.WRITER:  # an import waits for it by the job's age
                    age = journal.age(self.conn, job.id)
        decision = self.policy.decide(trouble, job.attempts, age=age,
                                      settle=self.cfg.settle_seconds)
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
            reason = (f"{job.step.value}: the catalog's filesystem is {state} "
                      f"({self.cfg.state_dir})")
        elif trouble is Trouble.TOOL:  # ExifTool missing or dying: not this file's fault
            reason = f"{job.step.value}: {e}"
        elif isinstance(e, OSError):
            where = display(e.filename) if isinstance(e.filename, bytes) else e.filename
            reason = f"{job.step.value}: {e.strerror or e} ({where})"
        else:
            if trouble is Trouble.BUG:
                # e may come from a batch's results, outside its except: named for the traceback
                self.log.error("ingest.bug", job_id=job.id, source=display(job.source),
                               exc_info=e)
            reason = f"{job.step.value}: {type(e).__name__}: {e}"
        return self._retry(job, trouble, reason, error=e, state=state)

    def _fail(self, job: Job, error: str) -> Job:
        """Give up on a job: undo whatever it reserved, leave the source untouched."""
        with transaction(self.conn):
            if job.step in (Step.RECORDED, Step.COPIED, Step.DECIDED):
                entry = catalog.by_job(self.conn, job.id)
                if entry is not None:
                    catalog.delete(self.conn, entry.id)
                if job.staged and job.dest and same_file(job.staged, job.dest):
                    os.unlink(job.dest)
                if job.staged:
                    unlink_quiet(job.staged)
                return journal.advance(self.conn, job.id, Step.DONE, outcome=Outcome.FAILED,
                                       error=error, dest=None)
            # the bytes are placed; only retiring the source went wrong
            return journal.advance(self.conn, job.id, Step.DONE, error=error)

    def _log_finished(self, result: Finished) -> None:
        job = result.job
        level = "warning" if job.outcome in (Outcome.FAILED, Outcome.REJECTED) or (
            job.error and "left in place" in job.error) else "info"
        getattr(self.log, level)(
            "ingest.finished", job_id=job.id, outcome=job.outcome.value if job.outcome else None,
            source=display(job.source), dest=display(job.dest) if job.dest else None,
            sha256=job.sha256, bytes=job.size, duration_ms=round(result.duration_ms, 1),
            error=job.error, batch=job.batch)
