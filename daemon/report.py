"""Read-only views of a library: `status` (counts, pending, problems, space) and `verify`
(catalog vs library vs journal). They never change anything; `verify` lists each problem.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apsw

from . import catalog, journal
from .config import Config
from .fsops import hash_file


@dataclass
class Problem:
    kind: str  # missing | size_mismatch | hash_mismatch | stray | staging | unfinished
    path: str
    detail: str = ""


@dataclass
class Report:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked_files": self.checked,
                "problems": [vars(p) for p in self.problems]}


def status(cfg: Config, conn: apsw.Connection) -> dict[str, Any]:
    totals = catalog.totals(conn)
    try:
        vfs = os.statvfs(cfg.library)
        free = vfs.f_bavail * vfs.f_frsize
    except OSError:
        free = None
    today = journal.now()[:10]
    return {
        "inbox": str(cfg.inbox), "library": str(cfg.library),
        "catalog": str(cfg.catalog),
        "outcomes": journal.counts(conn),
        "today": journal.counts(conn, since=today),
        "pending_jobs": journal.pending(conn),
        "library_full": journal.waiting_for_space(conn) > 0,
        "library_files": totals["files"], "library_bytes": totals["bytes"],
        "library_free_bytes": free,
        "recent_problems": list(journal.recent_problems(conn)),
    }


def library_files(library: bytes) -> Iterator[bytes]:
    """Every non-hidden entry under the library (staging, quarantine and the like are
    hidden folders of ours), as paths relative to it."""
    stack = [b""]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(library, rel) if rel else library))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(b"."):
                continue
            child = os.path.join(rel, e.name) if rel else e.name
            if e.is_dir(follow_symlinks=False):
                stack.append(child)
            else:
                yield child


def verify(cfg: Config, conn: apsw.Connection, deep: bool = False) -> Report:
    report = Report()
    library = os.fsencode(cfg.library)
    unfinished = journal.unfinished(conn)
    for job in unfinished:
        report.problems.append(Problem("unfinished", job.source.decode("utf-8", "replace"),
                                       f"job {job.id} stopped at step {job.step.value}"))
    pending = {j.id for j in unfinished}
    for name in _listdir(os.fsencode(cfg.staging)):
        report.problems.append(Problem("staging", os.fsdecode(
            os.path.join(os.fsencode(cfg.staging), name)), "leftover in staging"))
    known: set[bytes] = set()
    for entry in catalog.all_entries(conn):
        rel = os.fsencode(entry.path)
        known.add(rel)
        if entry.job_id in pending or entry.missing_since:
            continue
        report.checked += 1
        full = os.path.join(library, rel)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            report.problems.append(Problem("missing", entry.path, "catalogued but not on disk"))
            continue
        if not stat.S_ISREG(st.st_mode):
            report.problems.append(Problem("missing", entry.path, "not a regular file"))
        elif st.st_size != entry.size:
            report.problems.append(Problem("size_mismatch", entry.path,
                                           f"{st.st_size} bytes, catalog says {entry.size}"))
        elif deep and hash_file(full) != (entry.sha256, entry.size):
            report.problems.append(Problem("hash_mismatch", entry.path,
                                           f"bytes no longer match sha256 {entry.sha256}"))
    for rel in library_files(library):
        if rel not in known:
            report.problems.append(Problem("stray", os.fsdecode(rel), "in the library, not in "
                                           "the catalog"))
    return report


def _listdir(path: bytes) -> list[bytes]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
