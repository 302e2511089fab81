"""When a job that met trouble is tried again, and when it is given up (pure: no I/O).
`classify` names the kind of trouble an exception is; `Policy.decide` turns (trouble,
failed attempts, the job's age) into a decision: again after so many seconds, give up,
or stop. The caller records the attempt first (`records`, `counts`) and acts on it.
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass

from ..errors import ToolError

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # a full filesystem (or quota)
WRITER_PATIENCE = 60.0  # s an import waits for a writer that has a source open
LOCKED_WAIT = 1.0  # s before trying a locked catalog again
STATE_WAIT = 5.0  # s before looking at a full or read-only state directory again


class Trouble(enum.Enum):
    """What stopped a job's step, as the retry policy tells it apart."""

    LOCKED = "locked"  # another process holds the catalog's lock a while
    STATE = "state"  # the catalog's filesystem refuses writes (full or read-only)
    BROKEN = "broken"  # the catalog itself is broken: not one file's trouble
    TOOL = "tool"  # ExifTool missing or dying: not this file's fault
    SYSTEM = "system"  # an OS error: the system's trouble of the moment, or the file's
    FULL = "full"  # the library's filesystem is full (or over quota)
    CHANGED = "changed"  # the source changed while it was being copied
    REOPENED = "reopened"  # a writer opened the source after it was copied
    WRITER = "writer"  # a writer still has the source open
    BUG = "bug"  # anything else: ours to fix; the job fails at once

    @property
    def records(self) -> bool:
        """The attempt is written to the journal (a locked or blocked catalog cannot take
        it; a bug fails the job at once)."""
        return self in _RECORDED

    @property
    def counts(self) -> bool:
        """It is a failed attempt: waiting for a writer to finish is not one, so it does
        not use up the attempts a file's own error is allowed."""
        return self in _COUNTED


_COUNTED = frozenset(
    {Trouble.TOOL, Trouble.SYSTEM, Trouble.FULL, Trouble.CHANGED, Trouble.REOPENED}
)
_RECORDED = _COUNTED | {Trouble.WRITER}


def classify(e: BaseException, catalog: Trouble | None = None) -> Trouble:
    """The kind of trouble `e` is. `catalog`: what the store made of it, when it is the
    catalog's own (LOCKED, STATE, BROKEN: SQLite's errors are the store's to tell)."""
    if catalog is not None:
        return catalog
    if isinstance(e, ToolError):
        return Trouble.TOOL
    if isinstance(e, OSError):
        return Trouble.FULL if e.errno in FULL_ERRNOS else Trouble.SYSTEM
    return Trouble.BUG


@dataclass(frozen=True)
class Again:
    """Try the job again after `after` seconds."""

    after: float


@dataclass(frozen=True)
class GiveUp:
    """The job fails (source untouched); `why` is added to its reason."""

    why: str = ""


@dataclass(frozen=True)
class Stop:
    """Not this file's trouble: the command (or the service) stops with the error."""


Decision = Again | GiveUp | Stop


@dataclass(frozen=True)
class Backoff:
    """Seconds before the next attempt after `attempts` failed ones: doubling from
    `base`, at most `cap`; a full library at most `full_cap` (space may be freed any
    moment, so it is looked at often)."""

    base: float = 0.5
    cap: float = 60.0
    full_cap: float = 5.0

    def __call__(self, attempts: int, *, full: bool = False) -> float:
        return min(self.full_cap if full else self.cap, self.base * 2.0 ** min(attempts, 7))


@dataclass(frozen=True)
class Policy:
    """A one-shot command (`max_attempts` set) gives a file that many attempts at its
    own errors (a full library twice as many) and a writer `patience` seconds by the
    job's age, and stops when the catalog's filesystem refuses writes; the daemon
    (`max_attempts` None) waits as long as it takes."""

    max_attempts: int | None = 5
    backoff: Backoff = Backoff()
    patience: float = WRITER_PATIENCE

    def decide(
        self, trouble: Trouble, attempts: int, *, age: float = 0.0, settle: float = 0.0
    ) -> Decision:
        """`attempts`: the failed attempts recorded, this one included; `age`: seconds
        since the job was recorded; `settle`: the config's settle_seconds."""
        gives_up = self.max_attempts is not None
        if trouble is Trouble.BUG:
            return GiveUp()
        if trouble is Trouble.BROKEN or (trouble is Trouble.STATE and gives_up):
            return Stop()
        if trouble is Trouble.LOCKED:
            return Again(LOCKED_WAIT)
        if trouble is Trouble.STATE:
            return Again(STATE_WAIT)
        if trouble is Trouble.WRITER:
            if gives_up and age >= self.patience:
                return GiveUp(f" (gave up after {age:.0f} s)")
            return Again(max(settle, 1.0))
        if trouble is Trouble.FULL:
            if self.max_attempts is not None and attempts >= self.max_attempts * 2:
                return GiveUp()
            return Again(self.backoff(attempts, full=True))
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return GiveUp(f" (gave up after {attempts} attempts)")
        if trouble is Trouble.CHANGED:
            return Again(max(settle, 0.5))
        if trouble is Trouble.REOPENED:
            return Again(max(settle, 1.0))
        return Again(self.backoff(attempts))


ONESHOT = Policy()  # `import`, and the replay before any command's work
DAEMON = Policy(max_attempts=None)  # `run`: waits as long as it takes
