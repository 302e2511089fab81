"""mediasortd with one of its fsyncs taken out: proof that the power-cut tests have teeth.

    MEDIASORTD_TEST_SKIP_FSYNC=WHICH python -m tests.faults.nofsync [mediasortd arguments]

WHICH is one of:
  copy     the fsync of the staged copy's bytes (files.copy.copy_and_hash)
  staging  any folder fsync while a source is copied (Steps.copy_all)
  place    the fsync of the destination folder after linking the copy (Steps.place_all)
  move     both fsyncs after moving a rejected entry as it is (Steps._move_entry,
           and files.moves.move_at's own across filesystems)
  retire   the fsync of the source folder after removing the source (Steps.retire_all)

Each step is written once, for a batch (a single job is a batch of one), so one method
per step loses its fsync. Folder fsyncs are skipped only while that one step runs (a
thread-local flag: the workers are threads), so every other step keeps theirs. Every
folder fsync of the package is `files.dirs.fsync_dir` (make_dirs and move_at call it
too), whatever name a caller imported it under, so `files.dirs`' own `os` is the one
patched; a file's bytes are fsynced only by `files.copy`, whose `os` is patched for
"copy". The daemon's code is not changed; this is a monkeypatch before
`daemon.app.cli.main`.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import types
from typing import Any

from daemon.app import cli
from daemon.engine import steps
from daemon.files import copy, dirs

STEP_OF = {
    "staging": "copy_all",
    "place": "place_all",
    "move": "_move_entry",
    "retire": "retire_all",
}
_in_step = threading.local()


def _skip_folder_fsyncs_in(method: str) -> None:
    _flag_while_running(method)
    setattr(dirs, "os", _OsWithoutStepFsync("os"))  # noqa: B010 - files.dirs' name only


def _flag_while_running(method: str) -> None:
    original = getattr(steps.Steps, method)

    def wrapped(self: steps.Steps, *args: Any) -> Any:
        _in_step.depth = getattr(_in_step, "depth", 0) + 1
        try:
            return original(self, *args)
        finally:
            _in_step.depth -= 1

    setattr(steps.Steps, method, wrapped)


class _OsWithoutFileFsync(types.ModuleType):
    """`os` for files.copy, whose fsync does nothing to regular files (folders still work)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def fsync(fd: int) -> None:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.fsync(fd)


class _OsWithoutStepFsync(types.ModuleType):
    """`os` for files.dirs, whose fsync does nothing while the thread runs the step."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def fsync(fd: int) -> None:
        if not getattr(_in_step, "depth", 0):
            os.fsync(fd)


def main() -> int:
    which = os.environ["MEDIASORTD_TEST_SKIP_FSYNC"]
    if which == "copy":
        setattr(copy, "os", _OsWithoutFileFsync("os"))  # noqa: B010 - files.copy's name only
    elif which in STEP_OF:
        _skip_folder_fsyncs_in(STEP_OF[which])
    else:
        raise SystemExit(f"nofsync: unknown fsync {which!r}")
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
