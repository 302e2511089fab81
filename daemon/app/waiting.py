"""Why files wait in the inbox, for `status`: how many the daemon would take, how many were
handled and left in place on purpose, and the oldest waiting one with its reason (the
daemon's own word when it published one, else worked out from the journal and the disk).
Read-only.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from ..config import Config
from ..files.paths import identity, stat_beneath
from ..inbox.scan import open_for_writing, scan
from ..store import db, query, times

INBOX_SCAN_LIMIT = 5000  # status looks at this many inbox files at most


def inbox_waiting(
    cfg: Config,
    conn: db.Connection,
    holder: dict[str, Any] | None,
    held: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Files in the inbox the daemon would take (partial and hidden names aside): how many
    wait, how many were handled and left in place on purpose, and the oldest waiting one
    (by ctime: when it arrived, even if moved in with an old mtime) and why it waits."""
    waiting: list[tuple[float, bytes, os.stat_result, dict[str, Any] | None]] = []
    left = stuck = 0
    stuck_why = ""
    complete = True
    paths = (p for inbox in cfg.inboxes for p in scan(os.fsencode(inbox)))
    for n, path in enumerate(paths):
        if n >= INBOX_SCAN_LIMIT:
            complete = False
            break
        try:
            root = cfg.inbox_of(path)  # its folders looked at beneath it: past PATH_MAX too
            st = stat_beneath(os.fsencode(root) if root is not None else None, path)
        except OSError:
            continue
        job = query.latest_job_for(conn, path)
        if (
            job
            and job["step"] == "done"
            and job["move"]
            and job["outcome"] in ("duplicate", "rejected")
            and (job["ino"], job["size"], job["mtime_ns"])
            == ((i := identity(st)).ino, i.size, i.mtime_ns)
        ):
            left += 1  # a kept duplicate, or a reject that could not be moved
            continue
        if (
            job
            and job["step"] == "done"
            and job["move"]
            and job["outcome"] == "filed"
            and (job["ino"], job["size"], job["mtime_ns"])
            == ((i := identity(st)).ino, i.size, i.mtime_ns)
        ):
            stuck += 1  # filed, but the source could not be removed: a problem
            stuck_why = stuck_why or (job["reason"] or "")
            continue
        waiting.append((st.st_ctime, path, st, job))
    out: dict[str, Any] = {
        "inbox": str(cfg.inbox),
        "files": len(waiting),
        "left_in_place": left,
        "filed_left_in_place": stuck,
        "filed_left_reason": stuck_why,
        "complete": complete,
        "oldest": None,
    }
    if waiting:
        ctime, path, st, job = min(waiting, key=lambda w: w[0])
        out["oldest"] = {
            "path": path.decode("utf-8", "backslashreplace"),
            "since": times.utc_iso(datetime.fromtimestamp(ctime, UTC)),
            "waiting_seconds": max(0.0, time.time() - ctime),
            "why": (held or {}).get(os.fsdecode(path)) or _why_waiting(cfg, st, job, holder),
        }
    return out


def _why_waiting(
    cfg: Config, st: os.stat_result, job: dict[str, Any] | None, holder: dict[str, Any] | None
) -> str:
    if job and job["step"] != "done":
        if job["reason"]:
            return (
                f"job {job['job']} is retrying at step {job['step']} (attempt "
                f"{job['attempts']}): {job['reason']}"
            )
        return f"job {job['job']} is in progress (step {job['step']})"
    if holder is None or holder["command"] != "run":
        return "the daemon is not running" + (
            f" (an {holder['command']} is, pid {holder['pid']})" if holder else ""
        )
    quiet = time.time() - st.st_mtime
    if quiet < cfg.settle_seconds:
        return (
            f"still changing: modified {quiet:.1f} s ago; taken once unchanged for "
            f"{cfg.settle_seconds:g} s"
        )
    if open_for_writing({(st.st_dev, st.st_ino)}):
        return "a process has it open for writing; taken once it is closed"
    if job and job["outcome"] == "failed":
        return (
            f"failed at {times.local_time(job['when'])}: {job['reason']}; tried again "
            f"at the next rescan (every {cfg.rescan_seconds:g} s) or restart"
        )
    return "queued: the daemon has not reached it yet"
