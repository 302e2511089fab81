"""A hung filesystem elsewhere on the machine (an NFS server gone, a FUSE server stuck)
must not freeze the daemon: asking which inbox files are open for writing reads /proc,
and a stat through /proc/PID/fd reaches the file's own filesystem, where a request to a
frozen server sleeps uninterruptibly (SIGKILL does not end it, nor systemd's watchdog).
The powerfs server is frozen for real while another process holds a file on it open for
writing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.powercut import PowerFS, unavailable
from tests.helpers import ROOT

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]

ASK = """
import os, sys
from daemon.inbox.scan import open_for_writing
st = os.stat(sys.argv[1])
print(sorted(open_for_writing({(st.st_dev, st.st_ino)})), flush=True)
"""

HOLD = """
import sys
a, b = open(sys.argv[1], "ab"), open(sys.argv[2], "ab")
print("open", flush=True)
sys.stdin.read()  # holds both open until the test closes its end (or kills it)
"""


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[PowerFS]:
    with PowerFS(tmp_path / "powerfs") as f:
        f.mount()
        yield f


def test_a_frozen_mount_elsewhere_does_not_freeze_the_writer_check(
    fs: PowerFS, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ours = inbox / "photo.jpg"
    ours.write_bytes(b"x")
    # one writer on the frozen mount, one on our inbox file
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(fs.mnt / "elsewhere.bin"), str(ours)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    asker: subprocess.Popen[bytes] | None = None
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"open\n"
        fs.freeze()
        asker = subprocess.Popen(
            [sys.executable, "-c", ASK, str(ours)],
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            asker.wait(30)
        except subprocess.TimeoutExpired:
            pass
        finished = asker.poll() is not None
    finally:
        fs.cut(writer)  # a frozen request ends only when the server dies
        if asker is not None:
            asker.wait(30)
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.close()
        writer.stdout.close()
    assert finished, "asking which files are open for writing hung on a frozen mount"
    out, err = asker.communicate()
    assert asker.returncode == 0, err
    st = ours.stat()
    assert out.decode().strip() == str([(st.st_dev, st.st_ino)])
