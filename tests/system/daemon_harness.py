"""Run the real `mediasortd run` in a subprocess with a NOTIFY_SOCKET the test binds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from daemon.app.notify import Listener
from tests.helpers import ROOT, wait_for


class Daemon:
    def __init__(
        self,
        tmp: Path,
        cfg_path: Path,
        watchdog_usec: int = 1_000_000,
        env: dict[str, str] | None = None,
    ) -> None:
        self.notify = Listener(tmp / f"notify-{len(os.listdir(tmp))}.sock")
        self.log = open(tmp / "daemon.log", "ab")  # noqa: SIM115 (the daemon's life long)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(cfg_path), "run"],
            cwd=ROOT,
            env={
                **os.environ,
                "NOTIFY_SOCKET": str(self.notify.path),
                "WATCHDOG_USEC": str(watchdog_usec),
                **(env or {}),
            },
            stdout=self.log,
            stderr=self.log,
        )

    def ready(self, timeout: float = 30) -> None:
        wait_for(
            lambda: self.notify.seen("READY=1") or self.proc.poll() is not None, timeout, "READY=1"
        )
        assert self.proc.poll() is None, f"daemon exited with {self.proc.returncode}"

    def status(self) -> str:
        lines = self.notify.seen("STATUS=")
        return lines[-1] if lines else ""

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.notify.close()
        self.log.close()
