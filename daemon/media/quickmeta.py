"""ExifTool's answer for the commonest file, read in-process: `jpeg_tags` reads the EXIF
capture-date tags of a camera or phone JPEG from its first bytes. Invariant: it answers
only when sure, else None, and the caller asks ExifTool. Reads only what it is given.

A camera or phone JPEG with an EXIF capture date is most of any library, and asking
ExifTool about it costs ~3 ms of CPU, more than everything else done per small file.
`jpeg_tags` returns the tags ExifTool would have returned for the capture-date tags
`rules.mediainfo.decide` reads first: the same names (-G1), the same raw strings, the
composite SubSec tags built by ExifTool's own rule. Dates it does not read (ModifyDate,
XMP, IPTC, the file name) rank below these, so a file dated by none of these goes to
ExifTool.

Sure means: a well-formed JPEG up to its first scan (every segment inside the bytes read),
one EXIF block, no MPF block (ExifTool calls those files MPO), no Apple maker note (it
holds the Live Photo identifier `decide` reads, which this module does not), a TIFF
structure whose date tags are all where they should be, with ASCII values in the exact
EXIF form. The caller trusts the answer only if `decide` dates the file from one of
TRUSTED (the tags above every tag this module does not read);
tests/integration/test_quickmeta.py holds it against the real ExifTool.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from typing import Any

HEAD_BYTES = 256 * 1024  # JPEG headers (EXIF, ICC, XMP, thumbnails) fit well within

# The sources `decide` may date a file from, when these tags are all it was given,
# that outrank every tag this module does not read.
TRUSTED = frozenset(
    {
        "Composite:SubSecDateTimeOriginal",
        "ExifIFD:DateTimeOriginal",
        "Composite:SubSecCreateDate",
        "ExifIFD:CreateDate",
    }
)

_EXIF_HEADER = b"Exif\0\0"
# Markers with a length that a plain JPEG has before its first scan: SOFn, DHT, DAC,
# DQT, DRI, APPn, COM.
_HEADER_MARKERS = frozenset(
    {*range(0xC0, 0xC8), *range(0xC9, 0xD0), 0xDB, 0xDD, *range(0xE0, 0xF0), 0xFE}
)
_DATE = re.compile(r"\d{4}:\d\d:\d\d \d\d:\d\d:\d\d", re.ASCII)
_BLANK = re.compile(r"[ :]*")  # "    :  :     :  :  "
_SUBSEC = re.compile(r"\d+", re.ASCII)
_OFFSET = re.compile(r"([-+])(\d\d):(\d\d)", re.ASCII)
_ASCII = 2
_TYPE_SIZES = (0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4)  # by TIFF type, 1..13
_EXIF_IFD_POINTER = 0x8769
_MAKER_NOTE = 0x927C
# ExifTool's MakerNoteApple starts "Apple iOS\0" (MakerNotes.pm); any note that starts
# "Apple" goes to ExifTool.
_APPLE_NOTE = b"Apple"
_IFD0_TAGS = {0x010F: "Make", 0x0110: "Model"}  # the camera, for the library layout
# Tags read from the EXIF sub-IFD, by their ExifTool names.
_EXIF_TAGS = {
    0x9003: "DateTimeOriginal",
    0x9004: "CreateDate",
    0x9011: "OffsetTimeOriginal",
    0x9012: "OffsetTimeDigitized",
    0x9291: "SubSecTimeOriginal",
    0x9292: "SubSecTimeDigitized",
}
# ExifTool's composites: (name, date tag, sub-second tag, zone tag).
_COMPOSITES = (
    (
        "SubSecDateTimeOriginal",
        "ExifIFD:DateTimeOriginal",
        "ExifIFD:SubSecTimeOriginal",
        "ExifIFD:OffsetTimeOriginal",
    ),
    (
        "SubSecCreateDate",
        "ExifIFD:CreateDate",
        "ExifIFD:SubSecTimeDigitized",
        "ExifIFD:OffsetTimeDigitized",
    ),
)
_JPEG = {"File:FileType": "JPEG", "File:MIMEType": "image/jpeg", "File:FileTypeExtension": "jpg"}


class _Unsure(Exception):
    """Something ExifTool might read differently: let it."""


def header(data: memoryview) -> bytes:
    """What jpeg_tags needs of a file that starts with `data`: its bytes up to the first
    scan (typically a few KiB), or its first HEAD_BYTES when it is not that plain.
    jpeg_tags(header(d)) == jpeg_tags(d[:HEAD_BYTES]) for every d: the same walk reads
    the same segments in both."""
    view = data[:HEAD_BYTES]
    try:
        for marker, _, end in _segments(view):
            if marker == 0xDA:
                return bytes(view[:end])
    except (_Unsure, struct.error, IndexError):
        pass
    return bytes(view)


def jpeg_tags(head: bytes) -> dict[str, Any] | None:
    """The date and type tags ExifTool gives the JPEG whose first bytes are `head`, or
    None when this module is not sure what ExifTool would say."""
    if not head.startswith(b"\xff\xd8\xff"):
        return None
    try:
        exif = _exif_block(head)
        tags: dict[str, Any] = dict(_JPEG)
        if exif is not None:
            tags.update(_tiff_tags(exif))
        _add_composites(tags)
        return tags
    except (_Unsure, struct.error, IndexError):
        return None


def _exif_block(head: bytes) -> bytes | None:
    """The TIFF structure in the one EXIF APP1 segment before the first scan, or None
    when there is none; _Unsure when the segments are anything but plain."""
    found = None
    for marker, start, end in _segments(head):
        body = head[start:end]
        if marker == 0xE1 and body.startswith(_EXIF_HEADER):
            if found is not None:
                raise _Unsure("two EXIF blocks")
            found = body[len(_EXIF_HEADER) :]
        elif marker == 0xE2 and body.startswith(b"MPF\0"):
            raise _Unsure("a multi-picture file: ExifTool says MPO")
    return found


def _segments(head: bytes | memoryview) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end of its body) of each segment before the first scan, and last
    the scan's own marker (0xDA, end = just past it); _Unsure (or IndexError,
    struct.error) when the segments are anything but plain."""
    at = 2
    while True:
        if head[at : at + 1] != b"\xff":
            raise _Unsure("not a marker")
        while head[at + 1 : at + 2] == b"\xff":  # fill bytes
            at += 1
        marker = head[at + 1]
        if marker == 0xDA:  # start of scan: every header segment has been seen
            yield marker, at + 2, at + 2
            return
        if marker not in _HEADER_MARKERS:
            raise _Unsure(f"marker {marker:#x} before the scan")  # ExifTool: format error
        (length,) = struct.unpack_from(">H", head, at + 2)
        end = at + 2 + length
        if length < 2 or end + 2 > len(head):
            raise _Unsure("a segment runs past the bytes read")
        yield marker, at + 4, end
        at = end


