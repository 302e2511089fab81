"""Read-only views of a library: `status` (what is happening now, counts, problems, space,
the oldest file still waiting in the inbox and why: app/waiting.py) and `verify` (catalog
vs library vs journal). They never change anything; `verify` lists each problem. Also the
one owner of daemon.json: what a running daemon publishes (`publish`) for `status`.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..files.copy import hash_file
from ..rules.layout import UNDATED_LAYOUT
from ..store import catalog, db, journal, kept, query, times, undolog
from . import lock, waiting

UNDATED_FOLDER = UNDATED_LAYOUT.partition("/")[0]
STATE_FILE = "daemon.json"  # in the state dir: what a running daemon publishes for status


@dataclass
class Problem:
    kind: str  # missing | size_mismatch | hash_mismatch | stray | staging | unfinished
    # | kept_missing | kept_changed | unreadable | catalog_damaged | foreign_catalog
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
        return {
            "ok": self.ok,
            "checked_files": self.checked,
            "problems": [vars(p) for p in self.problems],
        }


STATE_LOW_BYTES = 1 << 20


def status(cfg: Config, conn: db.Connection) -> dict[str, Any]:
    totals = catalog.totals(conn)
    free: int | None
    size: int | None
    try:
        vfs = os.statvfs(cfg.library)
        free, size = vfs.f_bavail * vfs.f_frsize, vfs.f_blocks * vfs.f_frsize
    except OSError:
        free = size = None
    try:
        svfs = os.statvfs(cfg.state_dir)
        state_free: int | None = svfs.f_bavail * svfs.f_frsize
        state_ro = bool(svfs.f_flag & os.ST_RDONLY)
    except OSError:
        state_free, state_ro = None, False
    today = times.parse_when("today")  # local midnight
    holder = writer(cfg)
    daemon = daemon_state(cfg, holder)
    return {
        "now": {
            "writer": holder,
            "in_progress": journal.pending(conn),
            "last_finished": query.last_finished(conn),
            "last_filed": query.last_finished(conn, "filed"),
            "batch": query.latest_batch(conn),
        },
        "inbox_waiting": waiting.inbox_waiting(cfg, conn, holder, (daemon or {}).get("held") or {}),
        "library_fs_bytes": size,
        "inbox": str(cfg.inbox),
        "inboxes": [str(i) for i in cfg.inboxes],
        "library": str(cfg.library),
        "catalog": str(cfg.catalog),
        "outcomes": net_counts(conn),
        "today": net_counts(conn, since=today),
        "undated_files": catalog.count_under(conn, UNDATED_FOLDER),
        "pending_jobs": journal.pending(conn),
        "library_full": journal.waiting_for_space(conn) > 0,
        "library_files": totals["files"],
        "library_bytes": totals["bytes"],
        "library_free_bytes": free,
        # the catalog's filesystem: full (under 1 MiB free) or read-only stops the filing
        "state_dir": str(cfg.state_dir),
        "state_free_bytes": state_free,
        "state_full": state_free is not None and state_free < STATE_LOW_BYTES,
        "state_read_only": state_ro,
        "recent_problems": list(journal.recent_problems(conn)),
        "daemon": daemon,
    }


def publish(state_dir: Path, state: dict[str, Any]) -> None:
    """The running daemon's side of daemon.json: written whole (a new file renamed over
    the old), so `status` reads one version or the other."""
    path = state_dir / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(state) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def daemon_state(cfg: Config, holder: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the running daemon published in {state_dir}/daemon.json (a failed reload,
    keys that need a restart, the inbox it watches), if that daemon is the one running."""
    if holder is None or holder["command"] != "run":
        return None
    try:
        state = json.loads((cfg.state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("pid") == holder["pid"] else None


def net_counts(conn: db.Connection, since: str | None = None) -> dict[str, int]:
    """Finished jobs by outcome net of undo (10 filed, 3 undone: 7 filed), and how many
    were undone under "undone"."""
    counts = journal.counts(conn, since)
    undone = undolog.undone_counts(conn, since)
    for outcome, n in undone.items():
        if outcome in counts:
            counts[outcome] = max(0, counts[outcome] - n)
    counts["undone"] = sum(undone.values())
    return counts


def writer(cfg: Config) -> dict[str, Any] | None:
    """The mediasortd process holding the state lock, if any: {pid, command}."""
    return lock.holder(cfg.state_dir)


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


MARKER = b".mediasortd.library"  # in the library: the id of the catalog that knows it


def library_marker(library: bytes) -> str | None:
    """The catalog id written in the library's marker (None: no marker yet)."""
    try:
        with open(os.path.join(library, MARKER), "rb") as f:
            text = f.read(4096).decode("ascii", "replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "catalog_id" and value.strip():
            return value.strip()
    return ""  # unreadable content: belongs to no catalog


def verify(cfg: Config, conn: db.Connection, deep: bool = False) -> Report:
    report = Report()
    library = os.fsencode(cfg.library)
    if deep:
        for problem in db.integrity_problems(conn):
            report.problems.append(Problem("catalog_damaged", str(cfg.catalog), problem))
    marker = library_marker(library)
    if marker is not None and marker != db.catalog_id(conn):
        report.problems.append(
            Problem(
                "foreign_catalog",
                str(cfg.catalog),
                f"the library's marker names catalog "
                f"{marker or '?'}, this is {db.catalog_id(conn)}: lost or replaced? "
                "`verify --repair` rebuilds it from the library",
            )
        )
    unfinished = journal.unfinished(conn)
    for job in unfinished:
        report.problems.append(
            Problem(
                "unfinished",
                job.source.decode("utf-8", "replace"),
                f"job {job.id} stopped at step {job.step.value}",
            )
        )
    pending = {j.id for j in unfinished}
    for item in undolog.unfinished(conn):
        report.problems.append(
            Problem(
                "unfinished",
                os.fsdecode(item.origin or item.target),
                f"undo of job {item.job_id} stopped at step {item.step.value}",
            )
        )
    for name in _listdir(os.fsencode(cfg.staging)):
        report.problems.append(
            Problem(
                "staging",
                os.fsdecode(os.path.join(os.fsencode(cfg.staging), name)),
                "leftover in staging",
            )
        )
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
        except (FileNotFoundError, NotADirectoryError):  # gone, or a folder of it is a file
            report.problems.append(Problem("missing", entry.path, "catalogued but not on disk"))
            continue
        except OSError as e:  # a folder that cannot be searched: said, left to the admin
            report.problems.append(
                Problem("unreadable", entry.path, f"cannot be looked at: {e.strerror}")
            )
            continue
        if not stat.S_ISREG(st.st_mode):
            report.problems.append(Problem("missing", entry.path, "not a regular file"))
        elif st.st_size != entry.size:
            report.problems.append(
                Problem(
                    "size_mismatch", entry.path, f"{st.st_size} bytes, catalog says {entry.size}"
                )
            )
        elif deep and hash_file(full) != (entry.sha256, entry.size):
            report.problems.append(
                Problem("hash_mismatch", entry.path, f"bytes no longer match sha256 {entry.sha256}")
            )
    copies, others = kept.copies(conn), kept.others(conn)
    for path, kind, reason in kept.listed(conn):  # adopt's album copies and other files
        rel = os.fsencode(path)
        known.add(rel)
        if not os.path.lexists(os.path.join(library, rel)):
            report.problems.append(
                Problem(
                    "kept_missing", path, f"recorded as kept ({kind}: {reason}), no longer on disk"
                )
            )
        elif path in copies and _changed_copy(
            os.path.join(library, rel), *copies[path][:2], deep=deep
        ):
            report.problems.append(
                Problem(
                    "kept_changed",
                    path,
                    "recorded as a copy of "
                    f"{catalog.printable(copies[path][2])}, its bytes "
                    "are no longer that file's",
                )
            )
        elif path in others and _changed_other(os.path.join(library, rel), *others[path]):
            report.problems.append(
                Problem(
                    "kept_changed",
                    path,
                    f"recorded as kept ({reason}), changed since (size or mtime)",
                )
            )
    for rel in library_files(library):
        if rel not in known:
            report.problems.append(
                Problem("stray", os.fsdecode(rel), "in the library, not in the catalog")
            )
    return report


def _changed_copy(full: bytes, sha256: str, size: int, *, deep: bool) -> bool:
    """A kept copy that no longer holds its row's bytes (a file saved over it)."""
    try:
        st = os.lstat(full)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return True
    got = hash_file(full) if deep else None
    return got is not None and got != (sha256, size)  # unreadable: not known to differ


def _changed_other(full: bytes, size: int, mtime_ns: int | None) -> bool:
    """A kept non-media entry written since it was recorded (a photo saved over it?)."""
    try:
        st = os.lstat(full)
    except OSError:
        return False
    return st.st_size != size or (mtime_ns is not None and st.st_mtime_ns != mtime_ns)


def _listdir(path: bytes) -> list[bytes]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
