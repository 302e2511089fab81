"""The watcher's candidates under the daemon's own trouble: with no descriptor left
(a real RLIMIT_NOFILE in a child process, so EMFILE is real), a settling file stays a
candidate and is handed on once descriptors are back; before, it was forgotten as if it
had vanished and waited for the next full rescan (300 s by default)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import os, resource, sys
from daemon.inbox.scan import Candidates
inbox = os.fsencode(sys.argv[1])
path = os.path.join(inbox, b"IMG_1.JPG")
now = [0.0]
c = Candidates(0.5, 100, lambda: now[0], root_of=lambda p: inbox, grace=60.0)
c.add(path)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
held = len(os.listdir("/proc/self/fd")) - 1  # less the listing's own descriptor
out = []
for free in (0, 1):  # no descriptor left, then one
    resource.setrlimit(resource.RLIMIT_NOFILE, (held + free, hard))
    for t in range(1, 6):
        now[0] += 1.0
        out.append(len(c.due()))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    out.append(len(c))
now[0] += 10.0
c.due()
now[0] += 1.0
print(out, c.due() == [path])
"""


def test_a_candidate_survives_emfile(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "IMG_1.JPG").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100 + b"\xff\xd9")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(inbox)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "[0,",
        "0,",
        "0,",
        "0,",
        "0,",
        "1,",
        "0,",
        "0,",
        "0,",
        "0,",
        "0,",
        "1]",
        "True",
    ], out.stdout
