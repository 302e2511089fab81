"""The only systemd import: sd_notify messages (READY, STATUS, WATCHDOG, STOPPING).

Without $NOTIFY_SOCKET (not under systemd) every call is a no-op, so the daemon runs the
same in the foreground."""

from __future__ import annotations

import os

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
