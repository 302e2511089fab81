"""The real `mediasortd run` in a subprocess, watching a real inbox with inotify:
READY/STATUS/WATCHDOG/STOPPING over a notify socket the test binds, every way a file
arrives, slow writers, bursts, SIGTERM with work in flight, SIGKILL and replay."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from daemon.config import Config
from tests.helpers import (
    check_consistent,
    holds,
    idle,
    jpeg_bytes,
    make_config,
    tree_hashes,
    wait_for,
    write,
)
from tests.system.daemon_harness import Daemon

BASE = datetime(2021, 5, 6, 7, 8, 9)


Setup = tuple[Config, Callable[..., Daemon]]  # the config, start(**Daemon's options)


@pytest.fixture
def setup(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> Setup:
    cfg, cfg_path = make_config(tmp_path, settle_seconds=0.3)
    return cfg, functools.partial(start_daemon, cfg_path)


def library_count(cfg: Config) -> int:
    return len(tree_hashes(cfg.library))


def inbox_empty(cfg: Config) -> bool:
    return not any(p.is_file() for p in cfg.inbox.rglob("*"))


def test_lifecycle_ready_status_watchdog_stopping(setup: Setup) -> None:
    cfg, start = setup
    d = start()
    assert d.status().startswith(f"STATUS=watching {cfg.inbox}: 0 queued, 0 filed")
    wait_for(lambda: len(d.notify.seen("WATCHDOG=1")) >= 2, 10, "watchdog pings")
    write(cfg.inbox / "a.jpg", jpeg_bytes(BASE, 1))
    wait_for(lambda: "1 filed" in d.status(), 15, "STATUS with 1 filed")
    assert d.terminate() == 0
    assert d.notify.seen("STOPPING=1")


def test_every_way_a_file_arrives(setup: Setup, tmp_path: Path) -> None:
    """cp (close-after-write), mv from the same filesystem (move-in), a hard link
    (creation only), a folder moved in, nested folders."""
    cfg, start = setup
    start()
    outside = tmp_path / "outside"
    files: dict[Path, bytes] = {}
    data = {i: jpeg_bytes(BASE + timedelta(seconds=i), i) for i in range(6)}
    # copy
    files[write(cfg.inbox / "copied.jpg", data[0])] = data[0]
    # move in
    moved = write(outside / "moved.jpg", data[1])
    os.rename(moved, cfg.inbox / "moved.jpg")
    files[cfg.inbox / "moved.jpg"] = data[1]
    # hard link (no close-after-write event in the inbox)
    linked = write(outside / "linked.jpg", data[2])
    os.link(linked, cfg.inbox / "linked.jpg")
    files[cfg.inbox / "linked.jpg"] = data[2]
    # a whole folder moved in (its files bring no events of their own)
    folder = outside / "trip"
    files[write(folder / "x.jpg", data[3])] = data[3]
    files[write(folder / "deeper" / "y.jpg", data[4])] = data[4]
    os.rename(folder, cfg.inbox / "trip")
    files = {
        cfg.inbox / p.relative_to(outside) if outside in p.parents else p: d
        for p, d in files.items()
    }
    # nested folders created in place
    files[write(cfg.inbox / "a" / "b" / "c" / "z.jpg", data[5])] = data[5]
    wait_for(lambda: library_count(cfg) == 6, 20, "six files filed")
    wait_for(lambda: inbox_empty(cfg), 10, "inbox emptied")
    wait_for(lambda: list(cfg.inbox.iterdir()) == [], 10, "dropped folders removed")
    assert cfg.inbox.is_dir()
    assert linked.exists(), "the other name of a hard link is never touched"
    wait_for(lambda: idle(cfg), 30, "every job finished")  # the last commit follows the disk
    check_consistent(cfg, files, move=True)


def test_slow_writer_is_never_taken_half_written(setup: Setup) -> None:
    """Chunks with pauses shorter than the settle time, through an open descriptor."""
    cfg, start = setup
    d = start()
    data = jpeg_bytes(BASE, 42, size=256)
    target = cfg.inbox / "slow.jpg"
    with open(target, "wb") as f:
        for i in range(0, len(data), max(1, len(data) // 12)):
            f.write(data[i : i + max(1, len(data) // 12)])
            f.flush()
            os.fsync(f.fileno())
            deadline = time.monotonic() + 0.2  # paced writer: pause < settle_seconds (0.3)
            while time.monotonic() < deadline:
                assert library_count(cfg) == 0, "taken while still being written"
    wait_for(lambda: library_count(cfg) == 1, 15, "the slow file filed")
    [(_name, h)] = tree_hashes(cfg.library).items()
    from tests.helpers import sha

    assert h == sha(data)
    assert "1 filed" in d.status() or wait_for(lambda: "1 filed" in d.status(), 5)


def test_open_for_writing_waits_even_when_quiet(setup: Setup) -> None:
    """A writer that keeps the file open and pauses longer than settle_seconds: not taken
    until it closes (we can see it in /proc)."""
    cfg, start = setup
    start()
    data = jpeg_bytes(BASE, 43)
    with open(cfg.inbox / "held.jpg", "wb") as f:
        f.write(data[:100])
        f.flush()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert library_count(cfg) == 0
        f.write(data[100:])
    wait_for(lambda: library_count(cfg) == 1, 15, "filed after close")


def test_partial_names_wait_until_renamed(setup: Setup) -> None:
    cfg, start = setup
    start()
    part = write(cfg.inbox / "IMG_1.jpg.part", jpeg_bytes(BASE, 44))
    hidden = write(cfg.inbox / ".IMG_2.jpg", jpeg_bytes(BASE, 45))
    write(cfg.inbox / "other.jpg", jpeg_bytes(BASE, 46))
    wait_for(lambda: library_count(cfg) == 1, 15)
    assert part.exists() and hidden.exists()
    os.rename(part, cfg.inbox / "IMG_1.jpg")
    wait_for(lambda: library_count(cfg) == 2, 15, "the renamed file filed")


def test_files_that_arrived_while_stopped_and_sigterm_with_work_in_flight(setup: Setup) -> None:
    cfg, start = setup
    files = {
        write(cfg.inbox / f"early{i}.jpg", jpeg_bytes(BASE, 100 + i)): jpeg_bytes(BASE, 100 + i)
        for i in range(5)
    }
    d = start()
    wait_for(lambda: library_count(cfg) == 5, 20, "files from before start filed")
    for i in range(60):
        data = jpeg_bytes(BASE, 200 + i)
        files[write(cfg.inbox / f"late{i}.jpg", data)] = data
    wait_for(lambda: library_count(cfg) > 5, 20, "filing under way")
    assert d.terminate() == 0  # with work in flight
    assert d.notify.seen("STOPPING=1")
    start()
    wait_for(lambda: library_count(cfg) == 65, 30, "everything filed after restart")
    wait_for(lambda: inbox_empty(cfg), 10)
    wait_for(lambda: idle(cfg), 30, "every job finished")  # the last commit follows the disk
    check_consistent(cfg, files, move=True)


def test_sigkill_while_filing_then_restart_replays(setup: Setup) -> None:
    cfg, start = setup
    files = {}
    for round_ in range(3):
        d = start()
        for i in range(40):
            n = round_ * 40 + i
            data = jpeg_bytes(BASE, 300 + n)
            files[write(cfg.inbox / f"r{n}.jpg", data)] = data
        wait_for(lambda: library_count(cfg) > round_ * 40, 20)  # noqa: B023 (this round's)
        d.kill()
    start()
    wait_for(lambda: library_count(cfg) == 120, 40, "all 120 filed")
    wait_for(lambda: inbox_empty(cfg), 10)
    wait_for(lambda: idle(cfg), 30, "every job finished")  # the last commit follows the disk
    check_consistent(cfg, files, move=True)


@pytest.mark.slow
def test_burst_of_files_queue_bounded_memory_flat(tmp_path: Path) -> None:
    """A burst far larger than the queue: all filed, the queue stays bounded (the daemon
    falls back to rescans), memory stays flat."""
    n = int(os.environ.get("MEDIASORTD_BURST", "20000"))
    cfg, cfg_path = make_config(tmp_path, settle_seconds=0.2, queue_size=200, workers=2)
    d = Daemon(tmp_path, cfg_path)
    try:
        d.ready()
        base_rss = d.rss_kib()
        staging = tmp_path / "burst"
        staging.mkdir()
        for i in range(n):  # distinct content, one per second
            (staging / f"b{i:05d}.jpg").write_bytes(jpeg_bytes(BASE + timedelta(seconds=i), i))
        os.rename(staging, cfg.inbox / "burst")
        peak = 0
        max_queued = 0

        def done() -> bool:
            nonlocal peak, max_queued
            peak = max(peak, d.rss_kib())
            line = d.status()
            if ": " in line:
                queued = int(line.split(": ")[1].split(" ")[0].replace(",", ""))
                max_queued = max(max_queued, queued)
            return f"{n:,} filed" in line

        wait_for(done, 900, f"{n} files filed")
        assert max_queued <= 10 * 200 + 200, max_queued
        assert peak - base_rss < 60_000, f"RSS grew by {peak - base_rss} KiB"
        assert d.terminate() == 0
    finally:
        d.close()


def test_a_file_appended_to_forever_is_never_taken_and_status_says_why(setup: Setup) -> None:
    cfg, start = setup
    start()
    from tests.helpers import cli

    target = write(cfg.inbox / "growing.jpg", jpeg_bytes(BASE, 77))
    stop = threading.Event()

    def append() -> None:  # paced appends, as a recorder would; in a thread of its own so
        while not stop.wait(0.1):  # that the status command below never pauses them
            with open(target, "ab") as g:
                g.write(b"\0")

    appender = threading.Thread(target=append)
    appender.start()
    said = ""

    def not_taken() -> bool:  # and, until it does, ask status why it waits
        nonlocal said
        if not said:
            out = cli(Path(cfg.source), "status").stdout
            said = out if "still changing" in out else ""
        return library_count(cfg) == 0

    try:
        holds(not_taken, 3.0, "taken while still growing")  # ten settle periods of growth
    finally:
        stop.set()
        appender.join()
    assert "growing.jpg" in said and "still changing" in said, said
    wait_for(lambda: library_count(cfg) == 1, 15, "filed once it stopped growing")
