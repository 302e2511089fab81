"""Capture date and file type: the rules, and `Reader`, which joins them to ExifTool (level 3).

`decide` is the pure rule book that turns ExifTool's tags into a MediaInfo; `Reader` (one
per worker) asks `exiftool.ExifTool` and applies it (a dated camera JPEG is read
in-process by `quickmeta`, which gives the same tags, and ExifTool is not asked). Invariant: a bad file never crashes a
worker. Whatever a file does to ExifTool (an error, a hang, a crash), `Reader.describe`
returns NotMedia with the reason; only a missing exiftool raises (ToolError).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Self

from ..model import MediaInfo, NotMedia
from ..rules.layout import clean_ext
from . import quickmeta
from .exiftool import ExifTool, ExifToolFailed, _arg_line

# ---------------------------------------------------------------------------------------
# The rules: which files are media, and when they were captured.

# Camera RAW formats: media whatever MIME type an ExifTool version gives them.
_RAW_TYPES = frozenset({"3FR", "ARI", "ARQ", "ARW", "CR2", "CR3", "CRW", "DCR", "DNG", "ERF",
                        "FFF", "GPR", "IIQ", "K25", "KDC", "MEF", "MOS", "MRW", "NEF", "NRW",
                        "ORF", "ORI", "PEF", "RAF", "RAW", "RW2", "RWL", "SR2", "SRF", "SRW",
                        "X3F"})
# Pictures and movies whose MIME type is not image/* or video/* (ExifTool's %mimeType and
# its runtime choices, 12.57): decided by rule. Photoshop documents (PSD, PSB) are
# pictures people keep beside their photos; a Sinar CaptureShop RAW (CS1) and a Capture
# One package (EIP, a RAW inside) are camera pictures; MXF (application/mxf) and
# RealMedia (application/vnd.rn-realmedia*) are movies. Not media although a picture or
# sound: PSDT (a Photoshop template), MIFF (ImageMagick's working format), DICOM
# (medical scans), EPS/AI/WMF (vector drawings), and audio in video containers.
_OTHER_IMAGES = frozenset({"PSD", "PSB", "CS1", "EIP"})
_VIDEO_TYPES = frozenset({"MXF", "M2T", "M2TS", "CRM", "R3D", "RM", "RMVB"})
# image/* or video/* MIME types that are not a photo or a movie: drawings, icons, scanned
# documents, metadata-only files, and sound in a QuickTime or MPEG-4 container (ExifTool
# gives M4A/M4B/F4A/F4B/AAX audio/* at run time, but its static table says video/*).
_NOT_PHOTOS = frozenset({"SVG", "DWG", "ICO", "CUR", "DJVU", "EXV", "VNT", "M4A", "M4B",
                         "M4P", "F4A", "F4B", "AAX"})
# An AVIF image sequence (animated AVIF, major brand 'avis') is MP4 to ExifTool 12.57
# ("Unknown (avis)"): a picture, named .avif.
_AVIF_SEQUENCE = re.compile(r"(?:.*\()?avis\)?", re.ASCII)
# Extensions that name the same content: a JPEG called .jpeg keeps .jpeg.
_SAME_EXT = (frozenset({"jpg", "jpeg", "jpe", "jfif"}), frozenset({"tif", "tiff"}),
             frozenset({"heic", "heif", "hif"}), frozenset({"mts", "m2ts", "m2t", "ts"}),
             frozenset({"mpg", "mpeg", "mpe"}), frozenset({"mov", "qt"}),
             frozenset({"3gp", "3gpp"}))

_STAMP = re.compile(r"\s*(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})"
                    r"(?:[ T]+(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d+))?)?)?"
                    r"\s*(Z|[+-]\d{1,2}:?\d{2})?(?:\s*(DST))?\s*", re.ASCII)
_OFFSET = re.compile(r"\s*(?:Z|([+-])(\d{1,2}):?(\d{2}))\s*", re.ASCII)
_EPOCH_DAYS = ((1904, 1, 1), (1970, 1, 1))  # what empty QuickTime and Unix times read as
_FIRST_YEAR = 1826  # the oldest surviving photograph
_JPEG_EXTS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})


@dataclass(frozen=True)
class _Rule:
    tag: str  # "Group:Tag"; "Track*:Tag" tries Track1, Track2, ... in order; "*:Tag" any
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
    precision: int = 3  # what the value names: _DAY, _MINUTE or _SECOND


_DAY, _MINUTE, _SECOND = 1, 2, 3
_FUTURE = "in the future (after now + 1 day)"
_ORIGINAL, _DIGITIZED, _MODIFIED = "OffsetTimeOriginal", "OffsetTimeDigitized", "OffsetTime"
# In order, the first valid value wins; then the file name, then _LATE, then the mtime.
# A winner that names only a day or a minute gives way to the first later value of more
# precision that agrees with it (same day, same minute): see _refine.
_EARLY = (
    # The standard EXIF capture dates.
    _Rule("Composite:SubSecDateTimeOriginal", False, "high", _ORIGINAL),
    _Rule("ExifIFD:DateTimeOriginal", False, "high", _ORIGINAL),
    _Rule("IFD0:DateTimeOriginal", False, "high", _ORIGINAL),
    _Rule("Composite:SubSecCreateDate", False, "high", _DIGITIZED),
    _Rule("ExifIFD:CreateDate", False, "high", _DIGITIZED),
    # QuickTime / MP4 (the EXIF of videos).
    _Rule("Keys:CreationDate", False, "high"),
    _Rule("QuickTime:CreateDate", True, "high", _ORIGINAL),
    _Rule("Track*:MediaCreateDate", True, "high", _ORIGINAL),
    _Rule("Track*:TrackCreateDate", True, "high", _ORIGINAL),
    # Other groups' capture dates: containers whose zone is known first, then any group's
    # DateTimeOriginal (RAW headers and maker notes: CanonRaw, SigmaRaw, KyoceraRaw,
    # Casio, PictureInfo, Reconyx, Kodak, DV, FLIR, ...), then any group's creation date,
    # then a PNG's last-modification time.
    _Rule("H264:DateTimeOriginal", False, "high"),  # AVCHD camcorders, with their zone
    _Rule("RIFF:DateTimeOriginal", False, "high"),  # AVI from cameras (IDIT)
    _Rule("QuickTime:DateTimeOriginal", False, "medium"),
    _Rule("UserData:DateTimeOriginal", False, "medium"),
    _Rule("UserData:ContentCreateDate", False, "medium"),
    _Rule("ItemList:ContentCreateDate", False, "medium"),
    _Rule("Matroska:DateTimeOriginal", True, "medium"),  # DateUTC: often the muxing date
    _Rule("ASF:CreationDate", True, "medium"),
    _Rule("MXF:CreateDate", True, "medium"),  # SMPTE 377M timestamps are UTC
    _Rule("PNG:CreationTime", False, "medium"),  # tEXt "Creation Time"
    _Rule("*:DateTimeOriginal", False, "high"),
    *(_Rule("*:" + name, False, "medium") for name in (
        "CreateDate", "CreationDate", "DateCreated", "CreationTime", "DatePictureTaken")),
    _Rule("PNG:ModifyDate", True, "medium"),  # tIME (UTC by the PNG spec): last of these
    # XMP and IPTC: written by editors as often as by cameras.
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
# Tags named by a rule of their own, and groups whose dates are not "any group's"
# capture date: XMP/IPTC (ranked below), ExifTool's own and the file system's, EXIF's
# IFDs (their capture dates are the rules above; anything else there is not one).
_NAMED = frozenset(r.tag for r in (*_EARLY, *_LATE) if not r.tag.startswith("*"))
_NOT_ANY_GROUP = re.compile(r"XMP(-.*)?|IPTC\d*|Composite|System|ExifTool|IFD\d+|"
                            r"ExifIFD|SubIFD\d*|InteropIFD|GPS|Track\d+", re.ASCII)
# The Live Photo identifier: in the video (Keys) and in the still's Apple maker note
# (ExifTool 12.19 and later call it MediaGroupUUID, before that ContentIdentifier).
_CONTENT_ID_TAGS = ("Keys:ContentIdentifier", "Apple:MediaGroupUUID", "Apple:ContentIdentifier")

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
        return (_FIRST_YEAR <= wall.year
                and (wall.year, wall.month, wall.day) not in _EPOCH_DAYS)

    def too_late(self, wall: datetime) -> bool:
        """Years past next year are in the future whatever their zone (and would
        overflow a conversion near year 9999)."""
        return wall.year > self.limit_wall.year + 1

    def local(self, instant: datetime, offset: int | None) -> tuple[datetime, int] | str:
        """An aware `instant` as wall time in `offset`, else in the zone; _FUTURE if so."""
        if instant > self.limit:
            return _FUTURE
        local = instant.astimezone(_fixed(offset) if offset is not None else self.tz)
        delta = local.utcoffset() or timedelta()
        return local.replace(tzinfo=None), int(delta.total_seconds())

    def wall(self, wall: datetime, offset: int | None) -> tuple[datetime, int | None] | str:
        """A wall time kept as written; _FUTURE if so."""
        if offset is None and wall > self.limit_wall:
            return _FUTURE
        if offset is not None and wall.replace(tzinfo=_fixed(offset)) > self.limit:
            return _FUTURE
        return wall, offset


def _from_value(raw: str, rule: _Rule, tags: dict[str, Any],
                clock: _Clock) -> tuple[datetime, int | None, int] | str | None:
    """(wall time, offset, precision) `raw` stands for under `rule`; _FUTURE for a date
    past now + 1 day; None if it is no valid date."""
    m = _STAMP.fullmatch(raw)
    if not m:
        return None
    y, mo, d, h, mi, s, frac, zone, dst = m.groups()
    try:
        wall = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                        int((frac or "0")[:6].ljust(6, "0")))
    except ValueError:
        return None
    offset = _parse_offset(zone) if zone else None
    if (zone and offset is None) or (dst and offset is None) or not clock.sensible(wall):
        return None
    if offset is not None and dst:
        offset += 3600  # AVCHD: the standard zone plus a daylight-saving flag
    if clock.too_late(wall):
        return _FUTURE
    precision = _SECOND if s is not None else _MINUTE if mi is not None else _DAY
    side = None
    if rule.offset_tag:
        side = next((_parse_offset(str(v)) for k, v in tags.items()
                     if k.endswith(":" + rule.offset_tag)), None)
    got: tuple[datetime, int | None] | str
    if rule.utc or zone == "Z":
        # An instant: QuickTime times are UTC by its spec, and "Z" says so outright.
        got = clock.local(wall.replace(tzinfo=_fixed(offset or 0)), side)
    else:
        got = clock.wall(wall, offset if offset is not None else side)
    return got if isinstance(got, str) else (got[0], got[1], precision)


def _keys(tags: dict[str, Any], pattern: str, seen: set[str]) -> list[str]:
    group, _, name = pattern.partition(":")
    if group == "*":  # any group's, unless named by a rule or ranked elsewhere
        return [k for k in tags if k.endswith(":" + name) and k not in _NAMED
                and k not in seen and not _NOT_ANY_GROUP.fullmatch(k.rpartition(":")[0])]
    if not group.endswith("*"):
        return [pattern] if pattern in tags else []
    track = re.compile(re.escape(group[:-1]) + r"(\d+):" + re.escape(name), re.ASCII)
    found = [(int(m[1]), k) for k in tags if (m := track.fullmatch(k))]
    return [k for _, k in sorted(found)]


def _from_tags(rules: tuple[_Rule, ...], tags: dict[str, Any], clock: _Clock,
               skipped: list[str]) -> Iterator[_Found]:
    """Every valid value under `rules`, best first; each future one noted in `skipped`."""
    seen: set[str] = set()
    for rule in rules:
        for key in _keys(tags, rule.tag, seen):
            seen.add(key)
            raw = tags[key]
            if not isinstance(raw, (str, int, float)):
                continue
            got = _from_value(str(raw), rule, tags, clock)
            if isinstance(got, str):
                skipped.append(f"{key} = {str(raw)!r}: {got}")
            elif got is not None:
                yield _Found(got[0], got[1], key, str(raw), rule.confidence, got[2])


def _from_name(name: str, clock: _Clock, skipped: list[str]) -> Iterator[_Found]:
    stem = os.path.splitext(name.rsplit("/", 1)[-1])[0]
    for pattern in _NAME_PATTERNS:
        for m in pattern.finditer(stem):
            got = _name_match(m.groupdict(), stem.startswith("PXL_"), clock)
            if isinstance(got, str):
                skipped.append(f"filename {m[0]!r}: {got}")
            elif got:
                g = m.groupdict()
                precision = _SECOND if g.get("h") or g.get("epoch") else _DAY
                yield _Found(got[0], got[1], "filename", m[0], "medium", precision)


def _name_match(g: dict[str, str | None], pixel: bool,
                clock: _Clock) -> tuple[datetime, int | None] | str | None:
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
    if clock.too_late(wall):
        return _FUTURE
    if pixel and g.get("h"):
        return clock.local(wall.replace(tzinfo=UTC), None)  # Pixel phones name files in UTC
    return clock.wall(wall, None)


def _agrees(coarse: _Found, fine: _Found) -> bool:
    """Whether `fine` names a time within the day or minute `coarse` names (in
    `coarse`'s zone when both zones are known)."""
    when = fine.captured
    if coarse.utc_offset is not None and fine.utc_offset is not None:
        when += timedelta(seconds=coarse.utc_offset - fine.utc_offset)
    if coarse.precision == _DAY:
        return when.date() == coarse.captured.date()
    return when.replace(second=0, microsecond=0) == coarse.captured.replace(
        second=0, microsecond=0)


def _refine(best: _Found, later: Iterator[_Found]) -> _Found:
    """A date-only or minute-only winner gives way to the first later value of more
    precision that agrees with it; the zone it had is kept when the later one has none."""
    if best.precision == _SECOND:
        return best  # (the later values are not even looked at)
    for other in later:
        if best.precision == _SECOND:
            break
        if other.precision > best.precision and _agrees(best, other):
            offset = other.utc_offset if other.utc_offset is not None else best.utc_offset
            best = dataclasses.replace(other, utc_offset=offset)
    return best


def _from_mtime(mtime_ns: int, clock: _Clock) -> _Found:
    try:
        instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=mtime_ns // 1000)
        if instant > clock.limit:
            raise OverflowError("an mtime in the future")
        local = instant.astimezone(clock.tz)
    except OverflowError:  # an impossible or future mtime: nothing else is left
        local = clock.now.astimezone(clock.tz)
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
    real = str(tags.get("File:FileTypeExtension") or ftype).lower()
    if ftype == "MP4" and _AVIF_SEQUENCE.fullmatch(str(tags.get("QuickTime:MajorBrand") or "")):
        ftype, mime, real = "AVIF", "image/avif", "avif"
    if ftype in _NOT_PHOTOS:
        return NotMedia(f"not a photo or video (ExifTool says: {ftype}, {mime or 'no MIME type'})")
    if mime.startswith("video/") or ftype in _VIDEO_TYPES:
        kind = "video"
    elif mime.startswith("image/") or ftype in _RAW_TYPES or ftype in _OTHER_IMAGES:
        kind = "image"
    else:
        return NotMedia(f"not a photo or video (ExifTool says: {ftype}, {mime or 'no MIME type'})")
    if error:
        return NotMedia(f"unreadable {ftype} file{said}")
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
    skipped: list[str] = []
    ranked = itertools.chain(_from_tags(_EARLY, tags, clock, skipped),
                             _from_name(original_name, clock, skipped),
                             _from_tags(_LATE, tags, clock, skipped))
    first = next(ranked, None)
    passed = list(skipped)  # the future values that ranked above the winner
    found = _refine(first, ranked) if first is not None else _from_mtime(mtime_ns, clock)
    return MediaInfo(kind=kind, file_type=ftype, mime=mime, ext=ext, captured=found.captured,
                     utc_offset=found.utc_offset, date_source=found.source, date_raw=found.raw,
                     confidence=found.confidence, content_id=_content_id(tags),
                     date_skipped="; ".join(passed) or None, make=_camera(tags, "Make"),
                     model=_camera(tags, "Model"))


def _content_id(tags: dict[str, Any]) -> str | None:
    """The Live Photo identifier the file carries (video or still), if any."""
    for tag in _CONTENT_ID_TAGS:
        value = tags.get(tag)
        if isinstance(value, str) and value.strip() and len(value) <= 256:
            return value.strip()
    return None


_CAMERA_GROUPS = ("IFD0", "Keys", "UserData", "ItemList", "QuickTime")


def _camera(tags: dict[str, Any], name: str) -> str:
    """The camera's Make or Model: EXIF's, else a video container's, else any group's."""
    keys = [f"{g}:{name}" for g in _CAMERA_GROUPS] + sorted(
        k for k in tags if k.endswith(":" + name))
    for key in keys:
        value = tags.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) \
                and str(value).strip():
            return str(value).strip()
    return ""


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
