"""The library files adopt and verify --repair keep where they stand that are no catalog
row of their own (the `kept_files` table): album copies (the same bytes as a row) and
files that are not photos or videos. Listed so `verify` does not call them strays.
"""

from __future__ import annotations

from collections.abc import Iterator

import apsw

from .catalog import from_db, to_db


def record(
    conn: apsw.Connection,
    *,
    path: str,
    kind: str,
    file_id: int | None,
    size: int,
    mtime_ns: int | None,
    reason: str,
    when: str,
) -> None:
    """Record a library file the user keeps that is no catalog row of its own: `copy` (the
    same bytes as the row `file_id`: an album copy) or `other` (not a photo or video)."""
    conn.execute(
        "INSERT INTO kept_files (path, kind, file_id, size, mtime_ns, reason, "
        "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (to_db(path), kind, file_id, size, mtime_ns, reason, when),
    )


def listed(conn: apsw.Connection) -> Iterator[tuple[str, str, str]]:
    """(path, kind, reason) of every kept file."""
    for path, kind, reason in conn.execute("SELECT path, kind, reason FROM kept_files ORDER BY id"):
        yield from_db(path), kind, reason


def copies(conn: apsw.Connection) -> dict[str, tuple[str, int, str]]:
    """Every kept copy: path -> (the sha256 and size its row's file has, the row's path)."""
    return {
        from_db(path): (str(sha256).partition(":")[0], size, from_db(row))
        for path, sha256, size, row in conn.execute(
            "SELECT k.path, f.sha256, f.size, f.path FROM kept_files k"
            " JOIN files f ON f.id = k.file_id WHERE k.kind = 'copy'"
        )
    }


def others(conn: apsw.Connection) -> dict[str, tuple[int, int | None]]:
    """Every kept file that is not a photo or video: path -> (size, mtime_ns) as recorded."""
    return {
        from_db(path): (size, mtime_ns)
        for path, size, mtime_ns in conn.execute(
            "SELECT path, size, mtime_ns FROM kept_files WHERE kind = 'other'"
        )
    }


def is_kept(conn: apsw.Connection, path: str) -> bool:
    return bool(conn.execute("SELECT 1 FROM kept_files WHERE path = ?", (to_db(path),)).fetchall())


def copies_of(conn: apsw.Connection, file_id: int) -> list[str]:
    """The kept copies of a row's bytes (adopt's album copies), by path."""
    return [
        from_db(p)
        for (p,) in conn.execute(
            "SELECT path FROM kept_files WHERE kind = 'copy' AND file_id = ? ORDER BY id",
            (file_id,),
        )
    ]


def promote(conn: apsw.Connection, file_id: int, path: str, mtime_ns: int) -> None:
    """A kept copy becomes the file a row stands for (its own file was lost)."""
    forget(conn, path)
    conn.execute(
        "UPDATE files SET path = ?, mtime_ns = ?, missing_since = NULL WHERE id = ?",
        (to_db(path), mtime_ns, file_id),
    )


def forget(conn: apsw.Connection, path: str) -> None:
    conn.execute("DELETE FROM kept_files WHERE path = ?", (to_db(path),))
