"""Folders made at once by several workers (threads), on a real filesystem: nobody fails
because another made the folder first."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from daemon.files.dirs import make_dirs
from tests.helpers import ingestor, make_config

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
