"""`import --dry-run`: where each file would go, reading only (no lock, no catalog writes,
no copies), by the same naming rules as the import itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from ..config import Config
from ..engine.naming import inbox_roots, preferred_path
from ..files.copy import hash_fd
from ..files.paths import Unusable, open_source
from ..media.metadata import Reader
from ..model import MediaInfo, NotMedia, Outcome
from ..rules.companions import Companion, companion_of, library_name, matches_stem
from ..rules.layout import numbered
from ..store import catalog, db, journal, names
from .oneshot import walk


def _sidecar_plan(
    conn: db.Connection | None, path: bytes, companion: Companion, planned: dict[bytes, str]
) -> Plan:
    """A sidecar goes beside its photo (one this dry run files, or one filed before from
    the same folder), under the photo's new name; with no photo it is rejected."""
    folder = os.path.dirname(path)
    try:
        beside = [n for n in os.listdir(folder) if matches_stem(companion, n)]
    except OSError:
        beside = []
    partners = [os.path.join(folder, n) for n in (*companion.names, *sorted(beside))]
    rel = next((planned[p] for p in partners if p in planned), None)
    if rel is None and conn is not None:
        for job in journal.latest_for(conn, partners).values():
            entry = (
                catalog.by_job(conn, job.id)
                if job.outcome is Outcome.FILED
                else catalog.by_id(conn, job.duplicate_of or -1)
                if job.outcome is Outcome.DUPLICATE
                else None
            )
            if entry is not None and not entry.missing_since:
                rel = entry.path
                break
    if rel is None:
        return Plan(path, "rejected", "", "a sidecar whose photo is not in the library")
    return Plan(path, "filed", library_name(rel, companion), f"a sidecar of {rel}")


@dataclass(frozen=True)
class Plan:
    """What `import --dry-run` predicts for one source."""

    source: bytes
    outcome: str
    where: str  # the library path, or the file it duplicates, or ""
    reason: str


def dry_run(cfg: Config, sources: list[str]) -> Iterator[Plan]:
    """Where each file would go, reading only: no lock, no catalog writes, no copies.
    ExifTool reads each source through our open descriptor (/proc/PID/fd/N), so what is
    examined is what was opened, whatever its name."""
    conn = db.connect(cfg.catalog, readonly=True) if cfg.catalog.exists() else None
    reader = Reader(timezone=cfg.timezone)
    seen: dict[str, str] = {}
    taken: set[str] = set()
    planned: dict[bytes, str] = {}  # source -> the library path it would be filed at
    nexts: dict[str, int] = {}  # the next number to try for a preferred path
    library = os.fsencode(cfg.library)
    roots = inbox_roots(cfg)
    try:
        skip = [os.fsencode(p) for p in (cfg.library, cfg.state_dir)]
        sidecars: list[tuple[bytes, Companion]] = []  # planned once their photos are
        for path in dict.fromkeys(walk(sources, skip)):  # as import_ does
            companion = companion_of(os.path.basename(path))
            if companion is not None and companion.kind == "sidecar":
                sidecars.append((path, companion))
                continue
            fd = open_source(path)
            if isinstance(fd, Unusable):
                yield Plan(path, "vanished" if fd.missing else "rejected", "", fd.reason)
                continue
            try:
                sha256, size = hash_fd(fd)
                existing = catalog.by_sha256(conn, sha256) if conn is not None else None
                if existing is not None or sha256 in seen:
                    yield Plan(path, "duplicate", existing.path if existing else seen[sha256], "")
                    continue
                name = os.fsdecode(os.path.basename(path))
                info = (
                    NotMedia("an empty file")
                    if size == 0
                    else reader.describe(
                        f"/proc/{os.getpid()}/fd/{fd}".encode(), name, os.fstat(fd).st_mtime_ns
                    )
                )
            finally:
                os.close(fd)
            if (
                isinstance(info, MediaInfo)
                and info.date_source == "mtime"
                and cfg.undated == "reject"
            ):
                info = NotMedia(
                    'no capture date in its content, name or sidecar (ingest.undated = "reject")'
                )
            if isinstance(info, NotMedia):
                yield Plan(path, "rejected", "", info.reason)
                continue
            preferred = preferred_path(cfg, roots, path, info)
            n = nexts.get(preferred) or (
                min(
                    names.first_number(conn, preferred),
                    names.first_number(conn, catalog.stem_key(preferred)),
                )
                if conn is not None
                else 0
            )
            while True:
                rel = numbered(preferred, n)
                in_catalog = conn is not None and catalog.by_path(conn, rel) is not None
                if (
                    rel not in taken
                    and not in_catalog
                    and not os.path.lexists(os.path.join(library, os.fsencode(rel)))
                ):
                    break
                n += 1
            taken.add(rel)
            nexts[preferred] = n + 1  # as free_number counts on
            seen[sha256] = rel
            planned[path] = rel
            yield Plan(path, "filed", rel, f"date from {info.date_source}")
        for path, companion in sidecars:
            yield _sidecar_plan(conn, path, companion, planned)
    finally:
        reader.close()
        if conn is not None:
            conn.close()
