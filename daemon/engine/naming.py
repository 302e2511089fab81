"""A new file's library name: the layout's path for it (its {source}, the undated
folder), and the name reserved in the catalog inside the decision's transaction (`.N`
when taken; one stem for a RAW and the JPEG or HEIC shot with it).

Only reads the disk; the reservation is durable with the decision that makes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from ..config import Config
from ..model import Job, MediaInfo
from ..rules.layout import UNDATED_LAYOUT, Naming, number_of, numbered, pairs_with, render
from ..store import catalog, names

if TYPE_CHECKING:
    import apsw


def inbox_roots(cfg: Config) -> list[bytes]:
    """The inbox folders, for {source}: `paths.inbox` (one path, or a list where the
    config has several)."""
    found = getattr(cfg, "inboxes", None) or cfg.inbox
    return [os.fsencode(p) for p in (found if isinstance(found, (list, tuple)) else [found])]


def source_name(path: bytes, roots: Sequence[bytes]) -> str:
    """The {source} of a file: with one inbox, the inbox sub-folder it came from (the
    first folder under the inbox; '' for a file right in the inbox); with several, the
    name of the inbox it came from; '' for a file from elsewhere (an import)."""
    for root in roots:
        top = root.rstrip(b"/")
        if path.startswith(top + b"/"):
            if len(roots) > 1:
                return os.fsdecode(os.path.basename(top))
            first, sep, _ = path[len(top) + 1 :].partition(b"/")
            return os.fsdecode(first) if sep else ""
    return ""


def is_undated(cfg: Config, info: MediaInfo) -> bool:
    """Dated by nothing but its mtime, and undated files have a folder of their own."""
    return info.date_source == "mtime" and cfg.undated == "folder"


def preferred_path(cfg: Config, roots: Sequence[bytes], source: bytes, info: MediaInfo) -> str:
    """The layout's library path for a new file (undated/ORIGINAL.ext for an undated one
    when undated = "folder"), before `.N`; LayoutError if it would leave the library."""
    original = os.fsdecode(os.path.basename(source))
    naming = Naming(
        info.captured,
        info.ext,
        original=original.rpartition(".")[0] or original,
        make=info.make,
        model=info.model,
        kind="video" if info.kind == "video" else "photo",
        source=source_name(source, roots),
    )
    return render(UNDATED_LAYOUT if is_undated(cfg, info) else cfg.layout, naming)


def reserve_name(
    conn: apsw.Connection, cfg: Config, roots: Sequence[bytes], job: Job, info: MediaInfo
) -> str:
    """The library name reserved for a new file (inside the decision's transaction):
    the layout's path (an undated file's own one under undated/ when undated =
    "folder"), checked to stay beneath the library, then `.N` if taken. A RAW and
    the JPEG or HEIC shot with it share one stem (`x.cr2`, `x.jpg`)."""
    library = os.fsencode(cfg.library)
    preferred = preferred_path(cfg, roots, job.source, info)
    if is_undated(cfg, info) or not pairs_with(info.ext):
        return names.free_name(conn, library, preferred)
    return _pair_name(conn, library, job, info, preferred)


def _pair_name(
    conn: apsw.Connection, library: bytes, job: Job, info: MediaInfo, preferred: str
) -> str:
    """A RAW or a JPEG/HEIC: the stem of its partner (same folder, same name but the
    extension, shot in the same second), when already catalogued and free with our
    extension; else the first stem that no catalogued file has with any extension,
    so that the partner, decided later, finds it free: in a burst of pairs sharing
    a second, the `.N` is chosen for the pair."""
    folder, base = os.path.split(job.source)
    stem = base.rpartition(b".")[0] or base
    second = info.captured.replace(microsecond=0)
    for src, entry in catalog.filed_from(conn, os.path.join(folder, stem + b".")):
        other_base = os.path.basename(src)
        if (
            entry.job_id == job.id
            or other_base.rpartition(b".")[0] != stem
            or not pairs_with(info.ext, os.fsdecode(other_base.rpartition(b".")[2]))
        ):
            continue
        if (
            entry.missing_since
            or datetime.fromisoformat(entry.captured).replace(microsecond=0) != second
        ):
            continue
        n = number_of(entry.path, preferred)
        if n is not None and names.is_free(conn, library, candidate := numbered(preferred, n)):
            return candidate
    return names.free_stem(conn, library, preferred)