def _tiff_tags(tiff: bytes) -> dict[str, str]:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or struct.unpack_from(order + "H", tiff, 2)[0] != 42:
        raise _Unsure("not a TIFF header")
    (ifd0,) = struct.unpack_from(order + "I", tiff, 4)
    tags: dict[str, str] = {}
    entries = _entries(tiff, order, ifd0)
    if any(tag in _EXIF_TAGS for tag in entries):
        raise _Unsure("EXIF date tags in IFD0")  # rare, and grouped differently
    for tag, field in _IFD0_TAGS.items():
        if tag in entries and (text := _ascii(tiff, order, entries[tag]).strip()):
            tags["IFD0:" + field] = text
    pointer = entries.get(_EXIF_IFD_POINTER)
    if pointer is not None:
        kind, count, value = pointer
        if kind not in (4, 13) or count != 1:
            raise _Unsure("an odd EXIF pointer")
        (offset,) = struct.unpack_from(order + "I", value)
        if offset == ifd0:
            raise _Unsure("an EXIF pointer loop")
        exif = _entries(tiff, order, offset)
        if _MAKER_NOTE in exif and _value(tiff, order, exif[_MAKER_NOTE]).startswith(_APPLE_NOTE):
            raise _Unsure("an Apple maker note: its Live Photo identifier is ExifTool's")
        for tag, entry in exif.items():
            name = _EXIF_TAGS.get(tag)
            if name is None:
                continue
            tags["ExifIFD:" + name] = _strict(name, _ascii(tiff, order, entry))
    return tags


