"""`verify --repair`: bring catalog and library back into agreement (`adopt`, its sibling,
catalogues files in place the same way: app/adopt.py). Crash invariant: every change is
one move without overwriting or one committed row, so a crash in the middle leaves
nothing that a second run would not finish.

It takes the state lock and first finishes unfinished jobs (the same replay as `import`).
A move is renameat2 NOREPLACE, or copy + fsync + link + unlink to another filesystem.

`verify --repair` tells a user's edit from bit rot: rot is content that changed while
size and mtime stayed what they were when the file was catalogued. An edit updates the
row (the old hash goes to `file_history`) and the file stays; only rot is quarantined.
Rows from before the mtime was recorded: a file whose mtime is after the moment it was
catalogued has been written since (an edit), else changed bytes are rot.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from ..config import Config
from ..errors import ForeignCatalogError
from ..files.copy import hash_file
from ..store import catalog, db, journal, kept
from ..store.db import transaction
from . import report
from .adopt import Action, Say, catalogue, claim, move_aside, opened, shown


def repair(
    cfg: Config, log: Any, *, dry_run: bool = False, say: Say | None = None
) -> tuple[list[Action], report.Report]:
    """Replay, then fix what `verify --deep` finds; returns what was done and what is left.
    Each action is said (`say`) as it is done, and a changed file's verdict (edit or rot)
    before anything is done to it; `dry_run` says what would be done and does nothing (no
    replay, no lock, the catalog opened read-only)."""
    if dry_run:
        return _dry_run(cfg, say)
    # replay unfinished jobs, sweep staging (a catalog the library does not know is
    # what repair is for: it is rebuilt from the library below, see claim)
    _check_rebuildable(cfg)
    actions: list[Action] = []
    with opened(cfg, log) as (conn, reader):
        found = report.verify(cfg, conn, deep=True)
        for p in found.problems:
            rel = os.fsencode(p.path)
            if p.kind == "stray":
                action = catalogue(
                    cfg, conn, reader, rel, "a stray", keep_copy=False, keep_other=False
                )
            elif p.kind in ("hash_mismatch", "size_mismatch"):
                action = _changed(cfg, conn, rel, p.detail, say)
            elif p.kind == "missing":
                action = _missing(cfg, conn, p.path)
            elif p.kind == "kept_changed":  # another file saved over an album copy
                action = catalogue(
                    cfg,
                    conn,
                    reader,
                    rel,
                    "a kept copy whose bytes changed",
                    keep_copy=True,
                    keep_other=True,
                    was_kept=True,
                )
            elif p.kind == "kept_missing":
                with transaction(conn):
                    kept.forget(conn, p.path)
                action = Action("forgotten", shown(rel), f"{p.detail}: no longer recorded")
            else:
                continue
            actions.append(action)
            if say is not None:
                say(action)
        for action in claim(cfg, conn):
            actions.append(action)
            if say is not None:
                say(action)
        left = report.verify(cfg, conn, deep=False)
    for a in actions:
        log.info("repair.done", action=a.kind, path=a.path, detail=a.detail)
    return actions, left


def _missing(cfg: Config, conn: db.Connection, path: str) -> Action:
    """A catalogued file that is gone: its row moves to an intact album copy `adopt`
    recorded (the library still has the bytes: importing them again is a duplicate), else
    it is marked missing."""
    entry = catalog.by_path(conn, path)
    good = _good_copy(cfg, conn, entry) if entry is not None else None
    with transaction(conn):
        if entry is not None and good is not None:
            kept.promote(
                conn,
                entry.id,
                good,
                os.lstat(os.path.join(os.fsencode(cfg.library), os.fsencode(good))).st_mtime_ns,
            )
            return Action(
                "moved_to_copy",
                shown(os.fsencode(path)),
                f"gone; its row now stands for the intact copy {catalog.printable(good)}",
            )
        catalog.mark_missing(conn, path, journal.now())
    return Action(
        "marked_missing",
        shown(os.fsencode(path)),
        "the catalog row is kept, marked missing; importing the same bytes again files them anew",
    )


def _rot_or_edit(conn: db.Connection, entry: catalog.Entry, st: os.stat_result) -> tuple[bool, str]:
    """(is it bit rot, why): rot is content that changed while size and mtime did not."""
    mtime_ns, imported_at = catalog.filed_stamp(conn, entry.id)
    when = datetime.fromtimestamp(st.st_mtime).isoformat(sep=" ", timespec="seconds")
    if st.st_size != entry.size:
        return False, f"an edit: its size changed ({entry.size} -> {st.st_size} bytes)"
    if mtime_ns is not None:
        if st.st_mtime_ns == mtime_ns:
            return True, "bit rot: other bytes, same size and mtime as when catalogued"
        return False, f"an edit: modified {when}, after it was catalogued"
    filed = datetime.fromisoformat(imported_at).timestamp()
    if st.st_mtime > filed:
        return False, f"an edit: modified {when}, after it was filed ({imported_at} UTC)"
    return True, (
        f"bit rot: other bytes, same size, not modified since it was filed ({imported_at} UTC)"
    )


def _check_rebuildable(cfg: Config) -> None:
    """Repair rebuilds a new (empty) catalog from the library; a catalog with a history
    of its own that the library does not know is another library's: merging the two
    would take its rows for rot. It must be moved aside first."""
    if not cfg.catalog.exists():
        return
    conn = db.connect(cfg.catalog)
    try:
        marker = report.library_marker(os.fsencode(cfg.library))
        if marker is None or marker == db.catalog_id(conn) or db.is_empty(conn):
            return
    finally:
        conn.close()
    raise ForeignCatalogError(
        f"{cfg.catalog} is not this library's catalog (the library {cfg.library} was "
        f"filed by catalog {marker or '?'}): restore the right one from a backup, or move "
        "this one aside and run `mediasortd verify --repair` again to rebuild the catalog "
        "from the library"
    )


def _changed(cfg: Config, conn: db.Connection, rel: bytes, detail: str, say: Say | None) -> Action:
    """A catalogued file whose bytes differ: an edit is recorded where it stands, rot is
    moved to {rejected}/bitrot and its row marked missing. Said before it is done."""
    full = os.path.join(os.fsencode(cfg.library), rel)
    entry = catalog.by_path(conn, os.fsdecode(rel))
    assert entry is not None
    try:
        st = os.lstat(full)
    except FileNotFoundError:  # gone since verify looked
        with transaction(conn):
            catalog.mark_missing(conn, os.fsdecode(rel), journal.now())
        return Action(
            "marked_missing",
            shown(rel),
            "gone while being repaired; the row is kept, marked missing",
        )
    rot, why = _rot_or_edit(conn, entry, st)
    text = shown(rel)
    if rot:
        if say is not None:
            say(Action("rot", text, f"{detail}; {why}: moving it to {cfg.rejected / 'bitrot'}"))
        where = move_aside(full, cfg.rejected / "bitrot", rel, cfg.dir_mode)
        good = _good_copy(cfg, conn, entry)
        with transaction(conn):
            if good is not None:  # an album copy still has the bytes: the row moves to it
                kept.promote(
                    conn,
                    entry.id,
                    good,
                    os.lstat(os.path.join(os.fsencode(cfg.library), os.fsencode(good))).st_mtime_ns,
                )
            else:
                catalog.mark_missing(conn, os.fsdecode(rel), journal.now())
        return Action(
            "rot_quarantined",
            text,
            f"{detail}; {why}; moved to {shown(where)}; "
            + (
                f"its row now stands for the intact copy {catalog.printable(good)}"
                if good is not None
                else "its row is marked missing"
            ),
        )
    if say is not None:
        say(Action("edit", text, f"{why}: kept where it is, its catalog row updated"))
    hashed = hash_file(full)
    if hashed is None:
        return Action("skipped", text, "no longer a readable regular file")
    sha256, size = hashed
    now = journal.now()
    with transaction(conn):
        other = catalog.by_sha256(conn, sha256)
        if other is not None and other.id != entry.id:  # edited into another file's bytes
            twin = catalog.printable(other.path)
            catalog.remember(conn, entry, now, f"edited into the same bytes as {twin}")
            catalog.delete(conn, entry.id)
            kept.record(
                conn,
                path=os.fsdecode(rel),
                kind="copy",
                file_id=other.id,
                size=size,
                mtime_ns=os.lstat(full).st_mtime_ns,
                reason=f"same content as {twin}",
                when=now,
            )
            return Action(
                "edited",
                text,
                f"{why}; now the same bytes as {twin}: recorded "
                "as a copy of it (the old hash kept in file_history)",
            )
        catalog.record_edit(
            conn,
            entry,
            sha256=sha256,
            size=size,
            mtime_ns=os.lstat(full).st_mtime_ns,
            when=now,
            reason=why,
        )
    return Action(
        "edited",
        text,
        f"{why}; its row now has sha256 {sha256} ({size} bytes); "
        f"the old sha256 {entry.sha256} is kept in file_history",
    )


def _good_copy(cfg: Config, conn: db.Connection, entry: catalog.Entry) -> str | None:
    """A kept copy of the row's bytes that still has them intact, if any."""
    for path in kept.copies_of(conn, entry.id):
        if hash_file(os.path.join(os.fsencode(cfg.library), os.fsencode(path))) == (
            entry.sha256,
            entry.size,
        ):
            return path
    return None


