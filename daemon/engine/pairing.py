"""Finding a companion's partner: the photo a sidecar belongs to, the still of a Live
Photo's motion half, and the Takeout JSON that dates a photo.

Only reads: the journal and catalog to find the partner's library name, the inbox folder
to see whether a partner is still on its way. Naming rules are in `companions`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from collections.abc import Container
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from ..files.paths import Unusable, open_source_beneath
from ..model import Job, MediaInfo, Outcome, Step
from ..rules.companions import Companion, matches_stem, takeout_names
from ..rules.dates import in_bounds
from ..store import catalog, journal

if TYPE_CHECKING:
    import apsw

WAIT_LIMIT = 600.0  # a partner still in the inbox is waited for this long at most
# A Live Photo's still and video start within a second or two of each other (the video
# runs from ~1.5 s before the still): dates further apart name different moments.
PAIR_SECONDS = 5.0


class Wait(enum.Enum):
    """The partner is on its way (in the inbox, or in another worker's hands)."""

    WAIT = "wait"


WAIT = Wait.WAIT


def as_companion(partner: catalog.Entry, companion: Companion | None, kind: str) -> MediaInfo:
    """A companion is dated by its partner (the still of a Live Photo, the photo of a
    sidecar)."""
    suffix = companion.suffix.decode() if companion is not None else ""
    return MediaInfo(
        kind=kind,
        file_type=suffix.rpartition(".")[2].upper(),
        mime="",
        ext=suffix.rpartition(".")[2],
        captured=datetime.fromisoformat(partner.captured),
        utc_offset=None,
        date_source=f"partner:{catalog.printable(partner.path)}",
        date_raw=partner.captured,
        confidence="high",
    )


def motion_pairs(video: MediaInfo, still: catalog.Entry) -> bool:
    """Whether a video named like a still in its folder (`IMG_1.MOV` beside `IMG_1.HEIC`)
    is that still's Live Photo motion half, to be filed with it (pure).

    Apple's ContentIdentifier decides where both carry one. Otherwise the shared name is
    trusted only when the video has no date of its own worth keeping (none but its file
    name or mtime), or when its own date agrees with the still's within PAIR_SECONDS:
    camera counters collide (`IMG_0001.JPG` from one camera, `IMG_0001.MOV` from
    another), and a video never gives up a date of its own for a name."""
    if video.content_id and still.content_id:
        return video.content_id == still.content_id
    if video.date_source in ("filename", "mtime") or video.confidence == "low":
        return True
    captured = datetime.fromisoformat(still.captured)
    if video.utc_offset is not None and still.utc_offset is not None:
        # both zones known: compare instants
        captured += timedelta(seconds=video.utc_offset - still.utc_offset)
    return abs((video.captured - captured).total_seconds()) <= PAIR_SECONDS


def partner(
    conn: apsw.Connection,
    job: Job,
    companion: Companion,
    grace: float,
    expected: Container[bytes] | None = None,
) -> catalog.Entry | Wait | None:
    """The catalog row of the photo this file travels with; None when there is none to
    wait for; WAIT while the partner is still on its way (in the inbox, or in hand), or
    (sidecars) while the job is younger than `grace` seconds. `expected`: the paths an
    import was given (a file beside them that is not one of them is not on its way);
    None for the daemon (every file in the inbox is)."""
    folder = os.path.dirname(job.source)
    jobs = journal.latest_for(conn, [os.path.join(folder, n) for n in companion.names])
    on_disk = [n for n in companion.names if os.path.lexists(os.path.join(folder, n))]
    if companion.stem is not None:
        under = journal.latest_under(conn, os.path.join(folder, companion.stem + b"."))
        jobs.update(
            {k: v for k, v in under.items() if matches_stem(companion, os.path.basename(k))}
        )
        try:
            on_disk += [n for n in os.listdir(folder) if matches_stem(companion, n)]
        except OSError:
            pass
    for _source, other in sorted(jobs.items(), key=lambda kv: -kv[1].id):
        if other.step is Step.DONE and other.outcome is Outcome.FILED:
            entry = catalog.by_job(conn, other.id)
        elif other.step is Step.DONE and other.outcome is Outcome.DUPLICATE:
            entry = catalog.by_id(conn, other.duplicate_of or -1)
        else:
            entry = None
        if entry is not None and not entry.missing_since:
            return entry
    waited = journal.age(conn, job.id)
    on_its_way = any(j.step is not Step.DONE for j in jobs.values()) or any(
        os.path.join(folder, n) not in jobs
        for n in on_disk
        if expected is None or os.path.join(folder, n) in expected
    )
    grace = grace if companion.kind == "sidecar" else 0.0
    if (on_its_way and waited < max(grace, WAIT_LIMIT)) or waited < grace:
        return WAIT
    return None


def takeout_date(
    source: bytes, info: MediaInfo, tz: tzinfo, root: bytes | None = None
) -> MediaInfo:
    """A Google Takeout JSON beside the photo dates it when the photo has no date of
    its own (photoTakenTime, UTC seconds). `root`: the inbox, beneath which the folder
    is resolved without links (files.paths.open_source_beneath)."""
    folder = os.path.dirname(source)
    for name in takeout_names(os.path.basename(source)):
        src = open_source_beneath(root, os.path.join(folder, name))
        if isinstance(src, Unusable):
            continue
        try:
            assert src.fd is not None
            raw = os.read(src.fd, 1 << 20)
        finally:
            src.close()
        try:
            stamp = int(json.loads(raw)["photoTakenTime"]["timestamp"])
            when = datetime.fromtimestamp(stamp, UTC).astimezone(tz)
        except (ValueError, KeyError, TypeError, OverflowError, OSError, RecursionError):
            continue
        if not in_bounds(when, datetime.now(UTC)):
            continue
        offset = when.utcoffset()
        return dataclasses.replace(
            info,
            captured=when.replace(tzinfo=None),
            date_raw=str(stamp),
            utc_offset=int(offset.total_seconds()) if offset is not None else None,
            date_source="Takeout:photoTakenTime",
            confidence="medium",
        )
    return info
