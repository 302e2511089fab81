"""The catalog's SQL: `files` (one row per library file, unique by sha256 and by path), the
name counters that hand out free names and `.N` numbers, and `file_history` (edits).
Crash invariant: a row is committed before its file is placed (until its
job is done the file may still be in staging); a name is reserved in the caller's BEGIN
IMMEDIATE transaction, so two workers never get one name or file one content twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import apsw

from ..model import MediaInfo
from ..rules.layout import numbered, pairs_with, stem_of


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


_COLS = ("id, sha256, size, path, captured, date_source, original_name, job_id, missing_since,"
         " utc_offset, confidence, content_id")


def by_sha256(conn: apsw.Connection, sha256: str) -> Entry | None:
    rows = conn.execute(f"SELECT {_COLS} FROM files WHERE sha256 = ?", (sha256,)).fetchall()
    return _entry(rows[0]) if rows else None


def by_id(conn: apsw.Connection, file_id: int) -> Entry | None:
    rows = conn.execute(f"SELECT {_COLS} FROM files WHERE id = ?", (file_id,)).fetchall()
    return _entry(rows[0]) if rows else None


def by_path(conn: apsw.Connection, path: str) -> Entry | None:
    rows = conn.execute(f"SELECT {_COLS} FROM files WHERE path = ?", (to_db(path),)).fetchall()
    return _entry(rows[0]) if rows else None


def free_number(conn: apsw.Connection, library: bytes, preferred: Sequence[str]) -> int:
    """Reserve one `.N` for a set of preferred library paths (one name, or several
    extensions of one stem): the lowest n above the highest number already given for
    any of them such that `numbered(p, n)` is taken neither in the catalog nor on disk
    for every p. Runs inside the caller's write transaction, which must also insert the
    rows for the names: the counters move with them.

    O(log n) whatever the number of files sharing a name: each preferred path keeps the
    highest `.N` given for it (table name_seq), so only the next candidate is looked at
    (one indexed look-up in the catalog and one lstat), and more only when something
    else already holds it (a stray file on disk, a row adopted or renamed there). The
    number of a deleted row (a crash's redo, an undo) is given again first (name_free);
    other gaps stay: numbers need not be dense."""
    one = len(preferred) == 1  # then the first candidate's look-up comes with the numbers
    holes, n, probed = _numbers(conn, preferred[0], *((PROBE_NAME, (to_db(preferred[0]),))
                                                      if one else ()))
    for hole in _forget(conn, preferred[0], holes):
        if all(is_free(conn, library, numbered(path, hole)) for path in preferred):
            return hole
    n = max([n, *(next_number(conn, path) for path in preferred[1:])])
    while not all(is_free(conn, library, numbered(path, n), probed) for path in preferred):
        n, probed = n + 1, None
    _count(conn, preferred, n)
    return n


def free_name(conn: apsw.Connection, library: bytes, preferred: str) -> str:
    """`preferred` or its first free `.N` (free_number for one name), reserved."""
    return numbered(preferred, free_number(conn, library, [preferred]))


def next_number(conn: apsw.Connection, key: str) -> int:
    """Where the search for a free `.N` starts for `key` (a preferred path, or
    stem_key's): one above the highest given (nothing reserved; the dry run counts from
    here too)."""
    rows: list[Any] = conn.execute("SELECT last FROM name_seq WHERE path = ?",
                                   (to_db(key),)).fetchall()
    return int(rows[0][0]) + 1 if rows else 0


_FRESH = ("CASE WHEN EXISTS (SELECT 1 FROM name_seq WHERE path = ?1) OR EXISTS (SELECT 1"
          " FROM name_free WHERE path = ?1) THEN {no} ELSE {yes} END")
# the look-up of a name's (?2) or stem's (?2 to ?3) first candidate, number 0, if its key
# has no counter or freed number, else an empty range: the guard is in the range's bound,
# computed once, so a stem many files share is not read row by row
PROBE_NAME = "SELECT 2, path FROM files WHERE path = " + _FRESH.format(no="NULL", yes="?2")
PROBE_STEM = ("SELECT 2, path FROM files WHERE path >= ?2 AND path < "
              + _FRESH.format(no="?2", yes="?3"))


def _numbers(conn: apsw.Connection, key: str, probe: str = "", args: tuple[Any, ...] = ()
             ) -> tuple[list[int], int, list[Any] | None]:
    """The numbers of `key` freed by deletions (name_free, lowest first), where the
    search for a new one starts (next_number) and, with `probe` (PROBE_NAME or
    PROBE_STEM, values `args`), the catalog's rows for candidate 0 when nothing was
    counted or freed for `key` (else None): one statement."""
    sql = ("SELECT 0, n FROM name_free WHERE path = ?1"
           " UNION ALL SELECT 1, last + 1 FROM name_seq WHERE path = ?1")
    holes: list[int] = []
    start, rows, counted = 0, [], False
    for tag, value in conn.execute(f"{sql} UNION ALL {probe}" if probe else sql,
                                   (to_db(key), *args)):
        if tag == 0:
            holes.append(int(value))
        elif tag == 1:
            start, counted = int(value), True
        else:
            rows.append((value,))
    return sorted(holes), start, rows if probe and not holes and not counted else None


def _forget(conn: apsw.Connection, key: str, holes: list[int]) -> Iterator[int]:
    """Each of `holes` (numbers of `key` freed by deletions) in turn, forgotten as it is
    looked at (given again, or taken meanwhile by something else)."""
    for n in holes:
        conn.execute("DELETE FROM name_free WHERE path = ? AND n = ?", (to_db(key), n))
        yield n


def first_number(conn: apsw.Connection, key: str) -> int:
    """The lowest number a reservation for `key` could give (the dry run starts there)."""
    rows: list[Any] = conn.execute("SELECT min(n) FROM name_free WHERE path = ?",
                                   (to_db(key),)).fetchall()
    return rows[0][0] if rows and rows[0][0] is not None else next_number(conn, key)


def stem_key(preferred: str) -> str:
    """The counter a RAW+JPEG/HEIC stem keeps (`a/b.*`: no library path ends so)."""
    return stem_of(preferred) + ".*"


def _count(conn: apsw.Connection, keys: Sequence[str], n: int) -> None:
    """Remember `n` as given for each key (in the caller's transaction)."""
    if n:
        conn.executemany("INSERT INTO name_seq (path, last) VALUES (?, ?) ON CONFLICT (path)"
                         " DO UPDATE SET last = max(last, excluded.last)",
                         [(to_db(key), n) for key in keys])


def is_free(conn: apsw.Connection, library: bytes, path: str,
            rows: list[Any] | None = None) -> bool:
    """`path` is taken neither in the catalog nor on disk; `rows`: the catalog's rows at
    `path`, when already read."""
    taken = rows if rows is not None else conn.execute(
        "SELECT 1 FROM files WHERE path = ?", (to_db(path),)).fetchall()
    return not taken and not os.path.lexists(os.path.join(library, os.fsencode(path)))


def free_stem(conn: apsw.Connection, library: bytes, preferred: str) -> str:
    """The first of `preferred`, `.1`, `.2`, ... whose stem no catalogued RAW, JPEG or
    HEIC has (with any of their extensions: `x.cr2` takes the stem of `x.jpg` too), and
    free on disk: the stem a RAW+JPEG pair's first file reserves for both. Counted from
    one above the highest number given to the stem (name_seq, as free_number), so the
    n-th pair or JPEG of one second costs what the first does."""
    key = stem_key(preferred)
    holes, n, probed = _numbers(conn, key, PROBE_STEM, _stem_range(preferred))
    for hole in _forget(conn, key, holes):
        if _stem_free(conn, library, candidate := numbered(preferred, hole)):
            return candidate
    while not _stem_free(conn, library, candidate := numbered(preferred, n), probed):
        n, probed = n + 1, None
    _count(conn, [key], n)
    return candidate


def _stem_range(candidate: str) -> tuple[str, str]:
    """The catalog paths that share the candidate's stem lie in [low, high)."""
    prefix = stem_of(candidate) + "."
    return prefix, prefix[:-1] + "/"


def _stem_free(conn: apsw.Connection, library: bytes, candidate: str,
               rows: list[Any] | None = None) -> bool:
    """No catalogued RAW, JPEG or HEIC has the candidate's stem, and it is free on disk;
    `rows`: the catalog's paths in the stem's range, when already read."""
    prefix = stem_of(candidate) + "."
    if rows is None:
        rows = conn.execute("SELECT path FROM files WHERE path >= ? AND path < ?",
                            _stem_range(candidate)).fetchall()
    exts = (str(path)[len(prefix):] for (path,) in rows)
    return not any("." not in ext and pairs_with("." + ext) for ext in exts) \
        and not os.path.lexists(os.path.join(library, os.fsencode(candidate)))


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
        " WHERE j.source >= ? AND j.source < ?", (prefix, upper, prefix, upper)).fetchall()
    return [(bytes(r[0]), _entry(r[1:])) for r in rows]  # type: ignore[arg-type]


def count_under(conn: apsw.Connection, folder: str) -> int:
    """Catalogued files whose path starts with `folder/`."""
    ((n,),) = conn.execute("SELECT count(*) FROM files WHERE path >= ? AND path < ?",
                           (folder + "/", folder + "0")).fetchall()
    return n if isinstance(n, int) else 0


def insert(conn: apsw.Connection, *, sha256: str, size: int, path: str, info: MediaInfo,
           original_name: str, source: bytes, imported_at: str, job_id: int | None,
           mtime_ns: int | None = None) -> int:
    """`mtime_ns`: the file's mtime as it is placed (verify --repair tells an edit from
    bit rot by it)."""
    conn.execute(
        "INSERT INTO files (sha256, size, path, captured, utc_offset, date_source, date_raw,"
        " confidence, original_name, source_path, imported_at, file_type, mime, kind, job_id,"
        " mtime_ns, content_id, date_skipped)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (sha256, size, to_db(path), info.captured.isoformat(sep=" "), info.utc_offset,
         info.date_source, info.date_raw, info.confidence, original_name, source, imported_at,
         info.file_type, info.mime, info.kind, job_id, mtime_ns, info.content_id,
         info.date_skipped))
    return conn.last_insert_rowid()


