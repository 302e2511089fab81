"""What a file is (pure): photo, video or not media by ExifTool's type tags, its library
extension, camera and Live Photo identifier; `decide` joins that with the capture date
(`rules.dates`) into a MediaInfo, or says why the file is not media (NotMedia).
"""

from __future__ import annotations

import os
import re
from datetime import datetime, tzinfo
from typing import Any

from ..model import MediaInfo, NotMedia
from .dates import capture_date
from .layout import clean_ext

# Camera RAW formats: media whatever MIME type an ExifTool version gives them.
_RAW_TYPES = frozenset(
    {
        "3FR",
        "ARI",
        "ARQ",
        "ARW",
        "CR2",
        "CR3",
        "CRW",
        "DCR",
        "DNG",
        "ERF",
        "FFF",
        "GPR",
        "IIQ",
        "K25",
        "KDC",
        "MEF",
        "MOS",
        "MRW",
        "NEF",
        "NRW",
        "ORF",
        "ORI",
        "PEF",
        "RAF",
        "RAW",
        "RW2",
        "RWL",
        "SR2",
        "SRF",
        "SRW",
        "X3F",
    }
)
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
_NOT_PHOTOS = frozenset(
    {"SVG", "DWG", "ICO", "CUR", "DJVU", "EXV", "VNT", "M4A", "M4B", "M4P", "F4A", "F4B", "AAX"}
)
# An AVIF image sequence (animated AVIF, major brand 'avis') is MP4 to ExifTool 12.57
# ("Unknown (avis)"): a picture, named .avif.
_AVIF_SEQUENCE = re.compile(r"(?:.*\()?avis\)?", re.ASCII)
# Extensions that name the same content: a JPEG called .jpeg keeps .jpeg.
_SAME_EXT = (
    frozenset({"jpg", "jpeg", "jpe", "jfif"}),
    frozenset({"tif", "tiff"}),
    frozenset({"heic", "heif", "hif"}),
    frozenset({"mts", "m2ts", "m2t", "ts"}),
    frozenset({"mpg", "mpeg", "mpe"}),
    frozenset({"mov", "qt"}),
    frozenset({"3gp", "3gpp"}),
)
# The Live Photo identifier: in the video (Keys) and in the still's Apple maker note
# (ExifTool 12.19 and later call it MediaGroupUUID, before that ContentIdentifier).
_CONTENT_ID_TAGS = ("Keys:ContentIdentifier", "Apple:MediaGroupUUID", "Apple:ContentIdentifier")


def _content(tags: dict[str, Any], original_name: str) -> tuple[str, str, str, str] | NotMedia:
    """(kind, file type, MIME type, library extension) by content, or why it is not media."""
    ftype = str(tags.get("File:FileType") or "")
    mime = str(tags.get("File:MIMEType") or "")
    error = str(tags.get("ExifTool:Error") or "")
    said = f" (ExifTool says: {error})" if error else ""
    if not ftype:
        return NotMedia(
            "empty file" if error == "File is empty" else f"unrecognised file type{said}"
        )
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


def decide(
    tags: dict[str, Any], original_name: str, mtime_ns: int, tz: tzinfo, now: datetime
) -> MediaInfo | NotMedia:
    """What ExifTool's `tags` say the file is and when it was captured (pure).

    `original_name` is the inbox name (for a date in it and the extension), `tz` the zone
    for UTC values and the mtime, `now` (aware; naive means wall time in `tz`) the
    reference for dates in the future.
    """
    what = _content(tags, original_name)
    if isinstance(what, NotMedia):
        return what
    kind, ftype, mime, ext = what
    found, passed = capture_date(tags, original_name, mtime_ns, tz, now)
    return MediaInfo(
        kind=kind,
        file_type=ftype,
        mime=mime,
        ext=ext,
        captured=found.captured,
        utc_offset=found.utc_offset,
        date_source=found.source,
        date_raw=found.raw,
        confidence=found.confidence,
        content_id=_content_id(tags),
        date_skipped="; ".join(passed) or None,
        make=_camera(tags, "Make"),
        model=_camera(tags, "Model"),
    )


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
        k for k in tags if k.endswith(":" + name)
    )
    for key in keys:
        value = tags.get(key)
        if (
            isinstance(value, (str, int, float))
            and not isinstance(value, bool)
            and str(value).strip()
        ):
            return str(value).strip()
    return ""
