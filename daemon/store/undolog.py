"""The undo journal's SQL (the `undos` table) and the selection of jobs to undo. Crash
invariant: one row per file of an `undo`, committed before anything is touched and
advanced one committed step at a time; a row whose step is not 'done' is unfinished work
that the next `undo`, `import` or `run` resumes.
"""

from __future__ import annotations

from typing import Any

import apsw

from ..model import UndoItem, UndoOutcome, UndoStep

_COLS = (
    "id, batch, job_id, file_id, origin, keep_origin, target, sha256, size, mtime_ns, "
    "step, dest, outcome, error"
)
# ingest outcomes that can leave something behind to undo
UNDOABLE = ("filed", "duplicate", "rejected")
# an undo that counts: the job is undone (or is being undone) and is not selected again
_UNDONE = "(u.step != 'done' OR u.outcome IN ('restored', 'removed', 'untouched'))"


def _scalar(conn: apsw.Connection, sql: str, args: list[Any]) -> Any:
    return conn.execute(sql, args).fetchall()[0][0]


def _blob(v: Any) -> bytes | None:
    return bytes(v) if v is not None else None


def _item(row: tuple[Any, ...]) -> UndoItem:
    (
        id_,
        batch,
        job_id,
        file_id,
        origin,
        keep,
        target,
        sha256,
        size,
        mtime_ns,
        step,
        dest,
        outcome,
        error,
    ) = row
    return UndoItem(
        id=id_,
        batch=batch,
        job_id=job_id,
        file_id=file_id,
        origin=_blob(origin),
        keep_origin=bool(keep),
        target=bytes(target),
        sha256=sha256,
        size=size,
        mtime_ns=mtime_ns,
        step=UndoStep(step),
        dest=_blob(dest),
        outcome=UndoOutcome(outcome) if outcome else None,
        error=error,
    )


def get(conn: apsw.Connection, item_id: int) -> UndoItem:
    rows = conn.execute(f"SELECT {_COLS} FROM undos WHERE id = ?", (item_id,)).fetchall()
    return _item(rows[0])


def record(
    conn: apsw.Connection,
    *,
    batch: str,
    job_id: int,
    file_id: int | None,
    origin: bytes | None,
    keep_origin: bool,
    target: bytes,
    sha256: str | None,
    size: int | None,
    mtime_ns: int | None,
    now: str,
    done: tuple[UndoOutcome, str | None] | None = None,
) -> int:
    """Insert one file's undo (inside the caller's transaction): at RECORDED, or already
    DONE with `done` = (outcome, reason) when there is nothing to do or it cannot be done."""
    step, outcome, error, finished = UndoStep.RECORDED.value, None, None, None
    if done is not None:
        step, outcome, error, finished = UndoStep.DONE.value, done[0].value, done[1], now
    conn.execute(
        "INSERT INTO undos (batch, job_id, file_id, origin, keep_origin, target, sha256, size,"
        " mtime_ns, step, outcome, error, created_at, updated_at, finished_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            batch,
            job_id,
            file_id,
            origin,
            int(keep_origin),
            target,
            sha256,
            size,
            mtime_ns,
            step,
            outcome,
            error,
            now,
            now,
            finished,
        ),
    )
    return int(conn.last_insert_rowid())


def advance(conn: apsw.Connection, item_id: int, step: UndoStep, now: str, **fields: Any) -> None:
    """Move an item to `step`, setting the given columns (inside the caller's transaction)."""
    sets = ["step = ?", "updated_at = ?"]
    args: list[Any] = [step.value, now]
    for name, value in fields.items():
        sets.append(f"{name} = ?")
        args.append(value.value if isinstance(value, UndoOutcome) else value)
    if step is UndoStep.DONE:
        sets.append("finished_at = ?")
        args.append(now)
    conn.execute(f"UPDATE undos SET {', '.join(sets)} WHERE id = ?", (*args, item_id))


