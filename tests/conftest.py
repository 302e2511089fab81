"""Fixtures every test shares: the check after each test that it left no thread and no
ExifTool process of its own running (like watchdog's suite; a test that leaves one on
purpose says so with @pytest.mark.leaves(...)), and the real daemon started and closed
for a test. An Ingestor over a test's config is helpers.ingestor."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import POLL
from tests.system.daemon_harness import Daemon

STOPPING_SECONDS = 10.0  # how long a thread or process told to stop may take to be gone


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "leaves(threads=(), exiftool=0, why=...): the test leaves threads whose names start "
        "so, or this many ExifTool processes, running on purpose, for the reason `why` "
        "(the leak check passes them over)",
    )


def exiftool_children() -> set[int]:
    """The pids of this process's children that run exiftool (under setpriv and sh, as
    media.exiftool starts it: the pid is the same through their execs)."""
    pids: set[int] = set()
    me = os.getpid()
    try:
        tasks = os.listdir(f"/proc/{me}/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/{me}/task/{tid}/children") as f:
                children = f.read().split()
        except OSError:  # the thread ended while we looked
            continue
        for child in children:
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:  # exited (and reaped) meanwhile
                continue
            if any(os.path.basename(a) == b"exiftool" for a in argv):
                pids.add(int(child))
    return pids


def _describe(threads: set[threading.Thread], pids: set[int]) -> str:
    frames = sys._current_frames()
    lines = []
    for t in sorted(threads, key=lambda t: t.name):
        lines.append(f"thread {t.name!r} (daemon={t.daemon}), at:")
        frame = frames.get(t.ident or -1)
        if frame is not None:
            lines += ["  " + ln for ln in "".join(traceback.format_stack(frame)).splitlines()]
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            argv = "(gone)"
        lines.append(f"exiftool process {pid}: {argv}")
    return "\n".join(lines)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a thread or an ExifTool process running that was not there
    before it: what is stopping gets STOPPING_SECONDS to be gone (polled, and once more
    after a garbage collection, which runs the finalizers of what nothing refers to)."""
    threads_before = set(threading.enumerate())
    pids_before = exiftool_children()
    yield
    marker = request.node.get_closest_marker("leaves")
    if marker is not None and not marker.kwargs.get("why"):
        pytest.fail(
            "@pytest.mark.leaves(...) says why=... the test leaves something running", pytrace=False
        )
    allowed: tuple[str, ...] = tuple(marker.kwargs.get("threads", ())) if marker else ()
    allowed_pids: int = int(marker.kwargs.get("exiftool", 0)) if marker else 0

    def leaked() -> tuple[set[threading.Thread], set[int]]:
        threads = {
            t
            for t in threading.enumerate()
            if t not in threads_before
            and t.is_alive()
            and not (allowed and t.name.startswith(allowed))
        }
        pids = exiftool_children() - pids_before
        return threads, (pids if len(pids) > allowed_pids else set())

    end = time.monotonic() + STOPPING_SECONDS
    collected = False
    while True:
        threads, pids = leaked()
        if not threads and not pids:
            return
        if not collected:
            gc.collect()
            collected = True
            continue
        if time.monotonic() > end:
            break
        time.sleep(POLL)
    pytest.fail(
        f"{request.node.nodeid} left running what it started:\n" + _describe(threads, pids),
        pytrace=False,
    )


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """start_daemon(cfg_path, **kw): the real `mediasortd run` (daemon_harness.Daemon, `kw`
    to it) with its files in tmp_path, once it said READY=1; all closed when the test
    ends."""
    daemons: list[Daemon] = []

    def start(cfg_path: Path, **kw: Any) -> Daemon:
        d = Daemon(tmp_path, cfg_path, **kw)
        daemons.append(d)
        d.ready()
        return d

    yield start
    for d in daemons:
        d.close()
