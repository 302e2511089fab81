"""Times as the catalog keeps them (UTC ISO 8601 strings with milliseconds, as
journal.now() writes them, so they compare as strings) and as people type and read them
(`2h`, `today`, local wall time). Pure: no crash invariant.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^(\d+)\s*(s|sec|m|min|h|d|w)$")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def utc_iso(dt: datetime) -> str:
    """The form journal.now() writes, so times compare as strings."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")


def parse_when(text: str, now: datetime | None = None) -> str:
    """`2h`, `30m`, `7d`, `1w`, `today`, `yesterday`, `2024-06-03`, `2024-06-03 14:00`,
    or any ISO 8601 time (local time unless it has a zone) -> a UTC ISO string.
    Raises ValueError saying what is accepted."""
    now = (now or datetime.now(UTC)).astimezone()
    t = text.strip().lower()
    if m := _RELATIVE.match(t):
        return utc_iso(now - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)]))
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if t == "today":
        return utc_iso(midnight)
    if t == "yesterday":
        return utc_iso(midnight - timedelta(days=1))
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r}: not a time; use e.g. 2h, 30m, 7d, today, yesterday, "
            "2024-06-03 or '2024-06-03 14:00'"
        ) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # a naive time is local
    return utc_iso(dt)


def local_time(iso: str | None) -> str:
    """A journal time as local wall time for people: `2024-06-04 11:12:01`."""
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
