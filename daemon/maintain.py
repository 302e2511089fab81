"""`verify --repair` and `adopt`: bring catalog and library back into agreement.

Both take the state lock and first finish unfinished jobs (the same replay as `import`).
Every change is one move without overwriting (renameat2 NOREPLACE) or one committed
row, so a crash in the middle leaves nothing that a second run would not finish.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import catalog, db, journal, oneshot, report, service
from .config import Config
from .db import transaction
from .errors import MediasortError
from .fsops import fsync_dir, hash_file, make_dirs, rename_noreplace
from .layout import numbered_name
from .metadata import Reader
from .model import NotMedia


@dataclass(frozen=True)
class Action:
    kind: str  # catalogued | quarantined | rejected | marked_missing | rot_quarantined
    path: str
    detail: str


def _move_aside(src: bytes, root: Path, rel: bytes, mode: int) -> bytes:
    """Move `src` to root/rel (numbered if taken), never overwriting; returns where."""
    dest = os.path.join(os.fsencode(root), rel)
    make_dirs(os.path.dirname(dest), mode)
    n = 0
    while not rename_noreplace(src, candidate := os.path.join(
            os.path.dirname(dest), numbered_name(os.path.basename(dest), n))):
        n += 1
    fsync_dir(os.path.dirname(candidate))
    fsync_dir(os.path.dirname(src))
    return candidate


def _catalogue(cfg: Config, conn: Any, reader: Reader, rel: bytes,
               source_note: str) -> Action:
    """Catalogue one library file where it stands (or move it aside when it cannot be)."""
    library = os.fsencode(cfg.library)
    full = os.path.join(library, rel)
    shown = os.fsdecode(rel)
    hashed = hash_file(full)
    if hashed is None:
        return Action("skipped", shown, "not a readable regular file")
    sha256, size = hashed
    st = os.lstat(full)
    info = NotMedia("an empty file") if size == 0 else reader.describe(
        full, os.fsdecode(os.path.basename(rel)), st.st_mtime_ns)
    with transaction(conn):
        existing = catalog.by_sha256(conn, sha256)
        if existing is not None and existing.missing_since:
            catalog.delete(conn, existing.id)  # the lost file came back: catalogue it anew
            existing = None
        if existing is None and not isinstance(info, NotMedia):
            catalog.insert(conn, sha256=sha256, size=size, path=shown, info=info,
                           original_name=os.fsdecode(os.path.basename(rel)), source=full,
                           imported_at=journal.now(), job_id=None)
            return Action("catalogued", shown, f"{source_note}; date from {info.date_source}")
    if existing is not None:
        where = _move_aside(full, cfg.duplicates, rel, cfg.dir_mode)
        return Action("quarantined", shown, f"same content as {existing.path}; moved to "
                      f"{os.fsdecode(where)}")
    assert isinstance(info, NotMedia)
    where = _move_aside(full, cfg.rejected, rel, cfg.dir_mode)
    return Action("rejected", shown, f"{info.reason}; moved to {os.fsdecode(where)}")


def repair(cfg: Config, log: Any) -> tuple[list[Action], report.Report]:
    """Replay, then fix what `verify --deep` finds; returns what was done and what is left."""
    oneshot.import_(cfg, [], move=False, log=log)  # replay unfinished jobs, sweep staging
    lock = service.StateLock(cfg)
    conn = db.connect(cfg.catalog)
    reader = Reader(timezone=cfg.timezone)
    actions: list[Action] = []
    try:
        found = report.verify(cfg, conn, deep=True)
        for p in found.problems:
            if p.kind == "stray":
                actions.append(_catalogue(cfg, conn, reader, os.fsencode(p.path), "a stray"))
            elif p.kind in ("hash_mismatch", "size_mismatch"):
                full = os.path.join(os.fsencode(cfg.library), os.fsencode(p.path))
                where = _move_aside(full, cfg.rejected / "bitrot", os.fsencode(p.path),
                                    cfg.dir_mode)
                _mark_missing(conn, p.path)
                actions.append(Action("rot_quarantined", p.path, f"{p.detail}; moved to "
                                      f"{os.fsdecode(where)}; its row is marked missing"))
            elif p.kind == "missing":
                _mark_missing(conn, p.path)
                actions.append(Action("marked_missing", p.path, "the catalog row is kept, "
                                      "marked missing; importing the same bytes again "
                                      "files them anew"))
        left = report.verify(cfg, conn, deep=False)
    finally:
        reader.close()
        conn.close()
        lock.release()
    for a in actions:
        log.info("repair.done", action=a.kind, path=a.path, detail=a.detail)
    return actions, left


def _mark_missing(conn: Any, path: str) -> None:
    with transaction(conn):
        conn.execute("UPDATE files SET missing_since = ? WHERE path = ?", (journal.now(), path))


def adopt(cfg: Config, path: str, log: Any,
          on_progress: Callable[[int, int], None] | None = None) -> list[Action]:
    """Catalogue an existing date-sorted library (or a folder of it) in place."""
    top = os.path.realpath(path)
    library = os.path.realpath(cfg.library)
    if top != library and not top.startswith(library + "/"):
        raise MediasortError(f"{path}: adopt catalogues files in place, so PATH must be the "
                             f"library ({cfg.library}) or a folder in it; use `import` to "
                             "copy files from elsewhere")
    oneshot.import_(cfg, [], move=False, log=log)  # replay first, and create the catalog
    lock = service.StateLock(cfg)
    conn = db.connect(cfg.catalog)
    reader = Reader(timezone=cfg.timezone)
    actions: list[Action] = []
    try:
        prefix = os.fsencode(os.path.relpath(top, library)) if top != library else b""
        rels = [r for r in report.library_files(os.fsencode(library))
                if not prefix or r == prefix or r.startswith(prefix + b"/")]
        for i, rel in enumerate(sorted(rels)):
            if catalog.by_path(conn, os.fsdecode(rel)) is None:
                actions.append(_catalogue(cfg, conn, reader, rel, "adopted"))
            if on_progress is not None:
                on_progress(i + 1, len(rels))
    finally:
        reader.close()
        conn.close()
        lock.release()
    log.info("adopt.finished", path=path, **{k: sum(a.kind == k for a in actions)
                                              for k in ("catalogued", "quarantined", "rejected")})
    return actions