def unfinished(conn: apsw.Connection) -> list[UndoItem]:
    """Oldest first; sorted here so that SQLite reads the partial index of unfinished
    undos, not the whole table (as journal.unfinished)."""
    return sorted(
        (
            _item(r)
            for r in conn.execute(f"SELECT {_COLS} FROM undos WHERE step != 'done'").fetchall()
        ),
        key=lambda u: u.id,
    )


def batch_items(conn: apsw.Connection, batch: str) -> list[UndoItem]:
    return [
        _item(r)
        for r in conn.execute(
            f"SELECT {_COLS} FROM undos WHERE batch = ? ORDER BY id", (batch,)
        ).fetchall()
    ]


# -- what to undo -----------------------------------------------------------------------


def resolve_batches(conn: apsw.Connection, names: list[str]) -> tuple[list[str], list[str]]:
    """Batch ids for what the user typed: an exact id, else a prefix matching exactly one.
    Returns (found, problems)."""
    found: list[str] = []
    problems: list[str] = []
    for name in names:
        exact = conn.execute("SELECT 1 FROM jobs WHERE batch = ? LIMIT 1", (name,)).fetchall()
        if exact:
            found.append(name)
            continue
        like = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        matches = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT batch FROM jobs WHERE batch LIKE ? ESCAPE '\\' ORDER BY batch "
                "LIMIT 6",
                (like,),
            )
        ]
        if len(matches) == 1:
            found.append(matches[0])
        elif not matches:
            problems.append(f"{name}: no such batch (see `mediasortd history`)")
        else:
            problems.append(
                f"{name}: ambiguous, could be {', '.join(matches[:5])}"
                + (", ..." if len(matches) > 5 else "")
            )
    return found, problems


def _where(batches: list[str] | None, since: str | None) -> tuple[str, list[Any]]:
    if batches is not None:
        return f"j.batch IN ({', '.join('?' * len(batches))})", list(batches)
    return "j.finished_at >= ?", [since]


def undoable_jobs(conn: apsw.Connection, batches: list[str] | None, since: str | None) -> list[int]:
    """Finished jobs of these batches (or finished since `since`) that left something
    behind and are not undone yet, oldest first."""
    where, args = _where(batches, since)
    return [
        r[0]
        for r in conn.execute(
            f"SELECT j.id FROM jobs j WHERE {where} AND j.step = 'done' AND j.outcome IN "
            f"({', '.join('?' * len(UNDOABLE))}) AND NOT EXISTS (SELECT 1 FROM undos u WHERE "
            f"u.job_id = j.id AND {_UNDONE}) ORDER BY j.id",
            (*args, *UNDOABLE),
        )
    ]


def unfinished_jobs(conn: apsw.Connection, batches: list[str]) -> int:
    """Jobs of these batches still in progress (an interrupted import): not undone."""
    where, args = _where(batches, None)
    return int(
        _scalar(conn, f"SELECT count(*) FROM jobs j WHERE {where} AND j.step != 'done'", args)
    )


def undone_counts(conn: apsw.Connection, since: str | None = None) -> dict[str, int]:
    """Finished jobs (all time, or finished since an ISO UTC time) whose files were undone
    since, by the job's outcome: what `status` takes off the journal's counts."""
    sql = (
        "SELECT j.outcome, count(DISTINCT j.id) FROM undos u JOIN jobs j ON j.id = u.job_id"
        " WHERE u.step = 'done' AND u.outcome != 'kept'"
    )
    args: list[Any] = []
    if since:
        sql += " AND j.finished_at >= ?"
        args.append(since)
    return {str(o): int(n) for o, n in conn.execute(sql + " GROUP BY j.outcome", args)}


def already_undone(conn: apsw.Connection, batches: list[str] | None, since: str | None) -> int:
    where, args = _where(batches, since)
    return int(
        _scalar(
            conn,
            f"SELECT count(DISTINCT j.id) FROM jobs j JOIN undos u ON u.job_id = j.id WHERE "
            f"{where} AND u.step = 'done' AND u.outcome != 'kept'",
            args,
        )
    )
