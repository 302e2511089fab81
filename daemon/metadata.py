"""Capture date and file type: the rules, and `Reader`, which joins them to ExifTool (level 3).

`decide` is the pure rule book that turns ExifTool's tags into a MediaInfo; `Reader` (one
per worker) asks `exiftool.ExifTool` and applies it (a dated camera JPEG is read
in-process by `quickmeta`, which gives the same tags, and ExifTool is not asked). Invariant: a bad file never crashes a
worker. Whatever a file does to ExifTool (an error, a hang, a crash), `Reader.describe`
returns NotMedia with the reason; only a missing exiftool raises (ToolError).
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Self

from . import quickmeta
from .exiftool import ExifTool, ExifToolFailed, _arg_line
from .layout import clean_ext
from .model import MediaInfo, NotMedia

# ---------------------------------------------------------------------------------------
# The rules: which files are media, and when they were captured.

# Camera RAW formats: media whatever MIME type an ExifTool version gives them.
_RAW_TYPES = frozenset({"3FR", "ARI", "ARQ", "ARW", "CR2", "CR3", "CRW", "DCR", "DNG", "ERF",
                        "FFF", "GPR", "IIQ", "K25", "KDC", "MEF", "MOS", "MRW", "NEF", "NRW",
                        "ORF", "ORI", "PEF", "RAF", "RAW", "RW2", "RWL", "SR2", "SRF", "SRW",
                        "X3F"})
_VIDEO_TYPES = frozenset({"MXF", "M2T", "M2TS", "CRM", "R3D"})  # some MIME types are odd
_NOT_PHOTOS = frozenset({"SVG", "DWG", "ICO", "CUR", "DJVU"})  # image/*, but not photos
# Extensions that name the same content: a JPEG called .jpeg keeps .jpeg.
_SAME_EXT = (frozenset({"jpg", "jpeg", "jpe", "jfif"}), frozenset({"tif", "tiff"}),
             frozenset({"heic", "heif", "hif"}), frozenset({"mts", "m2ts", "m2t", "ts"}),
             frozenset({"mpg", "mpeg", "mpe"}), frozenset({"mov", "qt"}),
             frozenset({"3gp", "3gpp"}))

_STAMP = re.compile(r"\s*(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})"
                    r"(?:[ T]+(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d+))?)?)?"
                    r"\s*(Z|[+-]\d{1,2}:?\d{2})?\s*", re.ASCII)
_OFFSET = re.compile(r"\s*(?:Z|([+-])(\d{1,2}):?(\d{2}))\s*", re.ASCII)
_EPOCH_DAYS = ((1904, 1, 1), (1970, 1, 1))  # what empty QuickTime and Unix times read as
_FIRST_YEAR = 1826  # the oldest surviving photograph
_JPEG_EXTS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})


@dataclass(frozen=True)
class _Rule:
    tag: str  # "Group:Tag"; "Track*:Tag" tries Track1, Track2, ... in order
    utc: bool  # the value is UTC (QuickTime): converted to local wall time
    confidence: str
    offset_tag: str | None = None  # the tag that holds its zone, in any group


@dataclass(frozen=True)
class _Found:
    captured: datetime
    utc_offset: int | None
    source: str
    raw: str
    confidence: str


_ORIGINAL, _DIGITIZED, _MODIFIED = "OffsetTimeOriginal", "OffsetTimeDigitized", "OffsetTime"
# In order, the first valid value wins; then the file name, then _LATE, then the mtime.
_EARLY = (
    _Rule("Composite:SubSecDateTimeOriginal", False, "high", _ORIGINAL),
    _Rule("ExifIFD:DateTimeOriginal", False, "high", _ORIGINAL),
    _Rule("IFD0:DateTimeOriginal", False, "high", _ORIGINAL),
    _Rule("Composite:SubSecCreateDate", False, "high", _DIGITIZED),
    _Rule("ExifIFD:CreateDate", False, "high", _DIGITIZED),
    _Rule("Keys:CreationDate", False, "high"),
    _Rule("QuickTime:CreateDate", True, "high", _ORIGINAL),
    _Rule("Track*:MediaCreateDate", True, "high", _ORIGINAL),
    _Rule("Track*:TrackCreateDate", True, "high", _ORIGINAL),
    _Rule("H264:DateTimeOriginal", False, "high"),  # AVCHD camcorders
    _Rule("RIFF:DateTimeOriginal", False, "high"),  # AVI from cameras
    _Rule("QuickTime:DateTimeOriginal", False, "medium"),
    _Rule("UserData:DateTimeOriginal", False, "medium"),
    _Rule("UserData:ContentCreateDate", False, "medium"),
    _Rule("ItemList:ContentCreateDate", False, "medium"),
    _Rule("Matroska:DateTimeOriginal", True, "medium"),  # often the muxing date
    _Rule("ASF:CreationDate", True, "medium"),
    _Rule("PNG:CreationTime", False, "medium"),
    _Rule("XMP-exif:DateTimeOriginal", False, "medium"),
    _Rule("XMP-photoshop:DateCreated", False, "medium"),
    _Rule("Composite:DateTimeCreated", False, "medium"),  # IPTC DateCreated + TimeCreated
    _Rule("XMP-xmp:CreateDate", False, "medium"),
    _Rule("IPTC:DateCreated", False, "medium"),
)
_LATE = (
    _Rule("Composite:SubSecModifyDate", False, "medium", _MODIFIED),
    _Rule("IFD0:ModifyDate", False, "medium", _MODIFIED),
)

# Dates in file names, in order. A name with a date and no time gets 00:00:00.
_NAME_PATTERNS = (
    # IMG_20200101_123456, 20200101_123456, PXL_20210101_123456789, Screenshot_20190521-104552
    re.compile(r"(?<!\d)(?P<y>\d{4})(?P<mo>\d\d)(?P<d>\d\d)[_\-T ]?"
               r"(?P<h>\d\d)(?P<mi>\d\d)(?P<s>\d\d)(?P<ms>\d{3})?(?!\d)", re.ASCII),
    # Screenshot 2019-05-21 at 10.45.52 PM, signal-2021-01-01-12-30-00-123, 2021-01-01 12.30.00
    re.compile(r"(?<!\d)(?P<y>\d{4})[-_.](?P<mo>\d\d)[-_.](?P<d>\d\d)(?:[ _\-T]+|[ _]+at[ _]+)"
               r"(?P<h>\d{1,2})[-_.:h]?(?P<mi>\d\d)[-_.:m]?(?P<s>\d\d)(?:[-_.](?P<ms>\d{3}))?"
               r"(?:[\s\u202f]*(?P<ampm>[AaPp][Mm]))?(?!\d)", re.ASCII),
    # FB_IMG_1609459200000: Unix time in milliseconds
    re.compile(r"FB_IMG_(?P<epoch>\d{13})(?!\d)", re.ASCII),
    # IMG-20200101-WA0001, VID-20200101-WA0001 (WhatsApp)
    re.compile(r"(?<!\d)(?P<y>\d{4})(?P<mo>\d\d)(?P<d>\d\d)-WA\d", re.ASCII),
    # holiday 2021-01-01
    re.compile(r"(?<!\d)(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)(?!\d)", re.ASCII),
)


def _fixed(offset: int) -> tzinfo:
    return timezone(timedelta(seconds=offset))


def _parse_offset(text: str) -> int | None:
    """'+09:00', '-0530', 'Z' -> seconds east; None for anything else."""
    m = _OFFSET.fullmatch(text)
    if not m:
        return None
    if not m[1]:
        return 0
    hours, minutes = int(m[2]), int(m[3])
    if hours > 18 or minutes > 59:
        return None
    return (-1 if m[1] == "-" else 1) * (hours * 3600 + minutes * 60)


class _Clock:
    """The configured zone and `now`: turns values into wall times, refuses the future."""

    def __init__(self, tz: tzinfo, now: datetime) -> None:
        self.tz = tz
        self.now = now if now.tzinfo else now.replace(tzinfo=tz)
        self.limit = self.now + timedelta(days=1)
        self.limit_wall = self.limit.astimezone(tz).replace(tzinfo=None)

    def sensible(self, wall: datetime) -> bool:
        return (_FIRST_YEAR <= wall.year <= self.limit_wall.year + 1
                and (wall.year, wall.month, wall.day) not in _EPOCH_DAYS)

    def local(self, instant: datetime, offset: int | None) -> tuple[datetime, int] | None:
        """An aware `instant` as wall time in `offset`, else in the zone; None if future."""
        if instant > self.limit:
            return None
        local = instant.astimezone(_fixed(offset) if offset is not None else self.tz)
        delta = local.utcoffset() or timedelta()
        return local.replace(tzinfo=None), int(delta.total_seconds())

    def wall(self, wall: datetime, offset: int | None) -> tuple[datetime, int | None] | None:
        """A wall time kept as written; None if future."""
        if offset is None and wall > self.limit_wall:
            return None
        if offset is not None and wall.replace(tzinfo=_fixed(offset)) > self.limit:
            return None
        return wall, offset


def _from_value(raw: str, rule: _Rule, tags: dict[str, Any],
                clock: _Clock) -> tuple[datetime, int | None] | None:
    """The wall time and offset `raw` stands for under `rule`, or None if not valid."""
    m = _STAMP.fullmatch(raw)
    if not m:
        return None
    y, mo, d, h, mi, s, frac, zone = m.groups()
    try:
        wall = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                        int((frac or "0")[:6].ljust(6, "0")))
    except ValueError:
        return None
    offset = _parse_offset(zone) if zone else None
    if (zone and offset is None) or not clock.sensible(wall):
        return None
    side = None
    if rule.offset_tag:
        side = next((_parse_offset(str(v)) for k, v in tags.items()
                     if k.endswith(":" + rule.offset_tag)), None)
    if rule.utc or zone == "Z":
        # An instant: QuickTime times are UTC by its spec, and "Z" says so outright.
        return clock.local(wall.replace(tzinfo=_fixed(offset or 0)), side)
    return clock.wall(wall, offset if offset is not None else side)


def _keys(tags: dict[str, Any], pattern: str) -> list[str]:
    group, _, name = pattern.partition(":")
    if not group.endswith("*"):
        return [pattern] if pattern in tags else []
    track = re.compile(re.escape(group[:-1]) + r"(\d+):" + re.escape(name), re.ASCII)
    found = [(int(m[1]), k) for k in tags if (m := track.fullmatch(k))]
    return [k for _, k in sorted(found)]


def _from_tags(rules: tuple[_Rule, ...], tags: dict[str, Any], clock: _Clock) -> _Found | None:
    for rule in rules:
        for key in _keys(tags, rule.tag):
            raw = tags[key]
            if isinstance(raw, (str, int, float)) and (got := _from_value(str(raw), rule,
                                                                          tags, clock)):
                return _Found(got[0], got[1], key, str(raw), rule.confidence)
    return None


def _from_name(name: str, clock: _Clock) -> _Found | None:
    stem = os.path.splitext(name.rsplit("/", 1)[-1])[0]
    for pattern in _NAME_PATTERNS:
        for m in pattern.finditer(stem):
            got = _name_match(m.groupdict(), stem.startswith("PXL_"), clock)
            if got:
                return _Found(got[0], got[1], "filename", m[0], "medium")
    return None


def _name_match(g: dict[str, str | None], pixel: bool,
                clock: _Clock) -> tuple[datetime, int | None] | None:
    if g.get("epoch"):
        instant = datetime.fromtimestamp(int(g["epoch"] or 0) / 1000, UTC)
        return clock.local(instant, None) if clock.sensible(instant) else None
    hour, ampm = int(g.get("h") or 0), (g.get("ampm") or "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    try:
        wall = datetime(int(g["y"] or 0), int(g["mo"] or 0), int(g["d"] or 0), hour,
                        int(g.get("mi") or 0), int(g.get("s") or 0), int(g.get("ms") or 0) * 1000)
    except ValueError:
        return None
    if not clock.sensible(wall):
        return None
    if pixel and g.get("h"):
        return clock.local(wall.replace(tzinfo=UTC), None)  # Pixel phones name files in UTC
    return clock.wall(wall, None)


def _from_mtime(mtime_ns: int, clock: _Clock) -> _Found:
    try:
        instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=mtime_ns // 1000)
        local = instant.astimezone(clock.tz)
    except OverflowError:
        local = clock.now.astimezone(clock.tz)  # an impossible mtime: nothing else is left
    delta = local.utcoffset() or timedelta()
    return _Found(local.replace(tzinfo=None), int(delta.total_seconds()), "mtime",
                  str(mtime_ns), "low")


def _content(tags: dict[str, Any], original_name: str) -> tuple[str, str, str, str] | NotMedia:
    """(kind, file type, MIME type, library extension) by content, or why it is not media."""
    ftype = str(tags.get("File:FileType") or "")
    mime = str(tags.get("File:MIMEType") or "")
    error = str(tags.get("ExifTool:Error") or "")
    said = f" (ExifTool says: {error})" if error else ""
    if not ftype:
        return NotMedia("empty file" if error == "File is empty" else
                        f"unrecognised file type{said}")
    if mime.startswith("video/") or ftype in _VIDEO_TYPES:
        kind = "video"
    elif (mime.startswith("image/") or ftype in _RAW_TYPES) and ftype not in _NOT_PHOTOS:
        kind = "image"
    else:
        return NotMedia(f"not a photo or video (ExifTool says: {ftype}, {mime or 'no MIME type'})")
    if error:
        return NotMedia(f"unreadable {ftype} file{said}")
    real = str(tags.get("File:FileTypeExtension") or ftype).lower()
    own = os.path.splitext(original_name)[1][1:].lower()
    agrees = own == real or any(own in same and real in same for same in _SAME_EXT)
    ext = (clean_ext(own) if agrees else "") or clean_ext(real)
    if not ext:
        return NotMedia(f"no usable file extension for {ftype} content")
    return kind, ftype, mime, ext


def decide(tags: dict[str, Any], original_name: str, mtime_ns: int, tz: tzinfo,
           now: datetime) -> MediaInfo | NotMedia:
    """What ExifTool's `tags` say the file is and when it was captured (pure).

    `original_name` is the inbox name (for a date in it and the extension), `tz` the zone
    for UTC values and the mtime, `now` (aware; naive means wall time in `tz`) the
    reference for dates in the future.
    """
    what = _content(tags, original_name)
    if isinstance(what, NotMedia):
        return what
    kind, ftype, mime, ext = what
    clock = _Clock(tz, now)
    found = (_from_tags(_EARLY, tags, clock) or _from_name(original_name, clock)
             or _from_tags(_LATE, tags, clock) or _from_mtime(mtime_ns, clock))
    return MediaInfo(kind=kind, file_type=ftype, mime=mime, ext=ext, captured=found.captured,
                     utc_offset=found.utc_offset, date_source=found.source, date_raw=found.raw,
                     confidence=found.confidence)


def resolve_timezone(name: str) -> tzinfo:
    """'local' (TZ, else /etc/localtime, else UTC) or an IANA name -> a tzinfo."""
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

    def __init__(self, timezone: str = "local", exiftool: str = "exiftool",
                 timeout: float = 30.0, quick: bool = True) -> None:
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

    def describe_many(self, items: Sequence[tuple[bytes, str, int]],
                      heads: Sequence[bytes | None] | None = None
                      ) -> list[MediaInfo | NotMedia]:
        """describe() for several files, read in one ExifTool request. `heads`: what
        head_of() kept of each file's first bytes as it was copied, where the caller has
        it, so that the file is not read again."""
        now = datetime.now(UTC)
        quick = [self._quick(*item, now, heads[i] if heads else None)
                 for i, item in enumerate(items)]
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

    def _quick(self, path: bytes, name: str, mtime_ns: int, now: datetime,
               head: bytes | None = None) -> MediaInfo | None:
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
                _arg_line(path)
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
                todo = todo[len(e.done):]
                # A death may be someone else's kill: read that file once more.
                if e.timed_out or bad in retried:
                    answers[bad] = NotMedia(f"ExifTool failed on this file: {e}")
                    todo = todo[1:]
                retried.add(bad)
        return [answers[i] for i in range(len(paths))]
