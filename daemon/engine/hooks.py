"""The one test seam of the engine: `Hooks`, called after each step and on each result.

Production runs with NO_HOOKS (every method does nothing). Tests and the fault harness
pass their own: a hook may raise a BaseException (an in-process crash: nothing after it
runs, as if the process died there) or end the process for real (SIGKILL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..model import Job, UndoItem
    from .worker import Result


class Hooks:
    """What the engine tells a test. Subclass it and override what you need."""

    def after_step(self, job: Job) -> None:
        """An ingest job has reached `job.step`: recorded, copied, decided, placed or done
        (copied and placed are durable on disk and committed with the next step)."""

    def on_result(self, result: Result) -> None:
        """A job's result as it is handed back: Finished, Retry or Skipped."""

    def after_undo_step(self, point: str, item: UndoItem) -> None:
        """An undo of one file has reached `point`: `recorded` (about to start), `placed`
        (bytes back, not committed), `restored` (committed), `unlinked` (origin removed,
        row not yet deleted), `done`."""


NO_HOOKS = Hooks()
