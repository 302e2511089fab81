"""The only systemd import: sd_notify messages (READY, RELOADING, STATUS, WATCHDOG,
STOPPING).
Without $NOTIFY_SOCKET (not under systemd) every call is a no-op, so the daemon runs the
same in the foreground. `Listener` is systemd's end of the socket, for running the daemon
under a harness (the tests, the benchmark): the daemon itself never uses it."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from systemd import daemon as _sd  # type: ignore[import-untyped]


def send(*lines: str) -> None:
    """Fire and forget: a message that cannot be sent (no descriptor left for the
    socket, systemd busy) never stops the daemon; the next one says the same."""
    if os.environ.get("NOTIFY_SOCKET"):
        try:
            _sd.notify("\n".join(lines))
        except OSError:
            pass


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec=), or None when disabled."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


class Listener:
    """An AF_UNIX datagram socket at `path` that collects sd_notify messages, as systemd
    does (with the time each came, perf_counter), read by a thread until close()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.closed.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            t = time.perf_counter()
            self.messages.extend((t, m) for m in data.decode().split("\n"))

    def first(self, prefix: str) -> float | None:
        """When the first message that starts with `prefix` came, or None."""
        for t, m in list(self.messages):
            if m.startswith(prefix):
                return t
        return None

    def seen(self, prefix: str) -> list[str]:
        """Every message so far that starts with `prefix`, in order."""
        return [m for _, m in list(self.messages) if m.startswith(prefix)]

    def close(self) -> None:
        self.closed.set()
        self.thread.join()
        self.sock.close()
        self.path.unlink(missing_ok=True)
