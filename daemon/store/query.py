"""Read-only SQL for people's questions: find, history, the status dashboard, metrics. It
never writes, so it has no crash invariant. Times in the catalog are UTC ISO 8601 strings
(journal.now()), so a time filter is a string comparison; store.times turns what a
person types into one.
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any

import apsw

_FILE_COLS = (
    "f.id, substr(f.sha256, 1, 64), f.size, f.path, f.captured, f.utc_offset, "
    "f.date_source, f.date_raw, f.confidence, f.original_name, f.source_path, "
    "f.imported_at, f.file_type, f.kind, f.job_id, f.missing_since, j.batch, "
    "j.finished_at, j.step, f.date_skipped"
)
_FILE_KEYS = (
    "file_id",
    "sha256",
    "size",
    "path",
    "captured",
    "utc_offset",
    "date_source",
    "date_raw",
    "confidence",
    "original_name",
    "source",
    "filed_at",
    "file_type",
    "kind",
    "job",
    "missing_since",
    "batch",
    "finished_at",
    "step",
    "date_skipped",
)
_JOB_COLS = (
    "j.id, j.batch, j.source, j.step, j.outcome, j.error, j.dest, j.sha256, j.bytes, "
    "j.duplicate_of, j.created_at, j.finished_at, j.move, o.path, o.original_name"
)
_JOB_KEYS = (
    "job",
    "batch",
    "source",
    "step",
    "outcome",
    "reason",
    "dest",
    "sha256",
    "size",
    "duplicate_of",
    "created_at",
    "finished_at",
    "move",
    "original_path",
    "original_original_name",
)
# jobs that no current catalog row stands for: duplicates, rejects, failures, vanished
# files, and filed files that were undone since
_NOT_IN_CATALOG = "NOT EXISTS (SELECT 1 FROM files c WHERE c.job_id = j.id)"

SHA_PREFIX = re.compile(r"^[0-9a-fA-F]{6,64}$")
DATE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")
# a job's source's base name, lowered, when the source is printable ASCII, else NULL:
# the expression of the index jobs_lower_base (schema.MIGRATIONS), written the same
_SRC = "CAST(source AS TEXT)"
JOB_LOWER_BASE = (
    f"CASE WHEN {_SRC} NOT GLOB '*[^ -~]*' THEN lower(substr({_SRC}, "
    f"length(rtrim({_SRC}, replace({_SRC}, '/', ''))) + 1)) END"
)


def as_text(v: Any) -> Any:
    """A catalog value for people: a name kept as bytes (not UTF-8) shown with escapes."""
    if isinstance(v, bytes | memoryview):
        return bytes(v).decode("utf-8", "backslashreplace")
    return v


def _scalar(conn: apsw.Connection, sql: str, args: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row, or None when there is no row."""
    rows = conn.execute(sql, args).fetchall()
    return rows[0][0] if rows else None


def _rows(
    conn: apsw.Connection, sql: str, args: tuple[Any, ...], keys: tuple[str, ...]
) -> list[dict[str, Any]]:
    return [dict(zip(keys, map(as_text, row), strict=True)) for row in conn.execute(sql, args)]


# -- find -------------------------------------------------------------------------------


def files_where(
    conn: apsw.Connection, where: str, args: tuple[Any, ...], limit: int
) -> list[dict[str, Any]]:
    """Catalog rows (newest first) with the job that filed them."""
    return _rows(
        conn,
        f"SELECT {_FILE_COLS} FROM files f LEFT JOIN jobs j ON j.id = f.job_id "
        f"WHERE {where} ORDER BY f.imported_at DESC, f.id DESC LIMIT ?",
        (*args, limit),
        _FILE_KEYS,
    )


