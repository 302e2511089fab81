"""What every writing command shares (`run`, `import`, `undo`, `adopt`, `verify --repair`):
batch ids, the start-up checks (folders writable, the library's catalog is this one) and
`prepare`: finish an interrupted undo, then replay every unfinished job once, before any
new work is taken. Crash invariant: work is only taken after `prepare` has finished
what an earlier run left.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import Config
from ..engine.hooks import Hooks
from ..engine.ingest import Ingestor, Retry
from ..engine.undo import Undoer
from ..errors import ConfigError, ForeignCatalogError
from ..files.dirs import fsync_dir, make_dirs
from ..media.metadata import Reader
from ..store import db, journal
from . import report


def batch_id(kind: str) -> str:
    """`KIND-<UTC time>-<pid>`: the batch of an import, an undo, a replay, a daemon burst."""
    return f"{kind}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"


def next_batch(kind: str, previous: str) -> str:
    """A new batch id after `previous`, made unique within the second (`.2`, `.3`, ...)."""
    new = batch_id(kind)
    base, _, seq = previous.partition(".")
    return new if base != new else f"{new}.{int(seq or 1) + 1}"


PROBE = ".mediasortd-probe"


def writable_folders(cfg: Config) -> list[tuple[str, Path]]:
    """Every folder the daemon writes to, with what it is for."""
    out = [
        *(("inbox", inbox) for inbox in cfg.inboxes),
        ("library", cfg.library),
        ("duplicates folder", cfg.duplicates),
        ("rejected folder", cfg.rejected),
        ("state_dir", cfg.state_dir),
    ]
    if cfg.metrics_textfile is not None:
        out.append(("metrics textfile folder", cfg.metrics_textfile.parent))
    return out


def check_writable(cfg: Config) -> None:
    """The start-up self-check: make each folder the daemon writes to (if missing), then
    really create and remove a probe file in it. A sandbox that leaves a folder read-only
    (the unit's ReadWritePaths=) or a wrong owner is found here, in one line naming the
    folder and what to write, instead of as sources left in the inbox later."""
    # One probe name per catalog, the same on every start: a probe that a crash or a
    # power cut left behind (in the inbox or a quarantine folder) is removed by the next
    # check instead of staying there as a file that no job made.
    name = f"{PROBE}-{hashlib.sha256(os.fsencode(cfg.state_dir)).hexdigest()[:12]}".encode()
    for what, path in writable_folders(cfg):
        raw = os.fsencode(path)
        probe = os.path.join(raw, name)
        try:
            existed = os.path.isdir(raw)
            make_dirs(raw, 0o750 if what == "state_dir" else cfg.dir_mode)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)
            fd = os.open(
                probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
            )
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)
        except OSError as e:
            how = "cannot be created" if not existed else "is not writable"
            raise ConfigError(
                f"{path}: the {what} ({cfg.source}) {how}: {e.strerror}. Under the systemd "
                f"unit, run `sudo mediasortd --config {cfg.source} unit-paths --write` (or "
                f"`sudo systemctl edit mediasortd` and add [Service] ReadWritePaths=-{path}),"
                " then `sudo systemctl restart mediasortd`; otherwise give the service's "
                "user write access to it"
            ) from None


def unit_paths(cfg: Config) -> str:
    """The unit drop-in that makes every folder of the config writable under the sandbox
    (`mediasortd unit-paths`). The `-` prefix: a folder that does not exist yet does not
    stop the unit with 226/NAMESPACE; the self-check then names it."""
    paths: list[str] = []
    for _, path in writable_folders(cfg):
        text = str(path)
        if not any(text == p or text.startswith(p + "/") for p in paths) and not text.startswith(
            "/var/lib/mediasortd"
        ):
            paths.append(text)
    quoted = " ".join("-" + (f'"{p}"' if " " in p else p) for p in paths)
    return (
        f"# Written by `mediasortd unit-paths` from {cfg.source}: the folders the service\n"
        "# writes to. Run it again after changing [paths] or [metrics] there.\n"
        f"[Service]\nReadWritePaths={quoted}\n"
    )


def check_catalog(cfg: Config, conn: db.Connection, log: Any) -> None:
    """The library knows its catalog: {library}/.mediasortd.library holds the id of the
    catalog that filed it. A new (empty) catalog beside a library that holds files, or a
    catalog the library does not know, is refused (exit 78): starting would file every
    content a second time. Otherwise the marker is written if it is missing."""
    library = os.fsencode(cfg.library)
    ours, theirs = db.catalog_id(conn), report.library_marker(library)
    if theirs == ours:
        return
    empty = db.is_empty(conn)
    if empty and next(report.library_files(library), None) is not None:
        detail = (
            "this catalog is new, but the library holds files"
            if theirs is None
            else f"this catalog ({ours}) is new, but the library was filed by catalog "
            f"{theirs or '?'}"
        )
    elif theirs is not None and not empty:
        detail = f"the library was filed by catalog {theirs or '?'}, not by this one ({ours})"
    else:
        if theirs is not None:
            log.warning(
                "catalog.library_claimed", library=str(cfg.library), previous=theirs, catalog=ours
            )
        try:
            claim_library(cfg, conn)
        except OSError as e:  # a library we cannot write to files nothing: said there
            log.warning(
                "catalog.marker_unwritable",
                library=str(cfg.library),
                error=f"{e.strerror}: {os.fsdecode(e.filename or b'')}",
            )
        return
    raise ForeignCatalogError(
        f"{cfg.catalog}: {detail} ({cfg.library}). Nothing was started, so nothing is filed "
        "twice. If the catalog was lost or damaged, restore it from a backup or run "
        "`mediasortd verify --repair` to rebuild it from the library; to catalogue an "
        f"existing library for the first time, run `mediasortd adopt {cfg.library}`."
    )


def claim_library(cfg: Config, conn: db.Connection) -> None:
    """Write this catalog's id into the library's marker (atomically, durably)."""
    library = os.fsencode(cfg.library)
    marker = os.path.join(library, report.MARKER)
    tmp = marker + b".tmp-%d" % os.getpid()
    text = (
        "# the mediasortd catalog that files this library; if the catalog is lost,\n"
        "# `mediasortd verify --repair` rebuilds it from the files here\n"
        f"catalog_id = {db.catalog_id(conn)}\ncatalog = {cfg.catalog}\n"
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
        os.rename(tmp, marker)
    except BaseException:
        os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    fsync_dir(library)


def make_reader(cfg: Config) -> Callable[[], Reader]:
    """A maker of metadata readers for a pool's workers (one ExifTool each)."""
    return lambda: Reader(timezone=cfg.timezone)


def prepare(
    cfg: Config, log: Any, hooks: Hooks, companion_grace: float = 0.0, *, check: bool = True
) -> list[tuple[int, bytes, float]]:
    """Make the library's folders, finish an interrupted undo, and replay every unfinished
    job once, here, before any new work is taken (then remove staging files no job owns).
    Returns the jobs that must wait (job id, source, seconds) for the pool to retry."""
    for path in (cfg.library, cfg.staging):
        make_dirs(os.fsencode(path), 0o700 if path == cfg.staging else cfg.dir_mode)
    conn = db.connect(cfg.catalog)
    try:
        if check:  # not for `verify --repair` and `adopt`: they make the catalog whole
            check_catalog(cfg, conn, log)
    except BaseException:
        conn.close()
        raise
    reader = Reader(timezone=cfg.timezone)
    committer: db.Committer | None = None
    try:
        Undoer(cfg, conn, log, hooks).replay()  # an interrupted `undo` is finished first
        committer = db.Committer(cfg.catalog)
        ingest = Ingestor(
            cfg,
            conn,
            reader,
            batch=batch_id("replay"),
            log=log,
            hooks=hooks,
            companion_grace=companion_grace,
            committer=committer,
        )
        if pending := journal.pending(conn):
            log.info("replay.started", jobs=pending)
        results = ingest.replay()
    finally:
        if committer is not None:
            committer.close()
        reader.close()
        conn.close()
    waiting = [(r.job.id, r.job.source, r.after) for r in results if isinstance(r, Retry)]
    if results:
        log.info("replay.finished", jobs=len(results), waiting=len(waiting))
    return waiting
