"""mediasortd with one of its fsyncs taken out: proof that the power-cut tests have teeth.

    MEDIASORTD_TEST_SKIP_FSYNC=WHICH python -m tests.faults.nofsync [mediasortd arguments]

WHICH is one of:
  copy     the fsync of the staged copy's bytes (files.copy.copy_and_hash)
  staging  the fsync of the staging folder after the copy (Ingestor._copy)
  place    the fsync of the destination folder after linking the copy (Ingestor._place,
           _place_all)
  move     both fsyncs after moving a rejected entry as it is (Ingestor._move_entry,
           and files.moves.move_at's own across filesystems)
  retire   the fsync of the source folder after removing the source (Ingestor._retire,
           _retire_all)

Folder fsyncs are skipped only while that one step runs (a thread-local flag: the
workers are threads), so every other step keeps theirs. Every folder fsync of the
package is `files.dirs.fsync_dir` (make_dirs and move_at call it too), whatever name a
caller imported it under, so `files.dirs`' own `os` is the one patched; a file's bytes
are fsynced only by `files.copy`, whose `os` is patched for "copy". The daemon's code is
not changed; this is a monkeypatch before `daemon.app.cli.main`.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import types
from typing import Any

from daemon.app import cli
from daemon.engine import ingest
from daemon.files import copy, dirs

# The single-job step and its lockstep form (Ingestor.take_many) both lose the fsync.
STEP_OF = {"staging": ("_copy",), "place": ("_place", "_place_all"), "move": ("_move_entry",),
           "retire": ("_retire", "_retire_all")}
_in_step = threading.local()


def _skip_folder_fsyncs_in(methods: tuple[str, ...]) -> None:
    for method in methods:
        _flag_while_running(method)
    setattr(dirs, "os", _OsWithoutStepFsync("os"))  # noqa: B010 - files.dirs' name only


def _flag_while_running(method: str) -> None:
    original = getattr(ingest.Ingestor, method)

    def wrapped(self: ingest.Ingestor, *args: Any) -> Any:
        _in_step.depth = getattr(_in_step, "depth", 0) + 1  # _place_all may call _place
        try:
            return original(self, *args)
        finally:
            _in_step.depth -= 1

    setattr(ingest.Ingestor, method, wrapped)


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