def jobs_where(
    conn: apsw.Connection, where: str, args: tuple[Any, ...], limit: int | None
) -> list[dict[str, Any]]:
    """Jobs that no catalog row stands for (newest first), with the row a duplicate
    duplicated."""
    sql = (
        f"SELECT {_JOB_COLS} FROM jobs j LEFT JOIN files o ON o.id = j.duplicate_of "
        f"WHERE {_NOT_IN_CATALOG} AND ({where}) ORDER BY j.id DESC"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return _rows(conn, sql, args, _JOB_KEYS)


def find_sha256(conn: apsw.Connection, sha256: str, limit: int) -> list[dict[str, Any]]:
    """Exact content: the catalog row and every other job that saw these bytes."""
    return (
        files_where(
            conn,
            "(f.sha256 = ? OR (f.sha256 > ? AND f.sha256 < ?))",
            (sha256, sha256 + ":", sha256 + ";"),
            limit,
        )  # companions' keys too
        + jobs_where(conn, "j.sha256 = ?", (sha256,), limit)
    )


def find_sha_prefix(conn: apsw.Connection, prefix: str, limit: int) -> list[dict[str, Any]]:
    lo = prefix.lower()
    hi = lo + "g"  # every hex string with this prefix sorts between lo and lo + 'g'
    return files_where(conn, "f.sha256 >= ? AND f.sha256 < ?", (lo, hi), limit) + jobs_where(
        conn, "j.sha256 >= ? AND j.sha256 < ?", (lo, hi), limit
    )


def find_date(conn: apsw.Connection, day_or_month: str, limit: int) -> list[dict[str, Any]]:
    """Files captured on a day (2024-06-03) or in a month (2024-06), local wall time."""
    return files_where(
        conn, "f.captured >= ? AND f.captured < ?", (day_or_month, day_or_month + "\x7f"), limit
    )


def _ascii_prefix_range(pat: str) -> tuple[str, str] | None:
    """[lo, hi): every string that starts with the glob's literal ASCII prefix (the part
    before the first `*`, `?`, `[` or non-ASCII character), or None when it is empty.

    Only ASCII: an ASCII character of a pattern matches only that very byte, in SQLite's
    GLOB (which decodes malformed UTF-8 to U+FFFD or to the code point an overlong form
    spells) as in fnmatch on a lowered name, so a match always starts with these bytes."""
    end = 0
    while end < len(pat) and pat[end] not in "*?[" and pat[end] < "\x80":
        end += 1
    if not end:
        return None
    lo = pat[:end]
    return lo, lo[:-1] + chr(ord(lo[-1]) + 1)  # byte order is code point order in UTF-8


def find_name(conn: apsw.Connection, pattern: str, limit: int) -> list[dict[str, Any]]:
    """Original names matching a glob (`IMG_12*`), case-insensitively.

    A literal prefix is an index range (indexes `files_lower_name`,
    `jobs_lower_base`) besides the glob, which still decides: the same rows as a scan.
    Jobs whose base name is not printable ASCII are indexed as NULL and always looked at,
    since Python's lower() (the match below) may fold them differently than SQLite's."""
    pat = pattern.lower()
    rng = _ascii_prefix_range(pat)
    # `+`: not SQLite's own GLOB-to-range rewrite on the index, which would compare the
    # bytes of a non-ASCII prefix where GLOB compares decoded (even malformed) characters
    if rng is None:
        files = files_where(conn, "+lower(f.original_name) GLOB ?", (pat,), limit)
        jobs_in = jobs_where(conn, "1", (), None)
    else:
        files = files_where(
            conn,
            "lower(f.original_name) >= ? AND lower(f.original_name) < ?"
            " AND +lower(f.original_name) GLOB ?",
            (*rng, pat),
            limit,
        )
        base = JOB_LOWER_BASE
        jobs_in = jobs_where(conn, f"({base} >= ? AND {base} < ?) OR {base} IS NULL", rng, None)
    jobs = [j for j in jobs_in if fnmatch.fnmatchcase(os.path.basename(j["source"]).lower(), pat)][
        :limit
    ]
    return files + jobs


def find_source(conn: apsw.Connection, source: bytes, limit: int) -> list[dict[str, Any]]:
    """Files and jobs that came from a path (a glob when it has * ? or [)."""
    if not any(c in source for c in b"*?["):
        return files_where(conn, "f.source_path = ?", (source,), limit) + jobs_where(
            conn, "j.source = ?", (source,), limit
        )
    text = source.decode("utf-8", "backslashreplace")
    files = [
        f for f in files_where(conn, "1", (), 1 << 62) if fnmatch.fnmatchcase(f["source"], text)
    ][:limit]
    jobs = [j for j in jobs_where(conn, "1", (), None) if fnmatch.fnmatchcase(j["source"], text)][
        :limit
    ]
    return files + jobs


def undos_of(conn: apsw.Connection, job_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The latest undo of each of these jobs, if any."""
    out: dict[int, dict[str, Any]] = {}
    for i in range(0, len(job_ids), 500):
        chunk = job_ids[i : i + 500]
        for row in _rows(
            conn,
            "SELECT job_id, id, batch, step, outcome, dest, error, "
            "coalesce(finished_at, updated_at) FROM undos WHERE job_id IN "
            f"({', '.join('?' * len(chunk))}) ORDER BY id",
            tuple(chunk),
            ("job", "undo", "batch", "step", "outcome", "dest", "reason", "when"),
        ):
            out[row.pop("job")] = row
    return out


def file_by_id(conn: apsw.Connection, file_id: int) -> dict[str, Any] | None:
    rows = files_where(conn, "f.id = ?", (file_id,), 1)
    return rows[0] if rows else None


# -- status and metrics -----------------------------------------------------------------


def latest_batch(conn: apsw.Connection) -> dict[str, Any] | None:
    """The batch of the newest job: its id, when it started, its counts."""
    rows = conn.execute("SELECT batch FROM jobs ORDER BY id DESC LIMIT 1").fetchall()
    if not rows:
        return None
    batch = rows[0][0]
    started = _scalar(
        conn, "SELECT created_at FROM jobs WHERE batch = ? ORDER BY id LIMIT 1", (batch,)
    )
    last = _scalar(
        conn,
        "SELECT finished_at FROM jobs WHERE batch = ? AND step = 'done' ORDER BY id DESC LIMIT 1",
        (batch,),
    )
    counts = dict(conn.execute("SELECT outcome, n FROM tally_batch WHERE batch = ?", (batch,)))
    # through the partial index of unfinished jobs (the batch index would count them all)
    pending = _scalar(
        conn,
        "SELECT count(*) FROM jobs INDEXED BY jobs_active_source "
        "WHERE step != 'done' AND batch = ?",
        (batch,),
    )
    if pending:
        counts["pending"] = pending
    return {"batch": batch, "started": started, "last_finished": last, "counts": counts}


def last_finished(conn: apsw.Connection, outcome: str | None = None) -> str | None:
    when: str | None
    if outcome is None:
        when = _scalar(conn, "SELECT max(finished_at) FROM jobs")
    else:
        when = _scalar(conn, "SELECT max(finished_at) FROM jobs WHERE outcome = ?", (outcome,))
    return when


def latest_job_for(conn: apsw.Connection, source: bytes) -> dict[str, Any] | None:
    """The newest job for a source path (why a file is still in the inbox)."""
    rows = _rows(
        conn,
        "SELECT id, step, outcome, error, attempts, dev, ino, size, mtime_ns, "
        "move, coalesce(finished_at, updated_at) FROM jobs WHERE source = ? "
        "ORDER BY id DESC LIMIT 1",
        (source,),
        (
            "job",
            "step",
            "outcome",
            "reason",
            "attempts",
            "dev",
            "ino",
            "size",
            "mtime_ns",
            "move",
            "when",
        ),
    )
    return rows[0] if rows else None


def filed_bytes(conn: apsw.Connection) -> int:
    """Bytes of every file ever filed (undone ones included: a counter never goes down)."""
    return int(
        _scalar(conn, "SELECT coalesce(sum(bytes), 0) FROM tally_hour WHERE outcome = 'filed'")
    )


def pending_jobs(conn: apsw.Connection) -> int:
    return int(_scalar(conn, "SELECT count(*) FROM jobs WHERE step != 'done'"))
