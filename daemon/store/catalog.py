"""The catalog's SQL: `files` (one row per library file, unique by sha256 and by path)
and `file_history` (edits); store.names hands out free names and `.N` numbers.
Crash invariant: a row is committed before its file is placed (until its
job is done the file may still be in staging); a name is reserved in the caller's BEGIN
IMMEDIATE transaction, so two workers never get one name or file one content twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apsw

from ..model import MediaInfo
from ..rules.layout import stem_of


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
    utc_offset: int | None = None
    confidence: str | None = None
    content_id: str | None = None  # Apple's Live Photo identifier, when the file has one


def companion_key(sha256: str, partner_id: int) -> str:
    """The sha256 column of a sidecar whose bytes another row already has: a companion is
    never deduplicated away from its photo (two photos with byte-identical XMPs keep one
    each), and `sha256` stays UNIQUE: `<sha256>:<the photo's row id>`."""
    return f"{sha256}:{partner_id}"


def content_sha256(key: str) -> str:
    """The sha256 of a row's bytes (its key without a companion's suffix)."""
    return key.partition(":")[0]


def _entry(row: Any) -> Entry:
    file_id, sha256, size, path, *rest = row
    return Entry(file_id, content_sha256(sha256), size, from_db(path), *rest)


def to_db(path: str) -> str | bytes:
    """How a library path is stored: as text, or (a name that is not UTF-8, which Linux
    allows) as its raw bytes in a BLOB; `path` is os.fsdecode'd (surrogate escapes)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


def printable(path: str) -> str:
    """A stored path as text to show or to store in a message (not-UTF-8 bytes escaped)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def from_db(value: str | bytes) -> str:
    """A stored path back as an os.fsdecode'd str (os.fsencode gives the name's bytes)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


_COLS = (
    "id, sha256, size, path, captured, date_source, original_name, job_id, missing_since,"
    " utc_offset, confidence, content_id"
)


def by_sha256(conn: apsw.Connection, sha256: str) -> Entry | None:
    rows = conn.execute(f"SELECT {_COLS} FROM files WHERE sha256 = ?", (sha256,)).fetchall()
    return _entry(rows[0]) if rows else None


def by_id(conn: apsw.Connection, file_id: int) -> Entry | None:
    rows = conn.execute(f"SELECT {_COLS} FROM files WHERE id = ?", (file_id,)).fetchall()
    return _entry(rows[0]) if rows else None


def by_path(conn: apsw.Connection, path: str) -> Entry | None:
    rows = conn.execute(f"SELECT {_COLS} FROM files WHERE path = ?", (to_db(path),)).fetchall()
    return _entry(rows[0]) if rows else None


def stem_key(preferred: str) -> str:
    """The counter a RAW+JPEG/HEIC stem keeps (`a/b.*`: no library path ends so)."""
    return stem_of(preferred) + ".*"


def filed_from(conn: apsw.Connection, prefix: bytes) -> list[tuple[bytes, Entry]]:
    """(source path, catalog row) of every job whose source starts with `prefix` and
    whose content is catalogued (filed by it, or the row it was a duplicate of); UNION
    ALL: a pair can come twice only in theory (a row a job filed and was a duplicate
    of), and the caller takes the first that fits, so no sort to drop repeats."""
    upper = prefix[:-1] + bytes([prefix[-1] + 1]) if prefix[-1] < 255 else prefix + b"\xff"
    cols = ", ".join(f"f.{c.strip()}" for c in _COLS.split(","))
    rows = conn.execute(
        f"SELECT j.source, {cols} FROM jobs j JOIN files f ON f.job_id = j.id"
        " WHERE j.source >= ? AND j.source < ?"
        f" UNION ALL SELECT j.source, {cols} FROM jobs j JOIN files f ON f.id = j.duplicate_of"
        " WHERE j.source >= ? AND j.source < ?",
        (prefix, upper, prefix, upper),
    ).fetchall()
    return [(bytes(r[0]), _entry(r[1:])) for r in rows]  # type: ignore[arg-type]


def count_under(conn: apsw.Connection, folder: str) -> int:
    """Catalogued files whose path starts with `folder/`."""
    ((n,),) = conn.execute(
        "SELECT count(*) FROM files WHERE path >= ? AND path < ?", (folder + "/", folder + "0")
    ).fetchall()
    return n if isinstance(n, int) else 0


