"""The journal's SQL (the `jobs` table): one row per job, recorded before its source is
touched and advanced one committed step at a time, each step's effect durable first (the
caller's). Crash invariant: a row whose step is not 'done' is unfinished work that replay
resumes; a finished job's outcome and its tallies commit together.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import apsw

from ..model import Identity, Job, Outcome, Step
from .db import first

_COLS = (
    "id, batch, source, dev, ino, size, mtime_ns, move, step, staged, sha256, bytes, "
    "dest, outcome, error, attempts, duplicate_of"
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _job(row: tuple[Any, ...]) -> Job:
    (
        id_,
        batch,
        source,
        dev,
        ino,
        size,
        mtime_ns,
        move,
        step,
        staged,
        sha256,
        nbytes,
        dest,
        outcome,
        error,
        attempts,
        duplicate_of,
    ) = row
    return Job(
        id=id_,
        batch=batch,
        source=bytes(source),
        identity=Identity(dev, ino, size, mtime_ns),
        move=bool(move),
        step=Step(step),
        staged=bytes(staged) if staged is not None else None,
        sha256=sha256,
        size=nbytes,
        dest=bytes(dest) if dest is not None else None,
        outcome=Outcome(outcome) if outcome else None,
        error=error,
        attempts=attempts,
        duplicate_of=duplicate_of,
    )


def get(conn: apsw.Connection, job_id: int) -> Job:
    rows = conn.execute(f"SELECT {_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchall()
    return _job(rows[0])


def active_for(conn: apsw.Connection, source: bytes) -> Job | None:
    """The unfinished job for a source path, if there is one."""
    return for_source(conn, source, None)[0]


def settled_for(conn: apsw.Connection, source: bytes, ident: Identity) -> Job | None:
    """A finished job that left this very file (same identity) where it is, if any:
    a kept duplicate or a reject that could not be moved. Such files are not taken again."""
    return for_source(conn, source, ident)[1]


_ACTIVE = f"SELECT 0, {_COLS} FROM jobs WHERE source = ?1 AND step != 'done'"
_SETTLED = (
    f"SELECT * FROM (SELECT 1, {_COLS} FROM jobs WHERE source = ?1 AND ino = ?2 AND "
    "size = ?3 AND mtime_ns = ?4 AND step = 'done' AND move = 1 AND outcome NOT IN "
    "('failed', 'vanished') ORDER BY id DESC LIMIT 1)"
)


def for_source(
    conn: apsw.Connection, source: bytes, ident: Identity | None
) -> tuple[Job | None, Job | None]:
    """active_for(source) and, given `ident`, settled_for(source, ident), read in one
    statement (recording a new file asks both)."""
    found: list[Job | None] = [None, None]
    if ident is None:
        rows = conn.execute(_ACTIVE, (source,)).fetchall()
    else:
        rows = conn.execute(
            f"{_ACTIVE} UNION ALL {_SETTLED}", (source, ident.ino, ident.size, ident.mtime_ns)
        ).fetchall()
    for row in rows:
        found[1 if row[0] else 0] = _job(tuple(row[1:]))
    return found[0], found[1]


def latest_for(conn: apsw.Connection, sources: list[bytes]) -> dict[bytes, Job]:
    """The newest job of each of these source paths."""
    out: dict[bytes, Job] = {}
    for source in sources:
        rows = conn.execute(
            f"SELECT {_COLS} FROM jobs WHERE source = ? ORDER BY id DESC LIMIT 1", (source,)
        ).fetchall()
        if rows:
            out[source] = _job(rows[0])
    return out


def latest_under(conn: apsw.Connection, prefix: bytes) -> dict[bytes, Job]:
    """The newest job of each source path that starts with `prefix` (non-empty)."""
    upper = prefix[:-1] + bytes([prefix[-1] + 1]) if prefix[-1] < 255 else prefix + b"\xff"
    out: dict[bytes, Job] = {}
    for row in conn.execute(
        f"SELECT {_COLS} FROM jobs WHERE source >= ? AND source < ? ORDER BY id", (prefix, upper)
    ):
        job = _job(row)
        out[job.source] = job
    return out


def age(conn: apsw.Connection, job_id: int) -> float:
    """Seconds since the job was recorded."""
    created = conn.execute("SELECT created_at FROM jobs WHERE id = ?", (job_id,)).fetchall()
    return (datetime.now(UTC) - datetime.fromisoformat(first(created))).total_seconds()


def record(
    conn: apsw.Connection, batch: str, source: bytes, ident: Identity, move: bool, staged_dir: bytes
) -> Job:
    """Insert a new job at RECORDED (inside the caller's transaction), its staging path
    (`staged_dir/job-<id>`) written with it: one statement. The id is the one SQLite
    would give (one above the highest, as for any INTEGER PRIMARY KEY), chosen in the
    statement so that the path can carry it."""
    t = now()
    return _job(
        conn.execute(
            "INSERT INTO jobs (id, batch, source, dev, ino, size, mtime_ns, move, step, staged,"
            " created_at, updated_at) SELECT n, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? || n AS BLOB), ?, ?"
            f" FROM (SELECT coalesce(max(id), 0) + 1 AS n FROM jobs) RETURNING {_COLS}",
            (
                batch,
                source,
                ident.dev,
                ident.ino,
                ident.size,
                ident.mtime_ns,
                int(move),
                Step.RECORDED.value,
                staged_dir + b"/job-",
                t,
                t,
            ),
        ).fetchall()[0]
    )


def advance(conn: apsw.Connection, job_id: int, step: Step, **fields: Any) -> Job:
    """Move a job to `step`, setting the given columns (inside the caller's transaction);
    the job as it now is."""
    sets = ["step = ?", "updated_at = ?"]
    args: list[Any] = [step.value, now()]
    for name, value in fields.items():
        sets.append(f"{name} = ?")
        args.append(value.value if isinstance(value, Outcome) else value)
    if "error" in fields:  # another error (or none): no longer the library being full
        sets.append("library_full = 0")
    if step is Step.DONE:
        sets.append("finished_at = ?")
        args.append(args[1])
    return _job(
        conn.execute(
            f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? RETURNING {_COLS}", (*args, job_id)
        ).fetchall()[0]
    )


def note_attempt(
    conn: apsw.Connection,
    job_id: int,
    error: str,
    ident: Identity | None,
    count: bool = True,
    full: bool = False,
) -> None:
    """Record why a job will be retried (and the source's new identity); `count`: it is a
    failed attempt (waiting for a writer to finish is not one); `full`: the library's
    filesystem was full (waiting_for_space)."""
    n = 1 if count else 0
    if ident is None:
        conn.execute(
            "UPDATE jobs SET attempts = attempts + ?, error = ?, library_full = ?, "
            "updated_at = ? WHERE id = ?",
            (n, error, int(full), now(), job_id),
        )
    else:
        conn.execute(
            "UPDATE jobs SET attempts = attempts + ?, error = ?, library_full = ?, "
            "updated_at = ?, dev = ?, ino = ?, size = ?, mtime_ns = ? WHERE id = ?",
            (n, error, int(full), now(), ident.dev, ident.ino, ident.size, ident.mtime_ns, job_id),
        )


def unfinished(conn: apsw.Connection) -> list[Job]:
    """Every unfinished job, oldest first. Sorted here: with ORDER BY, SQLite walks the
    whole table in id order instead of the partial index of unfinished jobs (a cold
    start-up read a million finished jobs from disk to find none)."""
    return sorted(
        (
            _job(r)
            for r in conn.execute(f"SELECT {_COLS} FROM jobs WHERE step != 'done'").fetchall()
        ),
        key=lambda j: j.id,
    )


def staged_paths(conn: apsw.Connection) -> set[bytes]:
    """Staging files that unfinished jobs own."""
    return {
        bytes(r[0])
        for r in conn.execute("SELECT staged FROM jobs WHERE step != 'done' AND staged IS NOT NULL")
    }


def counts(conn: apsw.Connection, since: str | None = None) -> dict[str, int]:
    """Finished jobs by outcome, all time or since an ISO UTC time (to the hour: the
    tallies are kept per UTC hour)."""
    sql = "SELECT outcome, sum(n) FROM tally_hour"
    args: tuple[Any, ...] = ()
    if since:
        sql += " WHERE bucket >= ?"
        args = (since[:13],)
    out = {o.value: 0 for o in Outcome}
    for outcome, n in conn.execute(sql + " GROUP BY outcome", args):
        out[outcome] = n
    return out


def pending(conn: apsw.Connection) -> int:
    return int(first(conn.execute("SELECT count(*) FROM jobs WHERE step != 'done'").fetchall()))


def waiting_for_space(conn: apsw.Connection) -> int:
    """Unfinished jobs whose last attempt found the library's filesystem full."""
    return int(
        first(
            conn.execute(
                "SELECT count(*) FROM jobs WHERE step != 'done' AND library_full"
            ).fetchall()
        )
    )


def recent_problems(conn: apsw.Connection, limit: int = 10) -> Iterator[dict[str, Any]]:
    """The newest failed and rejected jobs, and unfinished ones retrying after an error
    (three index range scans, merged)."""
    cols = "SELECT id, source, outcome, error, finished_at, step, updated_at FROM jobs "
    rows = [
        *conn.execute(
            cols + "WHERE outcome = 'failed' ORDER BY finished_at DESC LIMIT ?", (limit,)
        ),
        *conn.execute(
            cols + "WHERE outcome = 'rejected' ORDER BY finished_at DESC LIMIT ?", (limit,)
        ),
        *conn.execute(cols + "WHERE step != 'done' AND error IS NOT NULL", ()),
    ]
    rows.sort(key=lambda r: r[6], reverse=True)
    for row in rows[:limit]:
        yield {
            "job": row[0],
            "source": bytes(row[1]).decode("utf-8", "backslashreplace"),
            "outcome": row[2] if row[5] == "done" else f"waiting ({row[5]})",
            "error": row[3],
            "when": row[4],
        }
