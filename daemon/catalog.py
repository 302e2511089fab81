"""The catalog table's SQL: one row per file in the library, unique by sha256 and path.

A row is committed before its file is placed; until its job is done the file may still
be in staging. Name reservation runs inside the caller's BEGIN IMMEDIATE transaction,
so two workers can never be given the same name or file the same content twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apsw

from .layout import numbered
from .model import MediaInfo


@dataclass(frozen=True)
class Entry:
    id: int
    sha256: str
    size: int
    path: str
    captured: str
    date_source: str
    original_name: str
    job_id: int | None
    missing_since: str | None


def _entry(row: Any) -> Entry:
    return Entry(*row)


_COLS = "id, sha256, size, path, captured, date_source, original_name, job_id, missing_since"


def by_sha256(conn: apsw.Connection, sha256: str) -> Entry | None:
    rows = conn.execute(f"SELECT {_COLS} FROM files WHERE sha256 = ?", (sha256,)).fetchall()
    return _entry(rows[0]) if rows else None


def by_id(conn: apsw.Connection, file_id: int) -> Entry | None:
    rows = conn.execute(f"SELECT {_COLS} FROM files WHERE id = ?", (file_id,)).fetchall()
    return _entry(rows[0]) if rows else None


def by_path(conn: apsw.Connection, path: str) -> Entry | None:
    rows = conn.execute(f"SELECT {_COLS} FROM files WHERE path = ?", (path,)).fetchall()
    return _entry(rows[0]) if rows else None


def free_name(conn: apsw.Connection, library: bytes, preferred: str) -> str:
    """The first of `preferred`, `.1`, `.2`, ... taken neither in the catalog nor on disk."""
    n = 0
    while True:
        candidate = numbered(preferred, n)
        taken = conn.execute("SELECT 1 FROM files WHERE path = ?", (candidate,)).fetchall()
        if not taken and not os.path.lexists(os.path.join(library, os.fsencode(candidate))):
            return candidate
        n += 1


def insert(conn: apsw.Connection, *, sha256: str, size: int, path: str, info: MediaInfo,
           original_name: str, source: bytes, imported_at: str, job_id: int | None) -> int:
    conn.execute(
        "INSERT INTO files (sha256, size, path, captured, utc_offset, date_source, date_raw,"
        " confidence, original_name, source_path, imported_at, file_type, mime, kind, job_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (sha256, size, path, info.captured.isoformat(sep=" "), info.utc_offset,
         info.date_source, info.date_raw, info.confidence, original_name, source, imported_at,
         info.file_type, info.mime, info.kind, job_id))
    return conn.last_insert_rowid()


def rename(conn: apsw.Connection, file_id: int, path: str) -> None:
    conn.execute("UPDATE files SET path = ? WHERE id = ?", (path, file_id))


def by_job(conn: apsw.Connection, job_id: int) -> Entry | None:
    rows = conn.execute(f"SELECT {_COLS} FROM files WHERE job_id = ?", (job_id,)).fetchall()
    return _entry(rows[0]) if rows else None


def delete(conn: apsw.Connection, file_id: int) -> None:
    conn.execute("DELETE FROM files WHERE id = ?", (file_id,))


def all_entries(conn: apsw.Connection) -> Iterator[Entry]:
    for row in conn.execute(f"SELECT {_COLS} FROM files ORDER BY id"):
        yield _entry(row)


def totals(conn: apsw.Connection) -> dict[str, Any]:
    n, size = conn.execute("SELECT n, bytes FROM tally_files").fetchall()[0]
    return {"files": n, "bytes": size}
