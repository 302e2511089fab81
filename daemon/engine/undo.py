"""Undo: put the files of an import or a daemon burst back where they came from, by the
protocol of ingest: the intent for every file is committed first, then RECORDED -> (bytes
back at the source, fsynced) RESTORED -> (origin and catalog row removed) DONE. Nothing
is ever written over (a different file there: `name.1.ext` beside it), and the bytes are
in at least one place at every moment (link or copy first, remove the origin after).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..files.copy import copy_and_hash, hash_file
from ..files.dirs import fsync_dir, make_dirs
from ..files.moves import link_noreplace, link_temp, same_file, unlink_quiet
from ..files.paths import Unusable, open_source
from ..model import Job, Outcome, UndoItem, UndoOutcome, UndoStep, display
from ..rules.layout import numbered_name
from ..store import catalog, journal, undolog
from ..store.db import transaction
from .hooks import NO_HOOKS, Hooks

if TYPE_CHECKING:
    import apsw

UNDONE_DIR = b".undone"  # {library}/.undone/BATCH/...: files that came from the inbox


class Undoer:
    """Plans and runs undos on one catalog connection (the caller holds the state lock)."""

    def __init__(self, cfg: Config, conn: apsw.Connection, log: Any, hooks: Hooks = NO_HOOKS):
        self.cfg = cfg
        self.conn = conn
        self.log = log
        self.hooks = hooks
        self.library = os.fsencode(cfg.library)
        self.inboxes = tuple(os.fsencode(i) for i in cfg.inboxes)
        self.steps: dict[UndoStep, Callable[[UndoItem], UndoItem]] = {
            UndoStep.RECORDED: self._restore,
            UndoStep.RESTORED: self._remove,
        }

    # -- entry points -------------------------------------------------------------------

    def replay(self) -> list[UndoItem]:
        """Finish every undo that was interrupted."""
        items = undolog.unfinished(self.conn)
        if items:
            self.log.info("undo.replay_started", files=len(items))
        return [self.run(item) for item in items]

    def plan(self, job_ids: list[int], batch: str) -> list[UndoItem]:
        """Record the intent for every job in one transaction, then return the items in
        the order to run them: copies out of the library (duplicates whose only bytes are
        another row's file) before the moves that could take those bytes away."""
        with transaction(self.conn):
            now = journal.now()
            ids = [
                undolog.record(self.conn, batch=batch, now=now, **self._intent(job))
                for job in sorted(
                    (journal.get(self.conn, i) for i in job_ids),
                    key=lambda j: j.outcome is not Outcome.DUPLICATE,
                )
            ]
            return [undolog.get(self.conn, i) for i in ids]

    def preview(self, job_ids: list[int]) -> list[tuple[Job, UndoItem]]:
        """What `plan` + `run` would do, changing nothing (for --dry-run)."""
        out = []
        for job in (journal.get(self.conn, i) for i in job_ids):
            intent = self._intent(job)
            done = intent.pop("done")
            item = UndoItem(
                id=0,
                batch="dry-run",
                step=UndoStep.RECORDED,
                dest=None,
                outcome=None,
                error=None,
                **intent,
            )
            if done is not None:
                item = _with(item, step=UndoStep.DONE, outcome=done[0], error=done[1])
            else:
                found = self._find_place(item, dry_run=True)
                if isinstance(found, str):
                    item = _with(item, step=UndoStep.DONE, outcome=UndoOutcome.KEPT, error=found)
                else:
                    cand, held = found
                    item = _with(
                        item, step=UndoStep.DONE, dest=cand, outcome=self._label(item, cand, held)
                    )
            out.append((job, item))
        return out

    def run(self, item: UndoItem) -> UndoItem:
        """Run an item's remaining steps; each is committed before the next starts."""
        if item.step is UndoStep.RECORDED:
            self.hooks.after_undo_step("recorded", item)
        while item.step is not UndoStep.DONE:
            try:
                item = self.steps[item.step](item)
            except OSError as e:
                where = display(e.filename) if isinstance(e.filename, bytes) else e.filename
                item = self._finish(
                    item,
                    UndoOutcome.KEPT,
                    f"{item.step.value}: {e.strerror or e} ({where}); "
                    f"left at {display(item.origin)}",
                )
            self.hooks.after_undo_step(item.step.value, item)
        level = "warning" if item.outcome is UndoOutcome.KEPT else "info"
        getattr(self.log, level)(
            "undo.finished",
            batch=item.batch,
            job_id=item.job_id,
            outcome=str(item.outcome),
            origin=display(item.origin),
            dest=display(item.dest) or None,
            error=item.error,
        )
        return item

    # -- planning -----------------------------------------------------------------------

    def target_for(self, job: Job) -> bytes:
        """Where a job's file goes back to: its source; but files the daemon (or an
        import --move) took from the inbox go to {library}/.undone/BATCH/..., because
        the daemon would file them again at once from the inbox."""
        for inbox in self.inboxes if job.move else ():
            if job.source.startswith(inbox + b"/"):
                rel = job.source[len(inbox) + 1 :]
                return os.path.join(self.library, UNDONE_DIR, os.fsencode(job.batch), rel)
        return job.source

    def _intent(self, job: Job) -> dict[str, Any]:
        base: dict[str, Any] = {
            "job_id": job.id,
            "file_id": None,
            "origin": None,
            "keep_origin": False,
            "target": self.target_for(job),
            "sha256": job.sha256,
            "size": job.size,
            "mtime_ns": job.identity.mtime_ns,
            "done": None,
        }
        if job.outcome is Outcome.FILED:
            entry = catalog.by_job(self.conn, job.id)
            if entry is None:
                base["done"] = (UndoOutcome.KEPT, "its catalog row is gone")
            else:
                base.update(
                    file_id=entry.id,
                    sha256=entry.sha256,
                    size=entry.size,
                    origin=os.path.join(self.library, os.fsencode(entry.path)),
                )
        elif job.outcome is Outcome.DUPLICATE and job.dest is not None:
            base["origin"] = os.fsencode(job.dest)  # its quarantined copy
        elif job.outcome is Outcome.DUPLICATE:
            if not job.move:
                base["done"] = (UndoOutcome.UNTOUCHED, "a plain import leaves its sources")
            else:  # kept at the source, or deleted (on_duplicate): the library has the bytes
                entry = catalog.by_id(self.conn, job.duplicate_of) if job.duplicate_of else None
                base.update(
                    keep_origin=True,
                    origin=os.path.join(self.library, os.fsencode(entry.path)) if entry else None,
                )
        elif job.dest is None:  # a reject left at its source
            base["done"] = (UndoOutcome.UNTOUCHED, "it was left at its source")
        elif job.sha256 is None:
            base["done"] = (
                UndoOutcome.KEPT,
                f"not a regular file; left in {os.fsdecode(job.dest)}",
            )
        else:
            base["origin"] = os.fsencode(job.dest)  # its copy under paths.rejected
        return base

    # -- the steps ----------------------------------------------------------------------

    def _restore(self, item: UndoItem) -> UndoItem:
        """RECORDED -> RESTORED: the bytes are at the source (they were still there, or
        are put back, or beside a different file), fsynced."""
        while True:
            found = self._find_place(item, dry_run=False)
            if isinstance(found, str):
                return self._finish(item, UndoOutcome.KEPT, found)
            cand, held = found
            if held or self._put(item, cand):
                break  # else a stranger took the name meanwhile: look again
        self._clean_temporaries(item, cand)
        if not held:
            self.hooks.after_undo_step("placed", item)
        with transaction(self.conn):
            undolog.advance(
                self.conn,
                item.id,
                UndoStep.RESTORED,
                journal.now(),
                dest=cand,
                outcome=self._label(item, cand, held),
            )
            return undolog.get(self.conn, item.id)

    def _remove(self, item: UndoItem) -> UndoItem:
        """RESTORED -> DONE: remove the origin (if it is still the bytes we restored) and
        the catalog row, then the library folders that became empty."""
        origin, dest, note = item.origin, item.dest, None
        remove = (
            not item.keep_origin
            and item.outcome is not UndoOutcome.UNTOUCHED
            and origin is not None
            and os.path.lexists(origin)
        )
        if remove and origin is not None and dest is not None:
            if same_file(origin, dest) or hash_file(origin) == (item.sha256, item.size):
                os.unlink(origin)
                fsync_dir(os.path.dirname(origin))
                self._prune(os.path.dirname(origin))
                self.hooks.after_undo_step("unlinked", item)
            else:
                note = f"{display(origin)} changed since it was filed; left there"
        with transaction(self.conn):
            if item.file_id is not None and note is None:
                catalog.delete(self.conn, item.file_id)
            undolog.advance(self.conn, item.id, UndoStep.DONE, journal.now(), error=note)
            return undolog.get(self.conn, item.id)

    # -- helpers ------------------------------------------------------------------------

    def _find_place(self, item: UndoItem, dry_run: bool) -> tuple[bytes, bool] | str:
        """(name, held): the first of target, target.1, ... that already holds the bytes
        (held) or is free; or why the file cannot go back."""
        parent, base = os.path.split(item.target)
        origin_there = item.origin is not None and os.path.lexists(item.origin)
        if not os.path.isdir(parent):
            if not item.target.startswith(os.path.join(self.library, UNDONE_DIR) + b"/"):
                return (
                    f"{display(parent)}: the folder is gone (create it and undo again); "
                    f"left at {display(item.origin)}"
                )
            if not dry_run:
                make_dirs(parent, self.cfg.dir_mode)
        n = 0
        while True:
            cand = os.path.join(parent, numbered_name(base, n))
            if self._holds(cand, item):
                return cand, True
            if not os.path.lexists(cand):
                if not origin_there:
                    return (
                        f"nothing to restore from: {display(item.origin)} is gone"
                        if item.origin
                        else "nothing to restore from: the library no longer has these bytes"
                    )
                return cand, False
            n += 1

    def _holds(self, path: bytes, item: UndoItem) -> bool:
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != item.size:
            return False
        if item.origin is not None and not item.keep_origin and same_file(item.origin, path):
            return True
        return hash_file(path) == (item.sha256, item.size)

    def _put(self, item: UndoItem, cand: bytes) -> bool:
        """Give the bytes the name `cand` (False if it was taken meanwhile): a hard link to
        the origin (a copy across filesystems); a real copy when the origin stays."""
        assert item.origin is not None
        parent = os.path.dirname(cand)
        if item.keep_origin:
            tmp = self._undo_tmp(item, parent)
            fd = open_source(item.origin)
            if isinstance(fd, Unusable):
                raise OSError(2, fd.reason, item.origin)
            try:
                got = copy_and_hash(fd, tmp, self.cfg.file_mode)
            finally:
                os.close(fd)
            if (got.sha256, got.size) != (item.sha256, item.size):
                unlink_quiet(tmp)
                raise OSError(5, "the library copy no longer has the expected bytes", item.origin)
            ok = link_noreplace(tmp, cand)
            unlink_quiet(tmp)
        else:
            ok = link_noreplace(item.origin, cand)
        if ok:
            if item.mtime_ns is not None:
                os.utime(cand, ns=(item.mtime_ns, item.mtime_ns), follow_symlinks=False)
            fsync_dir(parent)
        return ok

    def _undo_tmp(self, item: UndoItem, parent: bytes) -> bytes:
        return os.path.join(parent, b".mediasortd-undo-%d" % item.id)

    def _clean_temporaries(self, item: UndoItem, cand: bytes) -> None:
        """A crash between linking a temporary copy into place and removing it leaves the
        temporary beside the restored file; it holds nothing the file does not."""
        parent = os.path.dirname(cand)
        unlink_quiet(self._undo_tmp(item, parent))
        if item.origin is not None and not same_file(item.origin, cand):
            unlink_quiet(link_temp(item.origin, cand))  # link_noreplace's, across filesystems

    def _label(self, item: UndoItem, cand: bytes, held: bool) -> UndoOutcome:
        """REMOVED when the source still had the bytes (a plain import); a name that is a
        hard link to the origin is our own restore, from before a crash."""
        ours = item.origin is not None and same_file(item.origin, cand)
        if held and cand == item.target and not ours:
            return UndoOutcome.UNTOUCHED if item.keep_origin else UndoOutcome.REMOVED
        return UndoOutcome.RESTORED

    def _prune(self, folder: bytes) -> None:
        """Remove library folders the undo emptied (never the library or our own roots)."""
        while folder.startswith(self.library + b"/"):
            rel = folder[len(self.library) + 1 :]
            if rel.startswith(b"."):
                return
            try:
                os.rmdir(folder)
            except OSError:
                return
            fsync_dir(os.path.dirname(folder))
            folder = os.path.dirname(folder)

    def _finish(self, item: UndoItem, outcome: UndoOutcome, error: str | None) -> UndoItem:
        with transaction(self.conn):
            undolog.advance(
                self.conn, item.id, UndoStep.DONE, journal.now(), outcome=outcome, error=error
            )
            return undolog.get(self.conn, item.id)


def _with(item: UndoItem, **changes: Any) -> UndoItem:
    return replace(item, **changes)
