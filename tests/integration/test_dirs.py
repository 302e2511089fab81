"""Folders made at once by several workers (threads), on a real filesystem: nobody fails
because another made the folder first, and nobody returns from `make_dirs` before the
folder's entry is durable (its parent fsynced), even when another worker made it."""

from __future__ import annotations

import os
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.files import dirs
from daemon.files.dirs import make_dirs
from tests.helpers import holds, ingestor, make_config, wait_for

ROUNDS = 40
WORKERS = 6


def _at_once(n: int, work: Any) -> list[BaseException]:
    """Run `work()` in `n` threads released together by a barrier: the errors raised."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - collected, the test reports them
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_workers_make_the_same_folders_at_once(tmp_path: Path) -> None:
    """Many rounds of six threads making the same three new levels at once."""
    for i in range(ROUNDS):
        target = os.fsencode(tmp_path / f"r{i}" / "library" / "2024-06")
        errors = _at_once(WORKERS, lambda t=target: make_dirs(t, 0o750))
        assert errors == []
        assert os.path.isdir(target)


def test_workers_start_on_an_empty_library_at_once(tmp_path: Path) -> None:
    """Six workers (an Ingestor each, as the daemon's) start at once on a library that does
    not exist yet: each makes library/.staging; none fails because another made it first
    (it did, about one run in six: FileExistsError / FileNotFoundError)."""
    for i in range(ROUNDS // 4):
        (tmp_path / f"r{i}").mkdir()
        cfg, _ = make_config(tmp_path / f"r{i}")

        def start(cfg: Any = cfg) -> None:
            with ingestor(cfg):
                pass

        assert _at_once(WORKERS, start) == []
        assert cfg.staging.is_dir()


class _FsyncWatch(types.ModuleType):
    """`os` for files.dirs: the real one, with each fsync of a folder recorded by path
    and, for the folder named `gate`, held until the test lets it go."""

    def __init__(self, gate: bytes) -> None:
        super().__init__("os")
        self.gate = gate
        self.synced: list[bytes] = []
        self.waiting = threading.Event()
        self.go = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fsync(self, fd: int) -> None:
        path = os.fsencode(os.readlink(f"/proc/self/fd/{fd}"))
        if path == self.gate:
            self.waiting.set()
            assert self.go.wait(30), "the test never let the fsync go"
        os.fsync(fd)
        self.synced.append(path)


@pytest.fixture
def watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_FsyncWatch]:
    (tmp_path / "library").mkdir()
    w = _FsyncWatch(os.fsencode(tmp_path / "library"))
    monkeypatch.setattr(dirs, "os", w)
    yield w
    w.go.set()


def test_a_folder_another_worker_is_making_is_durable_before_use(
    tmp_path: Path, watch: _FsyncWatch
) -> None:
    """Worker A makes library/2024-06 and is held before fsyncing library; worker B then
    finds the folder there. B must not return (and link a file into it) until the
    folder's entry is durable: the old make_dirs returned at once (it exists)."""
    library = os.fsencode(tmp_path / "library")
    month = os.path.join(library, b"2024-06")
    a = threading.Thread(target=make_dirs, args=(month, 0o750))
    a.start()
    try:
        assert watch.waiting.wait(30)
        assert os.path.isdir(month)  # made, its entry not yet durable
        returned = threading.Event()

        def worker_b() -> None:
            make_dirs(month, 0o750)
            returned.set()

        b = threading.Thread(target=worker_b)
        b.start()
        holds(
            lambda: not returned.is_set(),
            0.5,
            "B returned while the folder's entry was not durable",
        )
        assert watch.synced.count(library) == 0
    finally:
        watch.go.set()
        a.join()
    wait_for(returned.is_set, what="B returns once A fsynced the library")
    b.join()
    assert watch.synced.count(library) == 1  # A's, once: B had nothing more to do
    make_dirs(month, 0o750)  # known durable now: no fsync at all
    assert watch.synced.count(library) == 1


def test_a_folder_found_existing_has_its_parent_fsynced_once(
    tmp_path: Path, watch: _FsyncWatch
) -> None:
    """A folder this process did not make (another process, or before a crash, made it
    and may not have fsynced its parent) gets its parent fsynced before first use, once
    per process: not once per file."""
    watch.go.set()
    library = os.fsencode(tmp_path / "library")
    month = os.path.join(library, b"2024-06")
    os.mkdir(month)  # made by someone else
    for _ in range(3):
        make_dirs(month, 0o750)
    assert watch.synced.count(library) == 1
    os.rename(month, os.path.join(library, b"aside"))  # replaced by someone: a new one
    os.mkdir(month)  # (the old one kept: its inode number is not reused)
    make_dirs(month, 0o750)
    assert watch.synced.count(library) == 2
