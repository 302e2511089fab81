"""`adopt`, and cataloguing one library file where it stands (adopt's files, and the
strays and changed album copies `verify --repair` finds). Crash invariant: each file is
one committed row, or one move without overwriting; a second run finishes the rest.

`adopt` never moves or deletes anything (unless asked to quarantine album copies):
photos and videos become catalog rows where they stand, sidecars are recorded as their
photo's companions, and what cannot be a row of its own (a second copy of catalogued
bytes, a file that is not a photo or video) is recorded in `kept_files` and listed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..engine.pairing import as_companion
from ..errors import MediasortError
from ..files.copy import hash_file
from ..files.dirs import fsync_dir, make_dirs
from ..files.moves import move_noreplace
from ..media.metadata import Reader
from ..model import MediaInfo, NotMedia
from ..rules.companions import Companion, companion_of, matches_stem
from ..rules.layout import numbered_name
from ..store import catalog, db, journal, kept
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


@contextlib.contextmanager
def opened(cfg: Config, log: Any) -> Iterator[tuple[db.Connection, Reader]]:
    """Replay first (the same as `import`; it creates the catalog), then hold the state
    lock, a catalog connection and a metadata reader while the body runs."""
    oneshot.import_(cfg, [], move=False, log=log, check_catalog=False)
    lock = StateLock(cfg)
    try:
        conn = db.connect(cfg.catalog)
        try:
            reader = Reader(timezone=cfg.timezone)
            try:
                yield conn, reader
            finally:
                reader.close()
        finally:
            conn.close()
    finally:
        lock.release()


def claim(cfg: Config, conn: db.Connection) -> list[Action]:
    """The catalog now knows the library's files (every stray catalogued where it
    stands): the library's marker names this catalog, so the daemon starts again."""
    previous = report.library_marker(os.fsencode(cfg.library))
    ours = db.catalog_id(conn)
    if previous == ours:
        return []
    runtime.claim_library(cfg, conn)
    return [
        Action(
            "catalog_claimed",
            str(cfg.library),
            f"the library's marker now names this catalog ({ours}; before: {previous or 'none'})",
        )
    ]


def move_aside(src: bytes, root: Path, rel: bytes, mode: int) -> bytes:
    """Move `src` to root/rel (numbered if taken), never overwriting, to another
    filesystem too; returns where."""
    dest = os.path.join(os.fsencode(root), rel)
    make_dirs(os.path.dirname(dest), mode)
    n = 0
    while not move_noreplace(
        src,
        candidate := os.path.join(os.path.dirname(dest), numbered_name(os.path.basename(dest), n)),
    ):
        n += 1
    fsync_dir(os.path.dirname(candidate))
    fsync_dir(os.path.dirname(src))
    return candidate


def _describe(
    cfg: Config, conn: db.Connection, reader: Reader, rel: bytes, st: os.stat_result
) -> MediaInfo | NotMedia:
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
    return reader.describe(os.path.join(os.fsencode(cfg.library), rel), shown(name), st.st_mtime_ns)


def _partner(
    cfg: Config, conn: db.Connection, rel: bytes, companion: Companion
) -> catalog.Entry | None:
    folder = os.path.dirname(rel)
    names = list(companion.names)
    if companion.stem is not None:
        try:
            names += sorted(
                n
                for n in os.listdir(os.path.join(os.fsencode(cfg.library), folder))
                if matches_stem(companion, n)
            )
        except OSError:
            pass
    for name in names:
        entry = catalog.by_path(conn, os.fsdecode(os.path.join(folder, name)))
        if entry is not None and not entry.missing_since:
            return entry
    return None


