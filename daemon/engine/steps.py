"""The steps of a job, each written once for a batch (`step(jobs) -> answers`; a single
job is a batch of one): copy, decide (decide.py), place, retire. Each does one durable
effect, then advances the job in one commit, and looks at the disk first, so running it
twice is harmless. Nothing is deleted but a source whose bytes are safely placed.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..files.copy import SourceChanged, copy_and_hash, hash_file
from ..files.dirs import fsync_dir, make_dirs
from ..files.moves import link_noreplace, move_at, same_file, unlink_at_if, unlink_quiet
from ..files.paths import (
    WAY_ERRNOS,
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
from ..model import Job, Outcome, Step, display
from ..rules.retry import FULL_ERRNOS, Trouble
from ..store import journal
from .decide import Deciding
from .worker import FULL_MARK, UNREADABLE, WRITING, Retry, filled

if TYPE_CHECKING:
    import apsw

Answer = Job | Retry  # what a step makes of a job: the job advanced, or a retry


def _folder(fd: int) -> object:
    """Which folder a descriptor is open on (workers' sources often share one)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return fd  # fsync_dir meets the trouble and says so
    return (st.st_dev, st.st_ino)


class Steps(Deciding):
    """One worker's steps."""

    @property
    def steps(self) -> dict[Step, Callable[[list[Job]], list[Answer]]]:
        """The step that takes on a job, by the step it is at."""
        return {
            Step.RECORDED: self.copy_all,
            Step.COPIED: self.decide_all,
            Step.DECIDED: self.place_all,
            Step.PLACED: self.retire_all,
        }

    # -- copy ---------------------------------------------------------------------------

    def copy_all(self, jobs: list[Job]) -> list[Answer]:
        """RECORDED -> COPIED for each job in turn (see _copy)."""
        out: list[Answer] = []
        for job in jobs:
            try:
                out.append(self._copy(job))
            except Exception as e:  # noqa: BLE001 - a worker survives one bad file
                out.append(self._trouble(job, e))
        return out

    def _copy(self, job: Job) -> Answer:
        """RECORDED -> COPIED: a fsynced private copy and its sha256, in one read.

        The source is opened beneath the inbox (no link followed) and, when it is to be
        removed, under a read lease: the kernel's word that no one has it open for
        writing (a writer we cannot see, too); one who opens it later breaks the lease,
        and the job starts again. The source and its folder stay open until retired."""
        assert job.staged is not None
        self._let_go(job.id)
        src = open_source_beneath(self._root(job.source), job.source, self.folders)
        if isinstance(src, Unusable):
            return self._unusable(job, src)
        assert src.fd is not None and src.st is not None
        fd, st, keep = src.fd, src.st, False
        try:
            ident = identity(st)
            if job.move:
                why = take_lease(fd)
                if why == "busy":
                    return self._retry(
                        job, Trouble.WRITER, f"{WRITING}; waiting until it is closed", ident
                    )
                src.leased = why is None
                if why is not None and why not in self.lease_trouble:
                    self.lease_trouble.add(why)
                    self.log.warning(
                        "ingest.no_lease",
                        source=display(job.source),
                        reason=why,
                        note="a writer the daemon cannot see is not detected: "
                        "grant CAP_LEASE, or make the daemon's user own the inbox",
                    )
            try:
                copied = copy_and_hash(
                    fd,
                    job.staged,
                    self.cfg.file_mode,
                    before=st,
                    head=self.reader.head_of(os.fsdecode(os.path.basename(job.source))),
                    intact=(lambda: lease_held(fd)) if src.leased else None,
                )
            except SourceChanged as e:
                unlink_quiet(job.staged)
                return self._retry(
                    job, Trouble.CHANGED, f"the file changed while being copied ({e})", ident
                )
            except OSError as e:
                unlink_quiet(job.staged)
                if e.errno in FULL_ERRNOS:
                    return self._retry(job, Trouble.FULL, f"copy failed: {e.strerror}: {FULL_MARK}")
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
        return dataclasses.replace(
            job, step=Step.COPIED, sha256=copied.sha256, size=copied.size, identity=ident
        )

    def _unusable(self, job: Job, why: Unusable) -> Job:
        """A source we cannot read: gone (vanished) or not a readable regular file
        (rejected: the entry itself is moved to `rejected`, never opened)."""
        if why.missing:
            return self._advance(job, Step.DONE, outcome=Outcome.VANISHED, error=why.reason)
        dest = self._side_path(self.cfg.rejected, job) if job.move else None
        reason = f"{UNREADABLE} {why.reason}" if why.unreadable else why.reason
        return self._advance(
            job, Step.DECIDED, outcome=Outcome.REJECTED, error=reason, dest=dest, sha256=None
        )

    # -- place --------------------------------------------------------------------------

    def place_all(self, jobs: list[Job]) -> list[Answer]:
        """DECIDED -> PLACED: each staged copy gets its final name without overwriting
        anything (or is dropped, when nothing is to be kept), each folder is fsynced
        once, then the staged names are dropped; rejects that were never copied are
        moved as they are.

        PLACED is not committed on its own: retiring the source follows at once and
        commits DONE. Replay of a job still at DECIDED finds the placed copy (and no
        staged one) and goes on from there, so the commit would buy nothing."""
        out: list[Answer | None] = [None] * len(jobs)
        linked: dict[int, Job] = {}  # linked at their names, not yet durable
        for i, job in enumerate(jobs):
            try:
                assert job.staged is not None
                if job.outcome is Outcome.REJECTED and job.sha256 is None:
                    out[i] = self._move_entry(job)
                elif self._written_since(job):
                    out[i] = self._copy_again(
                        job, "a writer opened the source while it was being filed"
                    )
                elif job.dest is None:
                    unlink_quiet(job.staged)
                    out[i] = dataclasses.replace(job, step=Step.PLACED)
                elif os.path.exists(job.staged):
                    linked[i] = self._link(job)
                elif hash_file(job.dest, strict=True) != (job.sha256, job.size):
                    # neither the staged copy nor a placed one survived: copy again
                    out[i] = self._restart(job)
                else:
                    out[i] = dataclasses.replace(job, step=Step.PLACED)  # placed before
            except Exception as e:  # noqa: BLE001 - a worker survives one bad file
                out[i] = self._trouble(job, e)
        folders: dict[bytes, list[int]] = {}
        for i, job in linked.items():
            folders.setdefault(os.path.dirname(job.dest or b""), []).append(i)
        for folder, members in folders.items():
            try:
                fsync_dir(folder)
            except OSError as e:
                for i in members:
                    out[i] = self._trouble(linked.pop(i), e)
        for i, job in linked.items():
            try:
                out[i] = self._unstage(job)
            except Exception as e:  # noqa: BLE001 - a worker survives one bad file
                out[i] = self._trouble(job, e)
        return filled(out)

    def _written_since(self, job: Job) -> bool:
        """A writer opened this worker's leased source since it was copied."""
        src = self.held.get(job.id)
        return src is not None and src.leased and src.fd is not None and not lease_held(src.fd)

    def _copy_again(self, job: Job, reason: str) -> Answer:
        """Before anything is placed: drop the copy and its reservation, and start the job
        again from the source (once the writer is done), so no file is filed in pieces."""
        assert job.staged is not None
        self._let_go(job.id)
        unlink_quiet(job.staged)
        job = self._restart(job)
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
        fields: dict[str, Any] = {"dest": dest}
        if note:
            fields["error"] = f"{job.error}; {note}"
        return self._advance(job, Step.PLACED, **fields)

    def _move_from(
        self, job: Job, src_dir: int, name: bytes, dest: bytes
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
                while not move_at(
                    src_dir, name, dst_dir, os.path.basename(dest), expected_ino=job.identity.ino
                ):
                    dest = self._rename_dest(job, dest)
                fsync_dir(dst_dir)
                fsync_dir(src_dir)
            finally:
                os.close(dst_dir)
        except SourceChanged:
            return None, "a different file now stands at the source; left alone"
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM) and (job.error or "").startswith(UNREADABLE):
                return None, (
                    "left in the inbox (it cannot be read, so not copied to "
                    "another filesystem): filed once it is readable"
                )
            return None, f"left in place: cannot move it: {e.strerror}"
        return dest, None

    # -- retire -------------------------------------------------------------------------

    def retire_all(self, jobs: list[Job]) -> list[Answer]:
        """PLACED -> DONE: each source removed, but only if its bytes are safely placed
        elsewhere and it is still the very file that was copied; each folder fsynced
        once, one commit for all."""
        out: list[Answer | None] = [None] * len(jobs)
        released: dict[int, tuple[str | None, int | None]] = {}
        for i, job in enumerate(jobs):
            try:
                released[i] = self._release(job)
            except Exception as e:  # noqa: BLE001 - a worker survives one bad file
                out[i] = self._trouble(job, e)
        folders: dict[object, tuple[int, list[int]]] = {}  # one fsync per folder
        seen: dict[int, object] = {}  # a batch's sources share their folder's descriptor
        for i, (_, fd) in released.items():
            if fd is not None:
                if fd not in seen:
                    seen[fd] = _folder(fd)
                folders.setdefault(seen[fd], (fd, []))[1].append(i)
        for fd, members in folders.values():
            try:
                fsync_dir(fd)
            except OSError as e:  # each finds its source removed next time
                for i in members:
                    del released[i]
                    out[i] = self._trouble(jobs[i], e)
        done = self._commit_many([self._done(jobs[i], released[i][0]) for i in released])
        for i, got in zip(released, done, strict=True):
            out[i] = self._trouble(jobs[i], got) if isinstance(got, Exception) else got
        return filled(out)

    def _release(self, job: Job) -> tuple[str | None, int | None]:
        """Remove a PLACED job's source if it is to go (unlinkat through the folder it was
        opened from, only if it is still the inode that was copied): the error to record,
        and the folder (descriptor) to fsync before DONE is committed (None: nothing was
        removed)."""
        keep = (
            not job.move
            or job.sha256 is None
            or (job.outcome is Outcome.DUPLICATE and self.cfg.on_duplicate == "keep")
        )
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
                    return f"the source's folder was replaced ({way_reason(e)}); left alone", None
                src = self.held[job.id] = Source(dir_fd, name)
            if src.leased and src.fd is not None and not lease_held(src.fd):
                return ("a writer opened the source while it was being filed; left in place"), None
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