def _entries(tiff: bytes, order: str, offset: int) -> dict[int, tuple[int, int, bytes]]:
    """An IFD's entries: tag -> (type, count, the 4 value-or-offset bytes)."""
    if offset < 8 or offset + 2 > len(tiff):
        raise _Unsure("an IFD outside the block")
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    if offset + 2 + 12 * count > len(tiff):
        raise _Unsure("an IFD runs past the block")
    out: dict[int, tuple[int, int, bytes]] = {}
    for i in range(count):
        at = offset + 2 + 12 * i
        tag, kind, n = struct.unpack_from(order + "HHI", tiff, at)
        if tag in out:
            raise _Unsure("a tag twice in one IFD")
        if not 1 <= kind <= 13:
            raise _Unsure("an entry of no TIFF type")  # ExifTool gives up on the IFD
        size = n * _TYPE_SIZES[kind]
        if size > 4 and struct.unpack_from(order + "I", tiff, at + 8)[0] + size > len(tiff):
            raise _Unsure("a value outside the block")
        out[tag] = (kind, n, tiff[at + 8 : at + 12])
    return out


def _value(tiff: bytes, order: str, entry: tuple[int, int, bytes]) -> bytes:
    """The raw bytes of an entry's value (where _entries found it inside the block)."""
    kind, count, value = entry
    size = count * _TYPE_SIZES[kind]
    if size <= 4:
        return value[:size]
    (offset,) = struct.unpack_from(order + "I", value)
    return tiff[offset : offset + size]


def _ascii(tiff: bytes, order: str, entry: tuple[int, int, bytes]) -> str:
    """An ASCII value as ExifTool reads it (cut at the first NUL)."""
    kind, count, value = entry
    if kind != _ASCII:
        raise _Unsure("a date tag that is not ASCII")
    if count <= 4:
        raw = value[:count]
    else:
        (offset,) = struct.unpack_from(order + "I", value)
        if offset + count > len(tiff):
            raise _Unsure("a value outside the block")
        raw = tiff[offset : offset + count]
    raw = raw.split(b"\0", 1)[0]
    if not raw.isascii():
        raise _Unsure("a value that is not ASCII")
    return raw.decode("ascii")


def _strict(name: str, text: str) -> str:
    """A value that can date a file, accepted only in its exact EXIF form (ExifTool
    may tidy anything else its own way)."""
    date = name in ("DateTimeOriginal", "CreateDate")
    if date and _BLANK.fullmatch(text):
        return ""  # a camera's empty date: no date, as `decide` would find
    form = _DATE if date else _SUBSEC if name.startswith("SubSec") else _OFFSET
    if not form.fullmatch(text):
        raise _Unsure(f"{name} not in the EXIF form: {text!r}")
    return text


def _add_composites(tags: dict[str, Any]) -> None:
    """ExifTool's SubSec composites (Exif.pm, %subSecConv): the date with '.' and the
    sub-second digits, then the zone, made only when one of those two is present."""
    for name, date_tag, subsec_tag, zone_tag in _COMPOSITES:
        date = tags.get(date_tag)
        if not date:
            continue
        subsec, zone = tags.get(subsec_tag), tags.get(zone_tag)
        if subsec is None and zone is None:
            continue
        tags["Composite:" + name] = (
            date + (f".{subsec}" if subsec is not None else "") + (zone or "")
        )
