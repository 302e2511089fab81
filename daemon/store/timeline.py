"""The journal as a timeline for people (`history`): newest first, one row per job
and one per undone file, read through indexes so a million-job journal answers in
milliseconds. Read-only: no crash invariant.
"""

from __future__ import annotations

from typing import Any

import apsw

from .query import as_text

HISTORY_OUTCOMES = (
    "filed",
    "duplicate",
    "rejected",
    "failed",
    "vanished",
    "pending",
    "undone",
    "not-undone",
)


def history(
    conn: apsw.Connection,
    *,
    since: str | None = None,
    outcomes: list[str] | None = None,
    batches: list[str] | None = None,
    limit: int | None = 100,
) -> list[dict[str, Any]]:
    """The journal, newest first: one row per job (what happened to a file) and one per
    undone file. `outcome` is one of HISTORY_OUTCOMES.

    Finished jobs, unfinished ones and undos are read apart, each newest first through
    an index and cut at `limit`, then merged: a million-job journal answers in
    milliseconds (one query over their union could use no index)."""
    rows: list[tuple[Any, ...]] = []
    cap = f" LIMIT {int(limit)}" if limit else ""
    job_outcomes = [o for o in (outcomes or []) if o not in ("pending", "undone", "not-undone")]

    def jobs(where: str, args: tuple[Any, ...], order: str) -> None:
        more, more_args = _and_filters(
            ("coalesce(j.finished_at, j.updated_at)", since), ("j.batch", batches)
        )
        rows.extend(
            conn.execute(
                f"{_HISTORY_JOBS} WHERE {where}{more} ORDER BY {order}{cap}", (*args, *more_args)
            )
        )

    # a done job always has finished_at (the tallies' triggers need it)
    newest = "j.finished_at DESC, j.id DESC"
    if not outcomes:
        jobs("j.step = 'done'", (), newest)
    for outcome in job_outcomes:  # one ordered range of (outcome, finished_at) each
        jobs("j.outcome = ? AND j.step = 'done'", (outcome,), newest)
    if not outcomes or "pending" in outcomes:
        jobs("j.step != 'done'", (), "j.updated_at DESC, j.id DESC")
    if not outcomes or len(job_outcomes) < len(outcomes):
        more, args = _and_filters(("at", since), ("outcome", outcomes), ("batch", batches))
        rows.extend(
            conn.execute(
                f"SELECT * FROM ({_HISTORY_UNDOS}) WHERE 1{more} ORDER BY at DESC, job DESC{cap}",
                tuple(args),
            )
        )
    rows.sort(key=lambda r: (r[11], r[0], r[1]), reverse=True)  # at, kind, job: newest first
    if limit:
        rows = rows[: int(limit)]
    keys = (
        "kind",
        "job",
        "undo",
        "batch",
        "outcome",
        "step",
        "source",
        "dest",
        "reason",
        "sha256",
        "size",
        "when",
        "action",
    )
    return [dict(zip(keys, map(as_text, row), strict=True)) for row in rows]


def _and_filters(*filters: tuple[str, str | list[str] | None]) -> tuple[str, list[Any]]:
    """' AND column >= ?' for a value, ' AND column IN (?, ...)' for a list; None and
    empty lists add nothing. Returns the SQL and its arguments."""
    sql, args = "", []
    for column, value in filters:
        if isinstance(value, str):
            sql += f" AND {column} >= ?"
            args.append(value)
        elif value:
            sql += f" AND {column} IN ({', '.join('?' * len(value))})"
            args += value
    return sql, args


_HISTORY_JOBS = """
    SELECT 'ingest', j.id, NULL, j.batch,
           CASE WHEN j.step != 'done' THEN 'pending' ELSE j.outcome END,
           j.step, j.source, j.dest, j.error, j.sha256, j.bytes,
           coalesce(j.finished_at, j.updated_at), NULL
      FROM jobs j"""
_HISTORY_UNDOS = """
    SELECT 'undo' AS kind, u.job_id AS job, u.id AS undo, u.batch AS batch,
           CASE WHEN u.step != 'done' THEN 'pending' WHEN u.outcome = 'kept' THEN 'not-undone'
                ELSE 'undone' END AS outcome,
           u.step, j.source, u.dest, u.error, u.sha256, u.size,
           coalesce(u.finished_at, u.updated_at) AS at, u.outcome
      FROM undos u JOIN jobs j ON j.id = u.job_id"""
