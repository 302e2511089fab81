"""`Reader`, one per worker: a staged file -> MediaInfo | NotMedia, by `rules.mediainfo`
on ExifTool's tags (or quickmeta's, read in-process, for a dated camera JPEG), in the zone
`resolve_timezone` reads from the configuration. Invariant: a bad file never crashes a
worker: whatever it does to ExifTool (an error, a hang, a crash), `describe` returns
NotMedia with the reason; only a missing exiftool raises (ToolError).
"""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any, Self

from ..model import MediaInfo, NotMedia
from ..rules.mediainfo import decide
from . import quickmeta
from .exiftool import ExifTool, ExifToolFailed, arg_line

_JPEG_EXTS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})


def resolve_timezone(name: str) -> tzinfo:
    """What the configured zone stands for, read here only (the Reader, the workers'
    Takeout dates, a reload): 'local' (TZ, else /etc/localtime, else UTC) or an IANA
    name -> a tzinfo."""
    if name != "local":
        return zoneinfo.ZoneInfo(name)
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return zoneinfo.ZoneInfo(env)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return zoneinfo.ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return UTC


class Reader:
    """ExifTool plus the rules, for one worker: staged file -> MediaInfo | NotMedia."""

    def __init__(
        self,
        timezone: str = "local",
        exiftool: str = "exiftool",
        timeout: float = 30.0,
        quick: bool = True,
    ) -> None:
        self.tz = resolve_timezone(timezone)
        self.quick = quick  # dated camera JPEGs read in-process (quickmeta)
        self._exiftool = ExifTool(exiftool, timeout)

    @property
    def restarts(self) -> int:
        """How many times its exiftool died or hung and was replaced."""
        return self._exiftool.restarts

    @property
    def pid(self) -> int | None:
        return self._exiftool.pid

    def describe(self, path: bytes, original_name: str, mtime_ns: int) -> MediaInfo | NotMedia:
        """What the staged file at `path` is; `original_name` is its name in the inbox."""
        return self.describe_many([(path, original_name, mtime_ns)])[0]

    def describe_many(
        self, items: Sequence[tuple[bytes, str, int]], heads: Sequence[bytes | None] | None = None
    ) -> list[MediaInfo | NotMedia]:
        """describe() for several files, read in one ExifTool request. `heads`: what
        head_of() kept of each file's first bytes as it was copied, where the caller has
        it, so that the file is not read again."""
        now = datetime.now(UTC)
        quick = [
            self._quick(*item, now, heads[i] if heads else None) for i, item in enumerate(items)
        ]
        slow = [item for item, info in zip(items, quick) if info is None]
        answers = iter(self._read([path for path, _, _ in slow]))
        out: list[MediaInfo | NotMedia] = []
        for known, (_, name, mtime_ns) in zip(quick, items):
            if known is not None:
                out.append(known)
            elif isinstance(a := next(answers), NotMedia):
                out.append(a)
            else:
                out.append(decide(a, name, mtime_ns, self.tz, now))
        return out

    def head_of(self, original_name: str) -> Callable[[memoryview], bytes] | None:
        """What describe_many can use of the first bytes of a file named so: a function
        that keeps it from the first chunk copied; None when nothing is of use."""
        if self.quick and os.path.splitext(original_name)[1].lower() in _JPEG_EXTS:
            return quickmeta.header
        return None

    def _quick(
        self, path: bytes, name: str, mtime_ns: int, now: datetime, head: bytes | None = None
    ) -> MediaInfo | None:
        """The answer for a dated camera JPEG without asking ExifTool, when sure of it
        (see quickmeta); None otherwise. `head`: the file's first bytes (read here when
        not given; a file shorter than HEAD_BYTES is all there)."""
        if self.head_of(name) is None:
            return None
        if head is None:
            try:
                with open(path, "rb", buffering=0) as f:
                    head = f.read(quickmeta.HEAD_BYTES)
            except OSError:
                return None  # ExifTool will say what is wrong with it
        tags = quickmeta.jpeg_tags(head)
        if tags is None:
            return None
        info = decide(tags, name, mtime_ns, self.tz, now)
        if isinstance(info, MediaInfo) and info.date_source in quickmeta.TRUSTED:
            return info
        return None

    def close(self) -> None:
        self._exiftool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, paths: list[bytes]) -> list[dict[str, Any] | NotMedia]:
        answers: dict[int, dict[str, Any] | NotMedia] = {}
        todo = []
        for i, path in enumerate(paths):
            try:
                arg_line(path)
                todo.append(i)
            except ValueError:
                answers[i] = NotMedia(f"path cannot be passed to ExifTool: {path!r}")
        retried: set[int] = set()
        while todo:
            try:
                for i, tags in zip(todo, self._exiftool.read([paths[i] for i in todo])):
                    answers[i] = tags
                break
            except ExifToolFailed as e:
                for i, tags in zip(todo, e.done):
                    answers[i] = tags
                bad = todo[len(e.done)]
                todo = todo[len(e.done) :]
                # A death may be someone else's kill: read that file once more.
                if e.timed_out or bad in retried:
                    answers[bad] = NotMedia(f"ExifTool failed on this file: {e}")
                    todo = todo[1:]
                retried.add(bad)
        return [answers[i] for i in range(len(paths))]
