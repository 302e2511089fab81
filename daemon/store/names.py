"""Free names in the library: the `.N` a name or a RAW+JPEG stem gets, in O(log n)
whatever the number of files sharing it (counters in name_seq, numbers given back in
name_free). Crash invariant: a number is reserved in the caller's BEGIN IMMEDIATE
transaction together with the row that takes it, so two workers never get one name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import apsw

from ..rules.layout import numbered, pairs_with, stem_of
from .catalog import stem_key, to_db


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
    holes, n, probed = _numbers(
        conn, preferred[0], *((PROBE_NAME, (to_db(preferred[0]),)) if one else ())
    )
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
    rows: list[Any] = conn.execute(
        "SELECT last FROM name_seq WHERE path = ?", (to_db(key),)
    ).fetchall()
    return int(rows[0][0]) + 1 if rows else 0


_FRESH = (
    "CASE WHEN EXISTS (SELECT 1 FROM name_seq WHERE path = ?1) OR EXISTS (SELECT 1"
    " FROM name_free WHERE path = ?1) THEN {no} ELSE {yes} END"
)
# the look-up of a name's (?2) or stem's (?2 to ?3) first candidate, number 0, if its key
# has no counter or freed number, else an empty range: the guard is in the range's bound,
# computed once, so a stem many files share is not read row by row
PROBE_NAME = "SELECT 2, path FROM files WHERE path = " + _FRESH.format(no="NULL", yes="?2")
PROBE_STEM = "SELECT 2, path FROM files WHERE path >= ?2 AND path < " + _FRESH.format(
    no="?2", yes="?3"
)


def _numbers(
    conn: apsw.Connection, key: str, probe: str = "", args: tuple[Any, ...] = ()
) -> tuple[list[int], int, list[Any] | None]:
    """The numbers of `key` freed by deletions (name_free, lowest first), where the
    search for a new one starts (next_number) and, with `probe` (PROBE_NAME or
    PROBE_STEM, values `args`), the catalog's rows for candidate 0 when nothing was
    counted or freed for `key` (else None): one statement."""
    sql = (
        "SELECT 0, n FROM name_free WHERE path = ?1"
        " UNION ALL SELECT 1, last + 1 FROM name_seq WHERE path = ?1"
    )
    holes: list[int] = []
    start, rows, counted = 0, [], False
    for tag, value in conn.execute(
        f"{sql} UNION ALL {probe}" if probe else sql, (to_db(key), *args)
    ):
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
    rows: list[Any] = conn.execute(
        "SELECT min(n) FROM name_free WHERE path = ?", (to_db(key),)
    ).fetchall()
    return rows[0][0] if rows and rows[0][0] is not None else next_number(conn, key)


def _count(conn: apsw.Connection, keys: Sequence[str], n: int) -> None:
    """Remember `n` as given for each key (in the caller's transaction)."""
    if n:
        conn.executemany(
            "INSERT INTO name_seq (path, last) VALUES (?, ?) ON CONFLICT (path)"
            " DO UPDATE SET last = max(last, excluded.last)",
            [(to_db(key), n) for key in keys],
        )


def is_free(
    conn: apsw.Connection, library: bytes, path: str, rows: list[Any] | None = None
) -> bool:
    """`path` is taken neither in the catalog nor on disk; `rows`: the catalog's rows at
    `path`, when already read."""
    taken = (
        rows
        if rows is not None
        else conn.execute("SELECT 1 FROM files WHERE path = ?", (to_db(path),)).fetchall()
    )
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


def _stem_free(
    conn: apsw.Connection, library: bytes, candidate: str, rows: list[Any] | None = None
) -> bool:
    """No catalogued RAW, JPEG or HEIC has the candidate's stem, and it is free on disk;
    `rows`: the catalog's paths in the stem's range, when already read."""
    prefix = stem_of(candidate) + "."
    if rows is None:
        rows = conn.execute(
            "SELECT path FROM files WHERE path >= ? AND path < ?", _stem_range(candidate)
        ).fetchall()
    exts = (str(path)[len(prefix) :] for (path,) in rows)
    return not any(
        "." not in ext and pairs_with("." + ext) for ext in exts
    ) and not os.path.lexists(os.path.join(library, os.fsencode(candidate)))