def catalogue(
    cfg: Config,
    conn: db.Connection,
    reader: Reader,
    rel: bytes,
    note: str,
    *,
    keep_copy: bool,
    keep_other: bool,
    was_kept: bool = False,
) -> Action:
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
            kept.forget(conn, path)
        existing = catalog.present(conn, catalog.by_sha256(conn, sha256))
        if existing is None and isinstance(info, MediaInfo):
            catalog.insert(
                conn,
                sha256=sha256,
                size=size,
                path=path,
                info=info,
                original_name=shown(os.path.basename(rel)),
                source=full,
                imported_at=journal.now(),
                job_id=None,
                mtime_ns=st.st_mtime_ns,
            )
            if info.date_source.startswith("partner:"):
                return Action(
                    "companion",
                    text,
                    f"{note}; a sidecar of {info.date_source.removeprefix('partner:')}",
                )
            return Action("catalogued", text, f"{note}; date from {info.date_source}")
        if keep_copy if existing is not None else keep_other:
            reason = (
                f"same content as {catalog.printable(existing.path)}"
                if existing is not None
                else info.reason
                if isinstance(info, NotMedia)
                else "not catalogued"
            )
            kept.record(
                conn,
                path=path,
                kind="copy" if existing else "other",
                file_id=existing.id if existing else None,
                size=size,
                mtime_ns=st.st_mtime_ns,
                reason=reason,
                when=journal.now(),
            )
            return Action(
                "copy" if existing else "left",
                text,
                f"{reason}; left where it is" + ("" if existing else " and listed"),
            )
    if existing is not None:
        where = move_aside(full, cfg.duplicates, rel, cfg.dir_mode)
        return Action(
            "quarantined",
            text,
            f"same content as {catalog.printable(existing.path)}; moved to {shown(where)}",
        )
    assert isinstance(info, NotMedia)
    where = move_aside(full, cfg.rejected, rel, cfg.dir_mode)
    return Action("rejected", text, f"{info.reason}; moved to {shown(where)}")


def _not_a_file(
    cfg: Config,
    conn: db.Connection,
    full: bytes,
    rel: bytes,
    st: os.stat_result,
    *,
    keep_other: bool,
    was_kept: bool = False,
) -> Action:
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
                kept.forget(conn, os.fsdecode(rel))
            kept.record(
                conn,
                path=os.fsdecode(rel),
                kind="other",
                file_id=None,
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                reason=f"{what} (never followed)",
                when=journal.now(),
            )
        return Action("left", text, f"{what} (never followed); left where it is and listed")
    if not (
        stat.S_ISLNK(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)
    ):  # a device cannot be moved to another filesystem
        return Action("skipped", text, f"{what}; left as it is")
    where = move_aside(full, cfg.rejected, rel, cfg.dir_mode)
    return Action("rejected", text, f"{what}; moved as it is to {shown(where)}")


# -- adopt -------------------------------------------------------------------------------


def adopt(
    cfg: Config,
    path: str,
    log: Any,
    on_progress: Callable[[int, int], None] | None = None,
    *,
    quarantine_copies: bool = False,
) -> list[Action]:
    """Catalogue an existing date-sorted library (or a folder of it) in place. Nothing is
    moved or deleted, except album copies when `quarantine_copies`."""
    top = os.path.realpath(os.fsencode(path))
    library = os.path.realpath(os.fsencode(cfg.library))
    if top != library and not top.startswith(library + b"/"):
        raise MediasortError(
            f"{path}: adopt catalogues files in place, so PATH must be the "
            f"library ({cfg.library}) or a folder in it; use `import` to "
            "copy files from elsewhere"
        )
    actions: list[Action] = []
    with opened(cfg, log) as (conn, reader):
        prefix = os.path.relpath(top, library) if top != library else b""
        rels = [
            r
            for r in report.library_files(library)
            if not prefix or r == prefix or r.startswith(prefix + b"/")
        ]
        # photos and videos first: a sidecar is recorded as the companion of its photo
        rels.sort(key=lambda r: (_is_sidecar(r), r))
        for i, rel in enumerate(rels):
            p = os.fsdecode(rel)
            if catalog.by_path(conn, p) is None and not kept.is_kept(conn, p):
                actions.append(
                    catalogue(
                        cfg,
                        conn,
                        reader,
                        rel,
                        "adopted",
                        keep_copy=not quarantine_copies,
                        keep_other=True,
                    )
                )
            if on_progress is not None:
                on_progress(i + 1, len(rels))
        claim(cfg, conn)
    log.info(
        "adopt.finished",
        path=shown(os.fsencode(path)),
        **{k: sum(a.kind == k for a in actions) for k in ADOPT_KINDS},
    )
    return actions


ADOPT_KINDS = ("catalogued", "companion", "copy", "left", "quarantined", "skipped")


def _is_sidecar(rel: bytes) -> bool:
    companion = companion_of(os.path.basename(rel))
    return companion is not None and companion.kind == "sidecar"
