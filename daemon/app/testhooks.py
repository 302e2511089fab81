"""The one way to ask the real command, from outside, for a crash at a step (the SIGKILL
tests): MEDIASORTD_TEST_KILL_AT=POINT[:N] SIGKILLs the process the N-th time (default
the first) POINT is reached: an ingest step (`recorded`, `copied`, `decided`, `placed`,
`done`) or a point of an undo (`undo.recorded`, `undo.placed`, `undo.restored`,
`undo.unlinked`, `undo.done`). Unset, as in production: no hooks.
"""

from __future__ import annotations

import os
import signal
import threading

from ..engine.hooks import NO_HOOKS, Hooks
from ..model import Job, Step, UndoItem

VARIABLE = "MEDIASORTD_TEST_KILL_AT"
UNDO_POINTS = ("recorded", "placed", "restored", "unlinked", "done")


class KillAt(Hooks):
    """SIGKILL this process the `nth` time `point` is reached."""

    def __init__(self, point: str, nth: int) -> None:
        known = [s.value for s in Step] + [f"undo.{p}" for p in UNDO_POINTS]
        if point not in known:
            raise ValueError(f"{VARIABLE}: unknown point {point!r} (one of {', '.join(known)})")
        self.point = point
        self.left = nth
        self.lock = threading.Lock()

    def after_step(self, job: Job) -> None:
        self._reached(job.step.value)

    def after_undo_step(self, point: str, item: UndoItem) -> None:
        self._reached(f"undo.{point}")

    def _reached(self, point: str) -> None:
        if point != self.point:
            return
        with self.lock:
            self.left -= 1
            if self.left <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


def hooks_from_env() -> Hooks:
    """KillAt from MEDIASORTD_TEST_KILL_AT, or no hooks."""
    spec = os.environ.get(VARIABLE)
    if not spec:
        return NO_HOOKS
    point, _, nth = spec.partition(":")
    return KillAt(point, int(nth or 1))
