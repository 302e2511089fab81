"""Writers the daemon cannot ask the kernel about, against the real `mediasortd run`: the
daemon as the user nobody WITHOUT CAP_LEASE, the inbox files another user's (so no read
lease can be had): `status` says the inbox is filed on the settle guess and why; a file
seen being written is not taken before its writer closes it, however long it stalls.
And a writer that closes and reopens between chunks: a file that looks cut short (JPEG,
MOV) waits until it is whole, or is filed as it is after incomplete_grace_seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from daemon.app.notify import Listener
from tests.helpers import cli, holds, idle, jpeg_bytes, wait_for
from tests.system.users import (
    WRITER_UID,
    UserDaemon,
    as_user,
    finish,
    half_written,
    release,
    user_jobs,
    user_setup,
    writer,
)

BASE = datetime(2022, 3, 4, 5, 6, 7)


class NoLeaseDaemon(UserDaemon):
    """The real `mediasortd run` as nobody, with no capability at all (and a
    NOTIFY_SOCKET it can write to)."""

    def __init__(self, base: Path, cfg_path: Path) -> None:
        self.notify = Listener(base / "notify.sock")
        os.chmod(self.notify.path, 0o777)
        super().__init__(base, cfg_path, lease=False, env={"NOTIFY_SOCKET": str(self.notify.path)})

    def close(self) -> None:
        super().close()
        self.notify.close()


def test_no_lease_is_said_in_status(shared_dir: Path) -> None:
    """No CAP_LEASE and another user's file: the photo is filed on the settle rule, and
    `status` (text and --json) says the inbox is filed on the settle guess, and why."""
    cfg, cfg_path = user_setup(shared_dir, inbox_tmpfs=False, settle_seconds=0.3)
    data = jpeg_bytes(BASE, 3, size=32)
    d = NoLeaseDaemon(shared_dir, cfg_path)
    try:
        d.ready()
        w = writer(cfg.inbox / "one.jpg", data, 1, "stall")
        assert finish(w) == 0
        wait_for(
            lambda: not (cfg.inbox / "one.jpg").exists() and idle(cfg),
            30,
            lambda: f"filed: {user_jobs(cfg)}\n{d.text()[-2000:]}",
        )
        assert [p.read_bytes() for p in cfg.library.glob("20*/*")] == [data]
        assert "ingest.no_lease" in d.text()

        def said() -> bool:
            return "settle guess" in cli(cfg_path, "status").stdout

        wait_for(said, 10, lambda: cli(cfg_path, "status").stdout)
        out = cli(cfg_path, "status").stdout
        line = next(ln for ln in out.splitlines() if ln.startswith("SETTLE"))
        assert "no read lease" in line and ("denied" in line or "not permitted" in line), line
        info = json.loads(cli(cfg_path, "status", "--json").stdout)
        assert info["daemon"]["no_lease"], info["daemon"]
        wait_for(
            lambda: any(
                "no read lease" in ln and "settle guess" in ln for ln in d.notify.seen("STATUS=")
            ),
            10,
            lambda: f"STATUS= to say it: {d.notify.seen('STATUS=')}",
        )
    finally:
        d.close()


def test_an_open_stalled_writer_without_lease_is_waited_for(shared_dir: Path) -> None:
    """No lease possible, a writer of another user (invisible to /proc) writes half the
    photo and stalls 3 x settle with the file open: inotify saw the writes and no close,
    so nothing is filed (`status` says why); once it closes, the whole photo is filed."""
    settle = 0.4
    cfg, cfg_path = user_setup(shared_dir, inbox_tmpfs=False, settle_seconds=settle)
    data = jpeg_bytes(BASE, 9, size=96)
    d = NoLeaseDaemon(shared_dir, cfg_path)
    try:
        d.ready()
        path = cfg.inbox / "open.jpg"
        w, stalled = half_written(path, data)
        wait_for(
            lambda: any(
                ln.startswith("oldest") and "open.jpg" in ln and "not closed since" in ln
                for ln in cli(cfg_path, "status").stdout.splitlines()
            ),
            30,
            lambda: cli(cfg_path, "status").stdout + d.text()[-2000:],
        )

        def nothing_taken() -> bool:
            assert path.exists() and not list(cfg.library.glob("20*/*")), "filed mid-write"
            assert not user_jobs(cfg), "taken mid-write"
            return True

        holds(nothing_taken, stalled + 3 * settle - time.monotonic(), "the stall")
        assert release(w) == 0
        wait_for(
            lambda: not path.exists() and idle(cfg),
            30,
            lambda: f"the photo to be filed: {user_jobs(cfg)}\n{d.text()[-3000:]}",
        )
        assert [p.read_bytes() for p in cfg.library.glob("20*/*")] == [data]
    finally:
        d.close()


# -- a writer that closes and reopens between chunks, pausing longer than settle --------
# (no writer in the pause: no lease, no /proc look, no event can tell; the content can)


def _cut_and_resumed(base: Path, name: str, data: bytes, cut: int) -> None:
    """Another user writes data[:cut], closes, pauses 3 x settle, reopens and appends the
    rest: only the whole file is ever filed, once; while it pauses `status` says it
    looks cut short."""
    settle = 0.4
    cfg, cfg_path = user_setup(base, inbox_tmpfs=False, settle_seconds=settle)
    d = UserDaemon(base, cfg_path)  # with CAP_LEASE, as under the unit
    try:
        d.ready()
        path = cfg.inbox / name
        w = subprocess.Popen(
            as_user(WRITER_UID, [sys.executable, "-c", CUT_WRITER, str(path), str(cut)]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert w.stdin is not None and w.stdout is not None
        w.stdin.write(data)
        w.stdin.close()
        assert w.stdout.readline().strip() == b"paused"  # first part written and closed
        paused = time.monotonic()
        wait_for(
            lambda: any(
                ln.startswith("oldest") and name in ln and "looks cut short" in ln
                for ln in cli(cfg_path, "status").stdout.splitlines()
            ),
            30,
            lambda: cli(cfg_path, "status").stdout + d.text()[-2000:],
        )
        holds(
            lambda: path.exists() and not user_jobs(cfg),  # the pause: nothing taken
            paused + 3 * settle - time.monotonic(),
            "taken while cut short",
        )
        (base / "go").touch()
        assert w.wait(30) == 0
        w.stdout.close()
        wait_for(
            lambda: not path.exists() and idle(cfg),
            30,
            lambda: f"the file to be filed: {user_jobs(cfg)}\n{d.text()[-3000:]}",
        )
        assert [p.read_bytes() for p in cfg.library.glob("20*/*")] == [data]
        assert len(user_jobs(cfg)) == 1 and "filed_cut_short" not in d.text()
    finally:
        d.close()


CUT_WRITER = """
import os, sys, time
path, cut = sys.argv[1], int(sys.argv[2])
data = sys.stdin.buffer.read()
with open(path, "wb") as f:
    f.write(data[:cut])
