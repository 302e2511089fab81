"""Answers for people: `find` (where did my photo go?) and `history` (what happened, newest
first), shaped from the catalog and the journal. Read-only: it never changes
the catalog or a file; its SQL lives in store/query.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..files.copy import hash_file
from ..store import query, timeline
from ..store.db import Connection


@dataclass
class Found:
    """The answers for one WHAT."""

    query: str
    kind: str  # file | date | sha256 | name | source | folder | unreadable
    sha256: str | None = None  # of the file, for kind "file"
    results: list[dict[str, Any]] = field(default_factory=list)
    more: bool = False  # more results than the limit
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return vars(self)


def classify(what: str) -> tuple[str, str]:
    """What kind of thing a person typed: an existing file (hashed), a date, a sha256
    prefix, a source path (has a '/', no longer exists) or an original name or glob."""
    if os.path.lexists(what):
        return ("folder" if os.path.isdir(what) else "file"), os.path.abspath(what)
    if (
        (m := query.DATE.match(what))
        and 1 <= int(m.group(2)) <= 12
        and (m.group(3) is None or 1 <= int(m.group(3)) <= 31)
    ):
        return "date", what
    if query.SHA_PREFIX.match(what):
        return "sha256", what.lower()
    if "/" in what:
        return "source", os.path.abspath(what)
    return "name", what


def find(cfg: Config, conn: Connection, what: str, limit: int = 50) -> Found:
    kind, value = classify(what)
    out = Found(what, kind)
    rows: list[dict[str, Any]]
    if kind == "folder":
        out.note = "a folder: give the files in it (e.g. FOLDER/*)"
        return out
    if kind == "file":
        got = hash_file(os.fsencode(value))
        if got is None:
            out.kind, out.note = "unreadable", "cannot read it (not a regular file?)"
            return out
        out.sha256 = got[0]
        rows = query.find_sha256(conn, got[0], limit + 1)
    elif kind == "date":
        rows = query.find_date(conn, value, limit + 1)
    elif kind == "sha256":
        rows = query.find_sha_prefix(conn, value, limit + 1)
    elif kind == "source":
        rows = query.find_source(conn, os.fsencode(value), limit + 1)
    else:
        rows = query.find_name(conn, value, limit + 1)
    answers = [_from_file(cfg, r) if "file_id" in r else _from_job(cfg, r) for r in rows]
    answers.sort(key=lambda a: a["filed_at"] or "", reverse=True)
    undos = query.undos_of(conn, [a["job"] for a in answers if a["job"] is not None])
    for a in answers:
        a["undo"] = undos.get(a["job"]) if a["job"] is not None else None
    out.results, out.more = answers[:limit], len(answers) > limit
    return out


def _lib(cfg: Config, rel: str | None) -> str | None:
    return os.path.join(str(cfg.library), rel) if rel else None


def _from_file(cfg: Config, r: dict[str, Any]) -> dict[str, Any]:
    """A catalog row: the file is in the library."""
    return {
        "outcome": "pending" if r["step"] not in (None, "done") else "filed",
        "library_path": _lib(cfg, r["path"]),
        "path": r["path"],
        "original_name": r["original_name"],
        "source": r["source"],
        "filed_at": r["filed_at"],
        "captured": r["captured"],
        "utc_offset": r["utc_offset"],
        "date_source": r["date_source"],
        "date_raw": r["date_raw"],
        "confidence": r["confidence"],
        "date_skipped": r["date_skipped"],
        "file_type": r["file_type"],
        "sha256": r["sha256"],
        "size": r["size"],
        "batch": r["batch"],
        "job": r["job"],
        "missing_since": r["missing_since"],
        "duplicate_of": None,
        "quarantine": None,
        "reason": None,
        "was_at": None,
    }


def _from_job(cfg: Config, r: dict[str, Any]) -> dict[str, Any]:
    """A job that no catalog row stands for: a duplicate, a reject, a failure, a file
    that vanished, or a filed file undone since."""
    outcome = r["outcome"] if r["step"] == "done" else "pending"
    filed = outcome == "filed"  # filed, but its row is gone: undone
    return {
        "outcome": outcome,
        "library_path": None,
        "path": None,
        "original_name": os.path.basename(r["source"]),
        "source": r["source"],
        "filed_at": r["finished_at"] or r["created_at"],
        "captured": None,
        "utc_offset": None,
        "date_source": None,
        "date_raw": None,
        "confidence": None,
        "date_skipped": None,
        "file_type": None,
        "sha256": r["sha256"],
        "size": r["size"],
        "batch": r["batch"],
        "job": r["job"],
        "missing_since": None,
        "duplicate_of": _lib(cfg, r["original_path"]) if outcome == "duplicate" else None,
        "duplicate_of_id": r["duplicate_of"],
        "quarantine": r["dest"] if not filed else None,
        "reason": r["reason"],
        "was_at": r["dest"] if filed else None,
    }


def history(
    conn: Connection,
    *,
    since: str | None = None,
    outcomes: list[str] | None = None,
    batches: list[str] | None = None,
    limit: int | None = 100,
) -> list[dict[str, Any]]:
    for o in outcomes or ():
        if o not in timeline.HISTORY_OUTCOMES:
            raise ValueError(f"{o!r}: not an outcome; use {', '.join(timeline.HISTORY_OUTCOMES)}")
    return timeline.history(conn, since=since, outcomes=outcomes, batches=batches, limit=limit)