def insert(
    conn: apsw.Connection,
    *,
    sha256: str,
    size: int,
    path: str,
    info: MediaInfo,
    original_name: str,
    source: bytes,
    imported_at: str,
    job_id: int | None,
    mtime_ns: int | None = None,
) -> int:
    """`mtime_ns`: the file's mtime as it is placed (verify --repair tells an edit from
    bit rot by it)."""
    conn.execute(
        "INSERT INTO files (sha256, size, path, captured, utc_offset, date_source, date_raw,"
        " confidence, original_name, source_path, imported_at, file_type, mime, kind, job_id,"
        " mtime_ns, content_id, date_skipped)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            sha256,
            size,
            to_db(path),
            info.captured.isoformat(sep=" "),
            info.utc_offset,
            info.date_source,
            info.date_raw,
            info.confidence,
            original_name,
            source,
            imported_at,
            info.file_type,
            info.mime,
            info.kind,
            job_id,
            mtime_ns,
            info.content_id,
            info.date_skipped,
        ),
    )
    return conn.last_insert_rowid()


def rename(conn: apsw.Connection, file_id: int, path: str) -> None:
    conn.execute("UPDATE files SET path = ? WHERE id = ?", (to_db(path), file_id))


def filed_stamp(conn: apsw.Connection, file_id: int) -> tuple[int | None, str]:
    """The file's mtime when catalogued (None in rows from before it was recorded) and
    when it was catalogued (UTC, ISO 8601)."""
    rows: list[Any] = conn.execute(
        "SELECT mtime_ns, imported_at FROM files WHERE id = ?", (file_id,)
    ).fetchall()
    return rows[0][0], rows[0][1]


def mark_missing(conn: apsw.Connection, path: str, when: str) -> None:
    conn.execute("UPDATE files SET missing_since = ? WHERE path = ?", (when, to_db(path)))


def record_edit(
    conn: apsw.Connection,
    entry: Entry,
    *,
    sha256: str,
    size: int,
    mtime_ns: int,
    when: str,
    reason: str,
) -> None:
    """The row follows its edited file: the new hash, size and mtime; the old ones go to
    file_history."""
    remember(conn, entry, when, reason)
    conn.execute(
        "UPDATE files SET sha256 = ?, size = ?, mtime_ns = ? WHERE id = ?",
        (sha256, size, mtime_ns, entry.id),
    )


def remember(conn: apsw.Connection, entry: Entry, when: str, reason: str) -> None:
    """Keep what a row says (hash, size, mtime) in file_history before it changes or goes."""
    conn.execute(
        "INSERT INTO file_history (file_id, path, sha256, size, mtime_ns, "
        "replaced_at, reason) SELECT id, path, sha256, size, mtime_ns, ?, ? "
        "FROM files WHERE id = ?",
        (when, reason, entry.id),
    )


def by_job(conn: apsw.Connection, job_id: int) -> Entry | None:
    rows = conn.execute(f"SELECT {_COLS} FROM files WHERE job_id = ?", (job_id,)).fetchall()
    return _entry(rows[0]) if rows else None


def present(conn: apsw.Connection, entry: Entry | None) -> Entry | None:
    """The row, if its file is in the library. A row marked missing (`verify --repair`
    found its file gone) gives way to the same bytes coming back: it is deleted, and they
    are filed or catalogued anew (in the caller's transaction)."""
    if entry is not None and entry.missing_since:
        delete(conn, entry.id)
        return None
    return entry


def delete(conn: apsw.Connection, file_id: int) -> None:
    """Remove a row; the `.N` its path held is free again for the names it counted in
    (name_free), so that a file filed again after a crash or an undo gets its number
    back rather than the next one."""
    rows: list[Any] = conn.execute(
        "DELETE FROM files WHERE id = ? RETURNING path", (file_id,)
    ).fetchall()
    if rows:
        conn.executemany(
            "INSERT OR IGNORE INTO name_free (path, n) SELECT ?1, ?2 WHERE EXISTS "
            "(SELECT 1 FROM name_seq WHERE path = ?1 AND last >= ?2)",
            [(to_db(key), n) for key, n in _readings(from_db(rows[0][0]))],
        )


def _readings(path: str) -> list[tuple[str, int]]:
    """The (counter key, number) a library path may have been given as: itself and its
    stem with 0, and, when it reads `X.N.ext`, `X.ext` and the stem X with N."""
    out = [(path, 0), (stem_key(path), 0)]
    head, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    base, dot2, num = stem.rpartition(".")
    if dot and stem and dot2 and base and num.isdigit() and not num.startswith("0"):
        preferred = (f"{head}/" if head else "") + f"{base}.{ext}"
        out += [(preferred, int(num)), (stem_key(preferred), int(num))]
    return out


def all_entries(conn: apsw.Connection) -> Iterator[Entry]:
    for row in conn.execute(f"SELECT {_COLS} FROM files ORDER BY id"):
        yield _entry(row)


def totals(conn: apsw.Connection) -> dict[str, Any]:
    n, size = conn.execute("SELECT n, bytes FROM tally_files").fetchall()[0]
    return {"files": n, "bytes": size}
