"""The real `mediasortd` on a pseudo-terminal (python's pty module), for the tests of what
a person sees there (test_terminal, test_redteam)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import ROOT, make_config


def on_terminal(cfg_path: Path, *args: str, timeout: float = 60) -> tuple[int, str]:
    """Run the real CLI with stdin, stdout and stderr on a pseudo-terminal; its exit
    status and everything it wrote (read until it closes, against a deadline)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "--config", str(cfg_path), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "120"},
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, out.decode("utf-8", "replace")


def terminal_config(tmp_path: Path) -> Path:
    """make_config, with the log format left to its default (auto)."""
    _, cfg_path = make_config(tmp_path)
    cfg_path.write_text(cfg_path.read_text().replace('format = "json"', 'format = "auto"'))
    return cfg_path
