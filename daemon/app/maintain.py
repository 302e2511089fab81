"""`verify --repair` and `adopt`: bring catalog and library back into agreement.

Both take the state lock and first finish unfinished jobs (the same replay as `import`).
Every change is one move without overwriting (renameat2 NOREPLACE, or copy + fsync +
link + unlink to another filesystem) or one committed row, so a crash in the middle
leaves nothing that a second run would not finish.

`adopt` never moves or deletes anything (unless asked to quarantine album copies):
photos and videos become catalog rows where they stand, sidecars are recorded as their
photo's companions, and what cannot be a row of its own (a second copy of catalogued
bytes, a file that is not a photo or video) is recorded in `kept_files` and listed.

`verify --repair` tells a user's edit from bit rot: rot is content that changed while
size and mtime stayed what they were when the file was catalogued. An edit updates the
row (the old hash goes to `file_history`) and the file stays; only rot is quarantined.
Rows from before the mtime was recorded: a file whose mtime is after the moment it was
catalogued has been written since (an edit), else changed bytes are rot.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import Config
from ..engine.pairing import as_companion
from ..errors import ForeignCatalogError, MediasortError
from ..files.copy import hash_file
from ..files.dirs import fsync_dir, make_dirs
from ..files.moves import move_noreplace
from ..media.metadata import Reader
from ..model import MediaInfo, NotMedia
from ..rules.companions import Companion, companion_of, matches_stem
from ..rules.layout import numbered_name
from ..store import catalog, db, journal
from ..store.db import transaction
from . import oneshot, report, runtime
from .lock import StateLock


@dataclass(frozen=True)
class Action:
    # catalogued | companion | copy | left | quarantined | rejected | skipped (adopt, strays)
    # | edited | rot_quarantined | marked_missing | moved_to_copy | forgotten (repair);
    # "would ..." in a dry run
    kind: str
    path: str  # relative to the library, as text (bytes that are not UTF-8 escaped)
    detail: str


Say = Callable[[Action], None]


def shown(rel: bytes) -> str:
    return rel.decode("utf-8", "backslashreplace")


def _move_aside(src: bytes, root: Path, rel: bytes, mode: int) -> bytes:
    """Move `src` to root/rel (numbered if taken), never overwriting, to another
    filesystem too; returns where."""
    dest = os.path.join(os.fsencode(root), rel)
    make_dirs(os.path.dirname(dest), mode)
    n = 0
    while not move_noreplace(src, candidate := os.path.join(
            os.path.dirname(dest), numbered_name(os.path.basename(dest), n))):
        n += 1
    fsync_dir(os.path.dirname(candidate))
    fsync_dir(os.path.dirname(src))
    return candidate


def _describe(cfg: Config, conn: Any, reader: Reader, rel: bytes,
              st: os.stat_result) -> MediaInfo | NotMedia:
    """What a library file is: a sidecar of a catalogued photo beside it is that photo's
    companion (dated by it); else what ExifTool says."""
    name = os.path.basename(rel)
    companion = companion_of(name)
    if companion is not None and companion.kind == "sidecar":
        partner = _partner(cfg, conn, rel, companion)
        if partner is not None:
            return as_companion(partner, companion, "sidecar")
    if st.st_size == 0:
        return NotMedia("an empty file")
    return reader.describe(os.path.join(os.fsencode(cfg.library), rel), shown(name),
                           st.st_mtime_ns)


def _partner(cfg: Config, conn: Any, rel: bytes, companion: Companion) -> catalog.Entry | None:
    folder = os.path.dirname(rel)
    names = list(companion.names)
    if companion.stem is not None:
        try:
            names += sorted(n for n in os.listdir(os.path.join(os.fsencode(cfg.library),
                                                               folder))
                            if matches_stem(companion, n))
        except OSError:
            pass
    for name in names:
        entry = catalog.by_path(conn, os.fsdecode(os.path.join(folder, name)))
        if entry is not None and not entry.missing_since:
            return entry
    return None


def _catalogue(cfg: Config, conn: Any, reader: Reader, rel: bytes, note: str, *,
               keep_copy: bool, keep_other: bool, was_kept: bool = False) -> Action:
    """Catalogue one library file where it stands. What cannot be a row of its own is
    recorded as kept (adopt) or moved aside (repair's strays): the same bytes as a row
    (`keep_copy`, else to quarantine), not a photo or video (`keep_other`, else to
    rejected). `was_kept`: its kept record is replaced in the same transaction."""
    full = os.path.join(os.fsencode(cfg.library), rel)
    path, text = os.fsdecode(rel), shown(rel)
    try:
        st = os.lstat(full)
    except OSError as e:
        return Action("skipped", text, f"cannot be read: {e.strerror}")
    if not stat.S_ISREG(st.st_mode):  # a link (never followed), a FIFO, a socket, ...
        return _not_a_file(cfg, conn, full, rel, st, keep_other=keep_other, was_kept=was_kept)
    hashed = hash_file(full)
    if hashed is None:
        return Action("skipped", text, "not a readable regular file; left as it is")
    sha256, size = hashed
    info = _describe(cfg, conn, reader, rel, st)
    with transaction(conn):
        if was_kept:
            catalog.forget_kept(conn, path)
        existing = catalog.by_sha256(conn, sha256)
        if existing is not None and existing.missing_since:
            catalog.delete(conn, existing.id)  # the lost file came back: catalogue it anew
            existing = None
        if existing is None and isinstance(info, MediaInfo):
            catalog.insert(conn, sha256=sha256, size=size, path=path, info=info,
                           original_name=shown(os.path.basename(rel)), source=full,
                           imported_at=journal.now(), job_id=None, mtime_ns=st.st_mtime_ns)
            if info.date_source.startswith("partner:"):
                return Action("companion", text, f"{note}; a sidecar of "
                              f"{info.date_source.removeprefix('partner:')}")
            return Action("catalogued", text, f"{note}; date from {info.date_source}")
        if keep_copy if existing is not None else keep_other:
            reason = (f"same content as {catalog.printable(existing.path)}"
                      if existing is not None else
                      info.reason if isinstance(info, NotMedia) else "not catalogued")
            catalog.keep(conn, path=path, kind="copy" if existing else "other",
                         file_id=existing.id if existing else None, size=size,
                         mtime_ns=st.st_mtime_ns, reason=reason, when=journal.now())
            return Action("copy" if existing else "left", text, f"{reason}; left where it "
                          "is" + ("" if existing else " and listed"))
    if existing is not None:
        where = _move_aside(full, cfg.duplicates, rel, cfg.dir_mode)
        return Action("quarantined", text, "same content as "
                      f"{catalog.printable(existing.path)}; moved to {shown(where)}")
    assert isinstance(info, NotMedia)
    where = _move_aside(full, cfg.rejected, rel, cfg.dir_mode)
    return Action("rejected", text, f"{info.reason}; moved to {shown(where)}")


def _not_a_file(cfg: Config, conn: Any, full: bytes, rel: bytes, st: os.stat_result, *,
                keep_other: bool, was_kept: bool = False) -> Action:
    """A library entry that is no regular file: recorded as kept where it stands (adopt),
    or moved as it is to rejected (repair's strays, like any other non-media)."""
    text = shown(rel)
    if stat.S_ISLNK(st.st_mode):
        try:
            what = f"a symbolic link to {shown(os.readlink(full))}"
        except OSError:
            what = "a symbolic link"
    else:
        what = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
    if keep_other:
        with transaction(conn):
            if was_kept:
                catalog.forget_kept(conn, os.fsdecode(rel))
            catalog.keep(conn, path=os.fsdecode(rel), kind="other", file_id=None,
                         size=st.st_size,
                         mtime_ns=st.st_mtime_ns, reason=f"{what} (never followed)",
                         when=journal.now())
        return Action("left", text, f"{what} (never followed); left where it is and listed")
    if not (stat.S_ISLNK(st.st_mode) or stat.S_ISFIFO(st.st_mode)
            or stat.S_ISSOCK(st.st_mode)):  # a device cannot be moved to another filesystem
        return Action("skipped", text, f"{what}; left as it is")
    where = _move_aside(full, cfg.rejected, rel, cfg.dir_mode)
    return Action("rejected", text, f"{what}; moved as it is to {shown(where)}")


# -- verify --repair ---------------------------------------------------------------------

def repair(cfg: Config, log: Any, *, dry_run: bool = False,
           say: Say | None = None) -> tuple[list[Action], report.Report]:
    """Replay, then fix what `verify --deep` finds; returns what was done and what is left.
    Each action is said (`say`) as it is done, and a changed file's verdict (edit or rot)
    before anything is done to it; `dry_run` says what would be done and does nothing (no
    replay, no lock, the catalog opened read-only)."""
    if dry_run:
        return _dry_run(cfg, say)
    # replay unfinished jobs, sweep staging (a catalog the library does not know is
    # what repair is for: it is rebuilt from the library below, see _claim)
    _check_rebuildable(cfg)
    oneshot.import_(cfg, [], move=False, log=log, check_catalog=False)
    lock = StateLock(cfg)
    conn = db.connect(cfg.catalog)
    reader = Reader(timezone=cfg.timezone)
    actions: list[Action] = []
    try:
        found = report.verify(cfg, conn, deep=True)
        for p in found.problems:
            rel = os.fsencode(p.path)
            if p.kind == "stray":
                action = _catalogue(cfg, conn, reader, rel, "a stray", keep_copy=False,
                                    keep_other=False)
            elif p.kind in ("hash_mismatch", "size_mismatch"):
                action = _changed(cfg, conn, rel, p.detail, say)
            elif p.kind == "missing":
                action = _missing(cfg, conn, p.path)
            elif p.kind == "kept_changed":  # another file saved over an album copy
                action = _catalogue(cfg, conn, reader, rel, "a kept copy whose bytes changed",
                                    keep_copy=True, keep_other=True, was_kept=True)
            elif p.kind == "kept_missing":
                with transaction(conn):
                    catalog.forget_kept(conn, p.path)
                action = Action("forgotten", shown(rel), f"{p.detail}: no longer recorded")
            else:
                continue
            actions.append(action)
            if say is not None:
                say(action)
        for action in _claim(cfg, conn):
            actions.append(action)
            if say is not None:
                say(action)
        left = report.verify(cfg, conn, deep=False)
    finally:
        reader.close()
        conn.close()
        lock.release()
    for a in actions:
        log.info("repair.done", action=a.kind, path=a.path, detail=a.detail)
    return actions, left


def _missing(cfg: Config, conn: Any, path: str) -> Action:
    """A catalogued file that is gone: its row moves to an intact album copy `adopt`
    recorded (the library still has the bytes: importing them again is a duplicate), else
    it is marked missing."""
    entry = catalog.by_path(conn, path)
    good = _good_copy(cfg, conn, entry) if entry is not None else None
    with transaction(conn):
        if entry is not None and good is not None:
            catalog.promote(conn, entry.id, good, os.lstat(os.path.join(
                os.fsencode(cfg.library), os.fsencode(good))).st_mtime_ns)
            return Action("moved_to_copy", shown(os.fsencode(path)), "gone; its row now "
                          f"stands for the intact copy {catalog.printable(good)}")
        catalog.mark_missing(conn, path, journal.now())
    return Action("marked_missing", shown(os.fsencode(path)), "the catalog row is kept, "
                  "marked missing; importing the same bytes again files them anew")


def _rot_or_edit(conn: Any, entry: catalog.Entry, st: os.stat_result) -> tuple[bool, str]:
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
    return True, ("bit rot: other bytes, same size, not modified since it was filed "
                  f"({imported_at} UTC)")


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
        "from the library")


def _claim(cfg: Config, conn: Any) -> list[Action]:
    """The catalog now knows the library's files (every stray catalogued where it
    stands): the library's marker names this catalog, so the daemon starts again."""
    previous = report.library_marker(os.fsencode(cfg.library))
    ours = db.catalog_id(conn)
    if previous == ours:
        return []
    runtime.claim_library(cfg, conn)
    return [Action("catalog_claimed", str(cfg.library), f"the library's marker now names "
                   f"this catalog ({ours}; before: {previous or 'none'})")]



def _changed(cfg: Config, conn: Any, rel: bytes, detail: str, say: Say | None) -> Action:
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
        return Action("marked_missing", shown(rel), "gone while being repaired; the row is "
                      "kept, marked missing")
    rot, why = _rot_or_edit(conn, entry, st)
    text = shown(rel)
    if rot:
        if say is not None:
            say(Action("rot", text, f"{detail}; {why}: moving it to "
                       f"{cfg.rejected / 'bitrot'}"))
        where = _move_aside(full, cfg.rejected / "bitrot", rel, cfg.dir_mode)
        good = _good_copy(cfg, conn, entry)
        with transaction(conn):
            if good is not None:  # an album copy still has the bytes: the row moves to it
                catalog.promote(conn, entry.id, good, os.lstat(os.path.join(
                    os.fsencode(cfg.library), os.fsencode(good))).st_mtime_ns)
            else:
                catalog.mark_missing(conn, os.fsdecode(rel), journal.now())
        return Action("rot_quarantined", text, f"{detail}; {why}; moved to {shown(where)}; "
                      + (f"its row now stands for the intact copy {catalog.printable(good)}"
                         if good is not None else "its row is marked missing"))
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
            catalog.keep(conn, path=os.fsdecode(rel), kind="copy", file_id=other.id,
                         size=size, mtime_ns=os.lstat(full).st_mtime_ns,
                         reason=f"same content as {twin}", when=now)
            return Action("edited", text, f"{why}; now the same bytes as {twin}: recorded "
                          "as a copy of it (the old hash kept in file_history)")
        catalog.record_edit(conn, entry, sha256=sha256, size=size,
                            mtime_ns=os.lstat(full).st_mtime_ns, when=now, reason=why)
    return Action("edited", text, f"{why}; its row now has sha256 {sha256} ({size} bytes); "
                  f"the old sha256 {entry.sha256} is kept in file_history")


def _good_copy(cfg: Config, conn: Any, entry: catalog.Entry) -> str | None:
    """A kept copy of the row's bytes that still has them intact, if any."""
    for path in catalog.copies_of(conn, entry.id):
        if hash_file(os.path.join(os.fsencode(cfg.library), os.fsencode(path))) == (
                entry.sha256, entry.size):
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
                action = Action("would quarantine" if rot else "would update", text,
                                f"{p.detail}; {why}: " + (
                                    f"would move it to {cfg.rejected / 'bitrot'}" if rot else
                                    "would keep it where it is and update its row"))
            elif p.kind == "missing" and entry and (good := _good_copy(cfg, conn, entry)):
                action = Action("would fix", text, f"{p.kind}: {p.detail}; would move its "
                                f"row to the intact copy {catalog.printable(good)}")
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


# -- adopt -------------------------------------------------------------------------------

def adopt(cfg: Config, path: str, log: Any,
          on_progress: Callable[[int, int], None] | None = None, *,
          quarantine_copies: bool = False) -> list[Action]:
    """Catalogue an existing date-sorted library (or a folder of it) in place. Nothing is
    moved or deleted, except album copies when `quarantine_copies`."""
    top = os.path.realpath(os.fsencode(path))
    library = os.path.realpath(os.fsencode(cfg.library))
    if top != library and not top.startswith(library + b"/"):
        raise MediasortError(f"{path}: adopt catalogues files in place, so PATH must be the "
                             f"library ({cfg.library}) or a folder in it; use `import` to "
                             "copy files from elsewhere")
    # replay first, and create the catalog
    oneshot.import_(cfg, [], move=False, log=log, check_catalog=False)
    lock = StateLock(cfg)
    conn = db.connect(cfg.catalog)
    reader = Reader(timezone=cfg.timezone)
    actions: list[Action] = []
    try:
        prefix = os.path.relpath(top, library) if top != library else b""
        rels = [r for r in report.library_files(library)
                if not prefix or r == prefix or r.startswith(prefix + b"/")]
        # photos and videos first: a sidecar is recorded as the companion of its photo
        rels.sort(key=lambda r: (_is_sidecar(r), r))
        for i, rel in enumerate(rels):
            p = os.fsdecode(rel)
            if catalog.by_path(conn, p) is None and not catalog.is_kept(conn, p):
                actions.append(_catalogue(cfg, conn, reader, rel, "adopted",
                                          keep_copy=not quarantine_copies, keep_other=True))
            if on_progress is not None:
                on_progress(i + 1, len(rels))
        _claim(cfg, conn)
    finally:
        reader.close()
        conn.close()
        lock.release()
    log.info("adopt.finished", path=shown(os.fsencode(path)),
             **{k: sum(a.kind == k for a in actions) for k in ADOPT_KINDS})
    return actions


ADOPT_KINDS = ("catalogued", "companion", "copy", "left", "quarantined", "skipped")


def _is_sidecar(rel: bytes) -> bool:
    companion = companion_of(os.path.basename(rel))
    return companion is not None and companion.kind == "sidecar"
