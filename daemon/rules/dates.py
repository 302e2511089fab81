"""The date rule book (pure): which of a file's tags, or its name, or its mtime, gives its
capture date, at what precision, in which zone; the sanity bounds every date source
shares (`FIRST_YEAR`, the future past now + `FUTURE_MARGIN`). No I/O: the zone and `now`
are given (`media.metadata.resolve_timezone` says what the configured zone stands for).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

_STAMP = re.compile(
    r"\s*(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})"
    r"(?:[ T]+(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|[+-]\d{1,2}:?\d{2})?(?:\s*(DST))?\s*",
    re.ASCII,
)
_OFFSET = re.compile(r"\s*(?:Z|([+-])(\d{1,2}):?(\d{2}))\s*", re.ASCII)
_EPOCH_DAYS = ((1904, 1, 1), (1970, 1, 1))  # what empty QuickTime and Unix times read as
FIRST_YEAR = 1826  # the oldest surviving photograph
FUTURE_MARGIN = timedelta(days=1)  # a date past now + this is in the future: a wrong clock


def in_bounds(when: datetime, now: datetime) -> bool:
    """Whether an aware `when` could be a capture date: not before FIRST_YEAR (in its own
    zone), not after `now` + FUTURE_MARGIN."""
    return when.year >= FIRST_YEAR and when <= now + FUTURE_MARGIN


@dataclass(frozen=True)
class _Rule:
    tag: str  # "Group:Tag"; "Track*:Tag" tries Track1, Track2, ... in order; "*:Tag" any
    utc: bool  # the value is UTC (QuickTime): converted to local wall time
    confidence: str
    offset_tag: str | None = None  # the tag that holds its zone, in any group


@dataclass(frozen=True)
class Found:
    """A capture date: the wall time, its zone if known, and where it came from."""

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
    *(
        _Rule("*:" + name, False, "medium")
        for name in (
            "CreateDate",
            "CreationDate",
            "DateCreated",
            "CreationTime",
            "DatePictureTaken",
        )
    ),
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
_NOT_ANY_GROUP = re.compile(
    r"XMP(-.*)?|IPTC\d*|Composite|System|ExifTool|IFD\d+|"
    r"ExifIFD|SubIFD\d*|InteropIFD|GPS|Track\d+",
    re.ASCII,
)
# Dates in file names, in order. A name with a date and no time gets 00:00:00.
_NAME_PATTERNS = (
    # IMG_20200101_123456, 20200101_123456, PXL_20210101_123456789, Screenshot_20190521-104552
    re.compile(
        r"(?<!\d)(?P<y>\d{4})(?P<mo>\d\d)(?P<d>\d\d)[_\-T ]?"
        r"(?P<h>\d\d)(?P<mi>\d\d)(?P<s>\d\d)(?P<ms>\d{3})?(?!\d)",
        re.ASCII,
    ),
    # Screenshot 2019-05-21 at 10.45.52 PM, signal-2021-01-01-12-30-00-123, 2021-01-01 12.30.00
    re.compile(
        r"(?<!\d)(?P<y>\d{4})[-_.](?P<mo>\d\d)[-_.](?P<d>\d\d)(?:[ _\-T]+|[ _]+at[ _]+)"
        r"(?P<h>\d{1,2})[-_.:h]?(?P<mi>\d\d)[-_.:m]?(?P<s>\d\d)(?:[-_.](?P<ms>\d{3}))?"
        r"(?:[\s\u202f]*(?P<ampm>[AaPp][Mm]))?(?!\d)",
        re.ASCII,
    ),
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
        self.limit = self.now + FUTURE_MARGIN
        self.limit_wall = self.limit.astimezone(tz).replace(tzinfo=None)

    def sensible(self, wall: datetime) -> bool:
        return wall.year >= FIRST_YEAR and (wall.year, wall.month, wall.day) not in _EPOCH_DAYS

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


def _from_value(
    raw: str, rule: _Rule, tags: dict[str, Any], clock: _Clock
) -> tuple[datetime, int | None, int] | str | None:
    """(wall time, offset, precision) `raw` stands for under `rule`; _FUTURE for a date
    past now + 1 day; None if it is no valid date."""
    m = _STAMP.fullmatch(raw)
    if not m:
        return None
    y, mo, d, h, mi, s, frac, zone, dst = m.groups()
    try:
        wall = datetime(
            int(y),
            int(mo),
            int(d),
            int(h or 0),
            int(mi or 0),
            int(s or 0),
            int((frac or "0")[:6].ljust(6, "0")),
        )
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
        side = next(
            (_parse_offset(str(v)) for k, v in tags.items() if k.endswith(":" + rule.offset_tag)),
            None,
        )
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
        return [
            k
            for k in tags
            if k.endswith(":" + name)
            and k not in _NAMED
            and k not in seen
            and not _NOT_ANY_GROUP.fullmatch(k.rpartition(":")[0])
        ]
    if not group.endswith("*"):
        return [pattern] if pattern in tags else []
    track = re.compile(re.escape(group[:-1]) + r"(\d+):" + re.escape(name), re.ASCII)
    found = [(int(m[1]), k) for k in tags if (m := track.fullmatch(k))]
    return [k for _, k in sorted(found)]


def _from_tags(
    rules: tuple[_Rule, ...], tags: dict[str, Any], clock: _Clock, skipped: list[str]
) -> Iterator[Found]:
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
                yield Found(got[0], got[1], key, str(raw), rule.confidence, got[2])


def _from_name(name: str, clock: _Clock, skipped: list[str]) -> Iterator[Found]:
    stem = os.path.splitext(name.rsplit("/", 1)[-1])[0]
    for pattern in _NAME_PATTERNS:
        for m in pattern.finditer(stem):
            got = _name_match(m.groupdict(), stem.startswith("PXL_"), clock)
            if isinstance(got, str):
                skipped.append(f"filename {m[0]!r}: {got}")
            elif got:
                g = m.groupdict()
                precision = _SECOND if g.get("h") or g.get("epoch") else _DAY
                yield Found(got[0], got[1], "filename", m[0], "medium", precision)


def _name_match(
    g: dict[str, str | None], pixel: bool, clock: _Clock
) -> tuple[datetime, int | None] | str | None:
    if g.get("epoch"):
        instant = datetime.fromtimestamp(int(g["epoch"] or 0) / 1000, UTC)
        return clock.local(instant, None) if clock.sensible(instant) else None
    hour, ampm = int(g.get("h") or 0), (g.get("ampm") or "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    try:
        wall = datetime(
            int(g["y"] or 0),
            int(g["mo"] or 0),
            int(g["d"] or 0),
            hour,
            int(g.get("mi") or 0),
            int(g.get("s") or 0),
            int(g.get("ms") or 0) * 1000,
        )
    except ValueError:
        return None
    if not clock.sensible(wall):
        return None
    if clock.too_late(wall):
        return _FUTURE
    if pixel and g.get("h"):
        return clock.local(wall.replace(tzinfo=UTC), None)  # Pixel phones name files in UTC
    return clock.wall(wall, None)


def _agrees(coarse: Found, fine: Found) -> bool:
    """Whether `fine` names a time within the day or minute `coarse` names (in
    `coarse`'s zone when both zones are known)."""
    when = fine.captured
    if coarse.utc_offset is not None and fine.utc_offset is not None:
        when += timedelta(seconds=coarse.utc_offset - fine.utc_offset)
    if coarse.precision == _DAY:
        return when.date() == coarse.captured.date()
    return when.replace(second=0, microsecond=0) == coarse.captured.replace(second=0, microsecond=0)


def _refine(best: Found, later: Iterator[Found]) -> Found:
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


def _from_mtime(mtime_ns: int, clock: _Clock) -> Found:
    try:
        instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=mtime_ns // 1000)
        if instant > clock.limit:
            raise OverflowError("an mtime in the future")
        local = instant.astimezone(clock.tz)
    except OverflowError:  # an impossible or future mtime: nothing else is left
        local = clock.now.astimezone(clock.tz)
    delta = local.utcoffset() or timedelta()
    return Found(
        local.replace(tzinfo=None), int(delta.total_seconds()), "mtime", str(mtime_ns), "low"
    )


def capture_date(
    tags: dict[str, Any], original_name: str, mtime_ns: int, tz: tzinfo, now: datetime
) -> tuple[Found, list[str]]:
    """When the file was captured (pure), and the values in the future that ranked above
    the winner (each "tag = value: why"). `original_name` is the inbox name (for a date in
    it), `tz` the zone for UTC values and the mtime, `now` (aware; naive means wall time
    in `tz`) the reference for dates in the future."""
    clock = _Clock(tz, now)
    skipped: list[str] = []
    ranked = itertools.chain(
        _from_tags(_EARLY, tags, clock, skipped),
        _from_name(original_name, clock, skipped),
        _from_tags(_LATE, tags, clock, skipped),
    )
    first = next(ranked, None)
    passed = list(skipped)  # the future values that ranked above the winner
    found = _refine(first, ranked) if first is not None else _from_mtime(mtime_ns, clock)
    return found, passed