def _dry_run(cfg: Config, say: Say | None) -> tuple[list[Action], report.Report]:
    """What repair would do, from a read-only look: nothing is changed or locked."""
    conn = db.connect(cfg.catalog, readonly=True)
    actions: list[Action] = []
    try:
        found = report.verify(cfg, conn, deep=True)
        for p in found.problems:
            rel = os.fsencode(p.path)
            text = shown(rel)
            try:
                st = os.lstat(os.path.join(os.fsencode(cfg.library), rel))
            except OSError:
                st = None
            entry = catalog.by_path(conn, p.path)
            if p.kind in ("hash_mismatch", "size_mismatch") and st and entry:
                rot, why = _rot_or_edit(conn, entry, st)
                action = Action(
                    "would quarantine" if rot else "would update",
                    text,
                    f"{p.detail}; {why}: "
                    + (
                        f"would move it to {cfg.rejected / 'bitrot'}"
                        if rot
                        else "would keep it where it is and update its row"
                    ),
                )
            elif p.kind == "missing" and entry and (good := _good_copy(cfg, conn, entry)):
                action = Action(
                    "would fix",
                    text,
                    f"{p.kind}: {p.detail}; would move its "
                    f"row to the intact copy {catalog.printable(good)}",
                )
            elif p.kind == "unreadable":  # repair cannot look either
                action = Action("would leave", text, f"{p.kind}: {p.detail}")
            else:
                action = Action("would fix", text, f"{p.kind}: {p.detail}")
            actions.append(action)
            if say is not None:
                say(action)
        return actions, found
    finally:
        conn.close()
