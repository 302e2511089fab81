"""The "library full" state of a job is a column of the journal (jobs.library_full),
set by the attempt that met a full library and cleared by any other error written: what
`status` counts as waiting for space, whatever the error's words. Real SQLite files."""

from __future__ import annotations

from pathlib import Path

import apsw

from daemon.model import Identity, Outcome, Step
from daemon.store import db, journal, schema
from daemon.store.db import transaction

IDENT = Identity(1, 2, 3, 4)
FULL_WORDS = "copy failed: No space left on device: the library is full"


def _job(conn: apsw.Connection, name: bytes) -> int:
    with transaction(conn):
        return journal.record(conn, "t", b"/inbox/" + name, IDENT, True, b"/staging").id


def test_waiting_for_space_reads_the_flag_not_the_words(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "catalog.db")
    try:
        a, b = _job(conn, b"a.jpg"), _job(conn, b"b.jpg")
        assert journal.waiting_for_space(conn) == 0
        with transaction(conn):
            journal.note_attempt(conn, a, "copy failed: ENOSPC", None, full=True)
            journal.note_attempt(conn, b, f"a name that says {FULL_WORDS}", IDENT)
        assert journal.waiting_for_space(conn) == 1  # b's words are only a name
        with transaction(conn):
            journal.note_attempt(conn, b, FULL_WORDS, None, full=True)
        assert journal.waiting_for_space(conn) == 2
        with transaction(conn):  # the next attempt met other trouble
            journal.note_attempt(conn, a, "copy failed: EIO", None)
        assert journal.waiting_for_space(conn) == 1
        with transaction(conn):  # copied at last: COPIED clears the error, and the flag
            journal.advance(conn, b, Step.COPIED, error=None)
        assert journal.waiting_for_space(conn) == 0
        with transaction(conn):
            journal.note_attempt(conn, a, FULL_WORDS, None, full=True)
        assert journal.waiting_for_space(conn) == 1
        with transaction(conn):  # a finished job waits for nothing
            journal.advance(conn, a, Step.DONE, outcome=Outcome.FAILED)
        assert journal.waiting_for_space(conn) == 0
    finally:
        conn.close()


def test_the_migration_flags_jobs_an_older_version_left_waiting(tmp_path: Path) -> None:
    """A catalog from before the column: its unfinished jobs whose last error said the
    library was full are waiting for space after the upgrade, as they were before."""
    path = tmp_path / "catalog.db"
    old = apsw.Connection(str(path))
    before = next(i for i, sql in enumerate(schema.MIGRATIONS) if "library_full" in sql)
    with transaction(old):
        for sql in schema.MIGRATIONS[:before]:
            old.execute(sql)
        old.execute(f"PRAGMA user_version={before}")
        t = journal.now()
        for name, step, error in [
            (b"full.jpg", "recorded", FULL_WORDS),
            (b"eio.jpg", "recorded", "copy failed: EIO"),
            (b"done.jpg", "done", FULL_WORDS),
        ]:
            old.execute(
                "INSERT INTO jobs (batch, source, dev, ino, size, mtime_ns, move, "
                "step, outcome, error, created_at, updated_at, finished_at) VALUES "
                "('t', ?, 1, 2, 3, 4, 1, ?, ?, ?, ?, ?, ?)",
                (
                    b"/inbox/" + name,
                    step,
                    "failed" if step == "done" else None,
                    error,
                    t,
                    t,
                    t if step == "done" else None,
                ),
            )
    old.close()
    conn = db.connect(path)
    try:
        assert db.user_version(conn) == len(schema.MIGRATIONS)
        assert conn.execute("SELECT source FROM jobs WHERE library_full").fetchall() == [
            (b"/inbox/full.jpg",)
        ]
        assert journal.waiting_for_space(conn) == 1
    finally:
        conn.close()
