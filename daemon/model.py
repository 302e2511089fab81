"""Plain values shared by every layer: steps, outcomes, jobs, media facts (level 0, no I/O)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Step(enum.StrEnum):
    """Where a job is. Each step's effect is durable before the journal says so."""

    RECORDED = "recorded"  # the job exists; nothing has been touched
    COPIED = "copied"  # a fsynced copy with a known sha256 sits in staging
    DECIDED = "decided"  # the outcome is committed (catalog row reserved for a new file)
    PLACED = "placed"  # the bytes are at their destination (library, quarantine, rejected)
    DONE = "done"  # the source is retired; the job is finished


class Outcome(enum.StrEnum):
    FILED = "filed"  # new content, now in the library
    DUPLICATE = "duplicate"  # content the catalog already had
    REJECTED = "rejected"  # not a photo or video, empty, unreadable, not a regular file
    VANISHED = "vanished"  # the source disappeared before it could be read
    FAILED = "failed"  # an error we could not get past; the source is untouched


# Outcomes that count as "handled" for `import`'s exit status.
HANDLED = frozenset({Outcome.FILED, Outcome.DUPLICATE, Outcome.REJECTED, Outcome.VANISHED})


@dataclass(frozen=True)
class Identity:
    """What a source file was when the job was recorded; checked before every use."""

    dev: int
    ino: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Job:
    id: int
    batch: str
    source: bytes  # absolute path, raw bytes (names need not be UTF-8)
    identity: Identity
    move: bool  # retire the source when done (daemon, import --move)
    step: Step
    staged: bytes | None
    sha256: str | None
    size: int | None
    dest: str | None  # relative to its root: library for filed, else quarantine/rejected
    outcome: Outcome | None
    error: str | None
    attempts: int
    duplicate_of: int | None


@dataclass(frozen=True)
class MediaInfo:
    """What ExifTool says a file is, and when it was captured."""

    kind: str  # "image" or "video"
    file_type: str  # ExifTool's FileType: "JPEG", "HEIC", "MOV", ...
    mime: str
    ext: str  # the library extension, with its dot, lower-case: ".jpg"
    captured: datetime  # naive local wall time the photo was taken at
    utc_offset: int | None  # seconds east of UTC, when known
    date_source: str  # the tag or rule that decided: "EXIF:DateTimeOriginal", "mtime", ...
    date_raw: str  # the raw value it was read from
    confidence: str  # "high" | "medium" | "low"


@dataclass(frozen=True)
class NotMedia:
    """A file that is not a photo or video we can file, and why."""

    reason: str