print("paused", flush=True)
go = os.path.join(os.path.dirname(os.path.dirname(path)), "go")
while not os.path.exists(go):  # the test says when to go on
    time.sleep(0.02)
with open(path, "ab") as f:
    f.write(data[cut:])
"""


def test_a_jpeg_written_in_two_sittings_is_filed_whole(shared_dir: Path) -> None:
    data = jpeg_bytes(BASE, 11, size=96)
    _cut_and_resumed(shared_dir, "two.jpg", data, len(data) // 2)


def test_a_mov_written_in_two_sittings_is_filed_whole(shared_dir: Path) -> None:
    mov = shared_dir / "made.mov"
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=1:size=160x120:rate=10",
            "-c:v",
            "mpeg4",
            "-metadata",
            "creation_time=2022-03-04T05:06:07Z",
            str(mov),
        ],
        check=True,
    )
    data = mov.read_bytes()
    mov.unlink()
    _cut_and_resumed(shared_dir, "two.mov", data, len(data) // 2)


def test_a_file_left_cut_short_is_filed_after_the_grace(shared_dir: Path) -> None:
    """A truncated JPEG that never gets its end: it waits (`status` says so), then once
    unchanged for incomplete_grace_seconds it is filed as it is, with a warning: never
    lost, never stuck."""
    cfg, cfg_path = user_setup(
        shared_dir, inbox_tmpfs=False, settle_seconds=0.3, incomplete_grace_seconds=2.0
    )
    data = jpeg_bytes(BASE, 13, size=64)
    data = data[: len(data) * 2 // 3]
    d = UserDaemon(shared_dir, cfg_path)
    try:
        d.ready()
        path = cfg.inbox / "cut.jpg"
        w = writer(path, data, 1, "stall")
        assert finish(w) == 0
        written = time.monotonic()
        wait_for(
            lambda: "looks cut short" in cli(cfg_path, "status").stdout,
            30,
            lambda: cli(cfg_path, "status").stdout,
        )
        wait_for(
            lambda: not path.exists() and idle(cfg),
            30,
            lambda: f"filed after the grace: {user_jobs(cfg)}\n{d.text()[-2000:]}",
        )
        assert time.monotonic() - written >= 2.0 - 0.3  # not before the grace (less settle)
        assert [p.read_bytes() for p in cfg.library.glob("20*/*")] == [data]
        assert "watcher.filed_cut_short" in d.text()
    finally:
        d.close()
