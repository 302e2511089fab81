"""Pure naming rules: where a file goes in the library, and which inbox names are candidates.

Nothing here touches the disk. Every name built here is relative, has no `..`, no NUL
and no leading dot, whatever the metadata said: crafted tags never reach a path.
"""

from __future__ import annotations

import fnmatch
import re
import string
from datetime import datetime

DEFAULT_LAYOUT = "{year}-{month}/{year}-{month}-{day} {hour}.{minute}.{second}{ext}"
FIELDS = frozenset({"year", "month", "day", "hour", "minute", "second", "ext"})
NAME_MAX = 255

# Names still being written by some tool: ignored until renamed.
PARTIAL_PATTERNS = ("*.part", "*.crdownload", "*.tmp", "*.download", "*.!sync",
                    ".syncthing.*", "~$*", ".*")

_EXT_RE = re.compile(r"^\.[a-z0-9]{1,10}$")


def validate_layout(layout: str) -> str | None:
    """Return why `layout` is unusable, or None when it is fine."""
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(layout) if f is not None]
    except ValueError as e:
        return f"not a valid format string: {e}"
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}"
    if not layout.endswith("{ext}"):
        return "must end with {ext}"
    if layout.startswith("/") or any(p in ("", ".", "..") or p.startswith(".")
                                     for p in layout.split("/")):
        return "must be a relative path with no empty, '.', '..' or hidden parts"
    return None


def clean_ext(ext: str) -> str:
    """A safe, lower-case extension with its dot, or '' when `ext` is not one."""
    ext = ext.lower()
    if ext and not ext.startswith("."):
        ext = "." + ext
    return ext if _EXT_RE.match(ext) else ""


def library_path(layout: str, captured: datetime, ext: str) -> str:
    """The preferred library path (relative) for a file captured at `captured`."""
    return layout.format(
        year=f"{captured.year:04d}", month=f"{captured.month:02d}", day=f"{captured.day:02d}",
        hour=f"{captured.hour:02d}", minute=f"{captured.minute:02d}",
        second=f"{captured.second:02d}", ext=clean_ext(ext),
    )


def numbered(path: str, n: int) -> str:
    """`path` with `.n` before its extension (n=0 is `path` itself): `a/b.jpg` -> `a/b.2.jpg`."""
    if n == 0:
        return path
    head, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f".{n}" + (f".{ext}" if ext else "")
    out = stem + suffix
    return f"{head}/{out}" if head else out


def numbered_name(name: bytes, n: int) -> bytes:
    """A raw file name with `.n` before its extension, trimmed to fit NAME_MAX."""
    if n == 0:
        return name[:NAME_MAX]
    stem, dot, ext = name.rpartition(b".")
    if not dot or not stem:
        stem, ext = name, b""
    suffix = b"." + str(n).encode() + (b"." + ext if ext else b"")
    if len(suffix) > NAME_MAX // 2:
        suffix = b"." + str(n).encode()
    return stem[: NAME_MAX - len(suffix)] + suffix


def is_partial(name: str) -> bool:
    """True for names that tools use while a file is still being written."""
    return any(fnmatch.fnmatchcase(name, p) for p in PARTIAL_PATTERNS)