def rename(conn: apsw.Connection, file_id: int, path: str) -> None:
    conn.execute("UPDATE files SET path = ? WHERE id = ?", (to_db(path), file_id))


def filed_stamp(conn: apsw.Connection, file_id: int) -> tuple[int | None, str]:
    """The file's mtime when catalogued (None in rows from before it was recorded) and
    when it was catalogued (UTC, ISO 8601)."""
    rows: list[Any] = conn.execute("SELECT mtime_ns, imported_at FROM files WHERE id = ?",
                                   (file_id,)).fetchall()
    return rows[0][0], rows[0][1]


def mark_missing(conn: apsw.Connection, path: str, when: str) -> None:
    conn.execute("UPDATE files SET missing_since = ? WHERE path = ?", (when, to_db(path)))


def record_edit(conn: apsw.Connection, entry: Entry, *, sha256: str, size: int,
                mtime_ns: int, when: str, reason: str) -> None:
    """The row follows its edited file: the new hash, size and mtime; the old ones go to
    file_history."""
    remember(conn, entry, when, reason)
    conn.execute("UPDATE files SET sha256 = ?, size = ?, mtime_ns = ? WHERE id = ?",
                 (sha256, size, mtime_ns, entry.id))


def remember(conn: apsw.Connection, entry: Entry, when: str, reason: str) -> None:
    """Keep what a row says (hash, size, mtime) in file_history before it changes or goes."""
    conn.execute("INSERT INTO file_history (file_id, path, sha256, size, mtime_ns, "
                 "replaced_at, reason) SELECT id, path, sha256, size, mtime_ns, ?, ? "
                 "FROM files WHERE id = ?", (when, reason, entry.id))


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
    rows: list[Any] = conn.execute("DELETE FROM files WHERE id = ? RETURNING path",
                                   (file_id,)).fetchall()
    if rows:
        conn.executemany(
            "INSERT OR IGNORE INTO name_free (path, n) SELECT ?1, ?2 WHERE EXISTS "
            "(SELECT 1 FROM name_seq WHERE path = ?1 AND last >= ?2)",
            [(to_db(key), n) for key, n in _readings(from_db(rows[0][0]))])


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
