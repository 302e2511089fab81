"""The daemon as an unprivileged user (as under the unit) and writers of another user, for
the tests that need the kernel to tell users apart (test_safepaths, test_writers): the
real `mediasortd run` under setpriv, a config whose folders that user owns, and a writer
process the test steps through. The folder they share is the `shared_dir` fixture
(tests/system/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from daemon import config
from daemon.store import db
from tests.helpers import cli_argv, make_config, wait_for

DAEMON_UID = 65534  # nobody: the daemon's user here
WRITER_UID = 4242  # another user: its processes are invisible to the daemon's /proc look


def reachable_dir(prefix: str, needs: str) -> Path:
    """A new folder under /var/tmp that other users can reach (pytest's tmp_path is
    private to root); root only: skips, saying it `needs` root, otherwise."""
    if os.geteuid() != 0:
        pytest.skip(needs)
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    d.chmod(0o755)
    return d


def as_user(uid: int, argv: list[str], lease: bool = False) -> list[str]:
    caps = ["--inh-caps=+lease", "--ambient-caps=+lease"] if lease else []
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *caps, *argv]


class UserDaemon:
    """The real `mediasortd run` as the user nobody, with CAP_LEASE alone (as the unit
    grants it), or with no capability at all (`lease=False`); `env`: more environment."""

    def __init__(
        self, base: Path, cfg_path: Path, *, lease: bool = True, env: dict[str, str] | None = None
    ) -> None:
        self.log_path = base / "daemon.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(
            as_user(DAEMON_UID, [*cli_argv(cfg_path), "run"], lease=lease),
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=self.log,
        )

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> None:
        wait_for(lambda: "daemon.ready" in self.text(), 30, "the daemon to start")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.log.close()


def user_setup(base: Path, inbox_tmpfs: bool, **ingest: Any) -> tuple[config.Config, Path]:
    """Config, inbox (a tmpfs when asked: another filesystem than the library's),
    library and state owned by the daemon's user; the inbox writable by everyone."""
    if inbox_tmpfs:
        (base / "inbox").mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0777", "tmpfs", str(base / "inbox")],
            check=True,
        )
    cfg, cfg_path = make_config(base, **ingest)
    cfg_path.write_text(cfg_path.read_text().replace('level = "info"', 'level = "debug"'))
    for p in (cfg.library, cfg.state_dir):
        p.mkdir(exist_ok=True)
        os.chown(p, DAEMON_UID, DAEMON_UID)
    cfg.inbox.chmod(0o777)  # not sticky: the daemon removes what others wrote
    return cfg, cfg_path


def user_jobs(cfg: config.Config) -> list[tuple[bytes, str | None, str | None, bytes | None, str]]:
    conn = db.connect(cfg.catalog)
    try:
        return [
            (bytes(s), o, e, bytes(d) if d else None, st)
            for s, o, e, d, st in conn.execute(
                "SELECT source, outcome, error, dest, step FROM jobs ORDER BY id"
            )
        ]
    finally:
        conn.close()


WRITER = """
import os, sys
path, halves = sys.argv[1], int(sys.argv[2])
data = sys.stdin.buffer.read(int(sys.argv[3]))
step = -(-len(data) // halves)
reopen = sys.argv[4] == "reopen"
f = open(path, "wb")
for k in range(halves):
    if reopen and k:
        f = open(path, "ab")
    f.write(data[k * step:(k + 1) * step]); f.flush()
    if reopen:
        f.close()
    print(k, flush=True)
    if k < halves - 1:
        sys.stdin.readline()  # the test says when to go on
if not reopen:
    f.close()
"""


def writer(path: Path, data: bytes, pieces: int, mode: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        as_user(
            WRITER_UID, [sys.executable, "-c", WRITER, str(path), str(pieces), str(len(data)), mode]
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.flush()
    return proc


def half_written(path: Path, data: bytes) -> tuple[subprocess.Popen[bytes], float]:
    """A writer of another user that writes the first half of `data` to `path` and
    stalls with the file open; returns it and when it stalled."""
    w = writer(path, data, 2, "stall")
    assert w.stdout is not None and int(w.stdout.readline()) == 0  # half written, open
    return w, time.monotonic()


def release(proc: subprocess.Popen[bytes]) -> int:
    """Let a stalled writer write the rest and close; wait for it to end."""
    assert proc.stdin is not None
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    return finish(proc)


def finish(proc: subprocess.Popen[bytes]) -> int:
    """Wait for a writer to end; close its pipes."""
    code = proc.wait(30)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()
    return code


def go_on(proc: subprocess.Popen[bytes]) -> int:
    assert proc.stdin is not None and proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    return int(line)
