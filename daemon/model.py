"""Plain values shared by every part: a job's steps and outcomes, the Job and UndoItem rows,
a source's Identity, what a file is (MediaInfo, NotMedia). No I/O; `Step` says which
steps are committed to the journal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Step(enum.StrEnum):
    """Where a job is. Each step's effect is durable before the journal says so.

    Normally only RECORDED, DECIDED and DONE are committed to the journal: COPIED and
    PLACED are what a worker holds between two commits (COPIED's columns go with the
    DECIDED commit; DONE is committed right after placing), and replay from the last
    committed step copies again or finds the placed copy. Two cases commit them: a
    companion waiting for its photo keeps COPIED, a rejected entry moved as it is PLACED."""

    RECORDED = "recorded"  # the job exists; nothing has been touched
    COPIED = "copied"  # a fsynced copy with a known sha256 sits in staging (held in memory)
    DECIDED = "decided"  # the outcome is committed (catalog row reserved for a new file)
    PLACED = "placed"  # the bytes are at their destination (held in memory until DONE)
    DONE = "done"  # the source is retired; the job is finished


class Outcome(enum.StrEnum):
    FILED = "filed"  # new content, now in the library
    DUPLICATE = "duplicate"  # content the catalog already had
    REJECTED = "rejected"  # not a photo or video, empty, unreadable, not a regular file
    VANISHED = "vanished"  # the source disappeared before it could be read
    FAILED = "failed"  # an error we could not get past; the source is untouched


# Outcomes that count as "handled" for `import`'s exit status.
HANDLED = frozenset({Outcome.FILED, Outcome.DUPLICATE, Outcome.REJECTED, Outcome.VANISHED})


def display(path: bytes | None) -> str:
    """A path as text for logs and messages (bytes that are not UTF-8 escaped)."""
    return path.decode("utf-8", "backslashreplace") if path is not None else ""


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def as_int64(n: int) -> int:
    """An unsigned 64-bit number (an inode, a device) as SQLite can store it: wrapped
    into the signed range, so distinct numbers stay distinct."""
    n &= (1 << 64) - 1
    return n - (1 << 64) if n > INT64_MAX else n


def clamp_int64(n: int) -> int:
    """A signed number (an mtime in ns, a size) kept within what SQLite can store."""
    return max(INT64_MIN, min(INT64_MAX, n))


@dataclass(frozen=True)
class Identity:
    """What a source file was when the job was recorded; checked before every use."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    def __post_init__(self) -> None:
        """Range-checked where it enters: SQLite stores signed 64-bit integers. Device and
        inode numbers are unsigned 64-bit (wrapped: still one value per file); an mtime
        before 1677 or after 2262 does not fit in nanoseconds (clamped to the bound: the
        inode and size still tell a changed file, and no date is read from it)."""
        object.__setattr__(self, "dev", as_int64(self.dev))
        object.__setattr__(self, "ino", as_int64(self.ino))
        object.__setattr__(self, "size", clamp_int64(self.size))
        object.__setattr__(self, "mtime_ns", clamp_int64(self.mtime_ns))

    def same_file(self, other: Identity) -> bool:
        """The same file, unchanged: inode, size and mtime. Not the device number, which a
        reboot may change (device-mapper, btrfs, NFS, FUSE)."""
        return (self.ino, self.size, self.mtime_ns) == (other.ino, other.size, other.mtime_ns)


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
    dest: bytes | None  # absolute: the library file, quarantined copy or rejected entry
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
    content_id: str | None = None  # Apple's Live Photo identifier (video or still), if any
    date_skipped: str | None = None  # future values ranked above the winner: tag, value, why
    make: str = ""  # the camera's maker and model, as the file says (for the layout)
    model: str = ""


@dataclass(frozen=True)
class NotMedia:
    """A file that is not a photo or video we can file, and why."""

    reason: str


class UndoStep(enum.StrEnum):
    """Where one file's undo is (the `undos` table). Each step is durable before it is
    committed, like an ingest job's."""

    RECORDED = "recorded"  # the intent is committed; nothing has been touched
    RESTORED = "restored"  # the bytes are back at `dest` (or were still there), fsynced
    DONE = "done"  # the library or quarantine copy and its catalog row are gone


class UndoOutcome(enum.StrEnum):
    RESTORED = "restored"  # put back where it came from (or beside it, or under .undone)
    REMOVED = "removed"  # the source still held the bytes: only our copy was removed
    UNTOUCHED = "untouched"  # the import left nothing behind for this file: nothing to do
    KEPT = "kept"  # could not be undone safely: left where it is, `error` says why


@dataclass(frozen=True)
class UndoItem:
    """One file of an undo: put the bytes at `origin` back at `target` (never over
    anything), then remove `origin` (unless `keep_origin`) and catalog row `file_id`."""

    id: int
    batch: str  # this undo run: undo-<UTC time>-<pid>
    job_id: int  # the ingest job being undone
    file_id: int | None  # the catalog row to delete (a filed job)
    origin: bytes | None  # where the bytes are now: library file, quarantined/rejected copy
    keep_origin: bool  # origin is another catalog row's file: copy it, never remove it
    target: bytes  # where they go back: the source path, or under {library}/.undone
    sha256: str | None
    size: int | None
    mtime_ns: int | None  # the source's mtime, given back to the restored file
    step: UndoStep
    dest: bytes | None  # where they actually went: target or target.N
    outcome: UndoOutcome | None
    error: str | None
