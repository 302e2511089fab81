"""decide(): the capture-date and file-type rules, on hand-built ExifTool tag dicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from daemon.media.metadata import resolve_timezone
from daemon.model import MediaInfo, NotMedia
from daemon.rules.dates import in_bounds
from daemon.rules.mediainfo import decide

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
JULY = int(datetime(2021, 7, 1, 10, 0, tzinfo=UTC).timestamp()) * 10**9
JPEG = {"File:FileType": "JPEG", "File:MIMEType": "image/jpeg", "File:FileTypeExtension": "jpg"}
MOV = {"File:FileType": "MOV", "File:MIMEType": "video/quicktime", "File:FileTypeExtension": "mov"}


def info(
    tags: dict[str, Any],
    name: str = "IMG_0001.JPG",
    tz: Any = BERLIN,
    mtime_ns: int = JULY,
    now: datetime = NOW,
) -> MediaInfo:
    got = decide({**JPEG, **tags} if "File:FileType" not in tags else tags, name, mtime_ns, tz, now)
    assert isinstance(got, MediaInfo), got
    return got


def source(tags: dict[str, Any], name: str = "IMG_0001.JPG") -> tuple[datetime, str]:
    got = info(tags, name)
    return got.captured, got.date_source


# --- the order of the sources ------------------------------------------------------------

ALL = {
    "Composite:SubSecDateTimeOriginal": "2021:01:01 01:01:01.5",
    "ExifIFD:DateTimeOriginal": "2021:01:01 01:01:01",
    "ExifIFD:CreateDate": "2021:02:02 02:02:02",
    "Keys:CreationDate": "2021:03:03 03:03:03+02:00",
    "QuickTime:CreateDate": "2021:04:04 04:04:04",
    "Track1:MediaCreateDate": "2021:04:05 04:04:04",
    "RIFF:DateTimeOriginal": "2021:05:05 05:05:05",
    "Matroska:DateTimeOriginal": "2021:05:06 05:05:05Z",
    "XMP-photoshop:DateCreated": "2021:06:06 06:06:06",
    "Composite:DateTimeCreated": "2021:06:07 06:06:06",
    "IFD0:ModifyDate": "2021:08:08 08:08:08",
}
ORDER = [*ALL, "filename", "IFD0:ModifyDate", "mtime"]


@pytest.mark.parametrize("skip", range(len(ALL)))
def test_each_source_wins_over_every_later_one(skip: int) -> None:
    # Drop the first `skip` sources: the next one must win.
    tags = dict(list(ALL.items())[skip:])
    name = "IMG_20200101_123456.jpg"
    expect = ORDER[skip] if ORDER[skip] != "IFD0:ModifyDate" else "filename"
    assert info(tags, name).date_source == expect


def test_then_file_name_then_modify_date_then_mtime() -> None:
    modify = {"IFD0:ModifyDate": "2021:08:08 08:08:08"}
    assert source(modify, "IMG_20200101_123456.jpg") == (
        datetime(2020, 1, 1, 12, 34, 56),
        "filename",
    )
    assert source(modify) == (datetime(2021, 8, 8, 8, 8, 8), "IFD0:ModifyDate")
    last = info({})
    assert (last.date_source, last.confidence, last.captured) == (
        "mtime",
        "low",
        datetime(2021, 7, 1, 12),
    )


@pytest.mark.parametrize(
    ("tag", "confidence"),
    [
        ("ExifIFD:DateTimeOriginal", "high"),
        ("ExifIFD:CreateDate", "high"),
        ("Keys:CreationDate", "high"),
        ("QuickTime:CreateDate", "high"),
        ("XMP-xmp:CreateDate", "medium"),
        ("IPTC:DateCreated", "medium"),
        ("IFD0:ModifyDate", "medium"),
    ],
)
def test_confidence_by_source(tag: str, confidence: str) -> None:
    assert info({tag: "2021:01:01 10:00:00"}).confidence == confidence


def test_track_dates_are_tried_in_track_order() -> None:
    tags = {
        "Track2:MediaCreateDate": "2021:01:02 10:00:00",
        "Track10:MediaCreateDate": "2021:01:03 10:00:00",
        "Track1:MediaCreateDate": "0000:00:00 00:00:00",
        "Track1:TrackCreateDate": "2021:01:04 10:00:00",
    }
    assert info({**MOV, **tags}).date_source == "Track2:MediaCreateDate"


# --- values that are not dates -----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "0000:00:00 00:00:00",
        "    :  :     :  :  ",
        "",
        "   ",
        "garbage",
        "2021:13:01 00:00:00",
        "2021:02:30 10:00:00",
        "2021:01:01 25:00:00",
        "1904:01:01 00:00:00",
        "1970:01:01 00:00:00",
        "1970:01:01 00:00:05",
        "1825:12:31 23:59:59",
        "2099:01:01 00:00:00",
        "2021",
        "2021:05",
        "2021:01:01 10:00:00+25:00",
        "0001:01:01 00:00:00",
        "9999:12:31 23:59:59-12:00",
        "2021:01:01 10:00:00 extra",
    ],
)
def test_invalid_values_are_skipped(bad: str) -> None:
    tags = {"ExifIFD:DateTimeOriginal": bad, "ExifIFD:CreateDate": "2020:02:02 02:02:02"}
    assert source(tags) == (datetime(2020, 2, 2, 2, 2, 2), "ExifIFD:CreateDate")


@pytest.mark.parametrize(
    "weird",
    [
        None,
        20210101,
        3.5,
        True,
        ["2021:01:01 00:00:00"],
        {"a": 1},
        "2021:01:01 00:00:00\x00",
        "\u0662\u0660\u0662\u0661:01:01",
    ],
)
def test_odd_json_values_never_crash(weird: Any) -> None:
    tags = {
        "ExifIFD:DateTimeOriginal": weird,
        "ExifIFD:OffsetTimeOriginal": weird,
        "Keys:CreationDate": weird,
        "QuickTime:CreateDate": weird,
    }
    assert info(tags).date_source == "mtime"


def test_future_means_after_now_plus_one_day() -> None:
    soon = (NOW + timedelta(hours=23)).astimezone(BERLIN).strftime("%Y:%m:%d %H:%M:%S")
    late = (NOW + timedelta(hours=25)).astimezone(BERLIN).strftime("%Y:%m:%d %H:%M:%S")
    assert info({"ExifIFD:DateTimeOriginal": soon}).date_source == "ExifIFD:DateTimeOriginal"
    assert info({"ExifIFD:DateTimeOriginal": late}).date_source == "mtime"
    # A naive `now` is wall time in the configured zone.
    naive = NOW.astimezone(BERLIN).replace(tzinfo=None)
    assert info({"ExifIFD:DateTimeOriginal": late}, now=naive).date_source == "mtime"


# --- zones -------------------------------------------------------------------------------


def test_sub_seconds_and_offset_from_the_composite() -> None:
    got = info({"Composite:SubSecDateTimeOriginal": "2021:03:04 05:06:07.1234567+09:00"})
    assert (got.captured, got.utc_offset) == (datetime(2021, 3, 4, 5, 6, 7, 123456), 32400)
    assert got.date_raw == "2021:03:04 05:06:07.1234567+09:00"


@pytest.mark.parametrize(
    ("tag", "offset_tag"),
    [
        ("ExifIFD:DateTimeOriginal", "ExifIFD:OffsetTimeOriginal"),
        ("ExifIFD:CreateDate", "ExifIFD:OffsetTimeDigitized"),
        ("IFD0:ModifyDate", "ExifIFD:OffsetTime"),
    ],
)
def test_exif_offsets_are_recorded_and_wall_time_kept(tag: str, offset_tag: str) -> None:
    got = info({tag: "2021:03:04 05:06:07", offset_tag: "-05:30"})
    assert (got.captured, got.utc_offset) == (datetime(2021, 3, 4, 5, 6, 7), -19800)


def test_no_offset_means_none() -> None:
    got = info(
        {"ExifIFD:DateTimeOriginal": "2021:03:04 05:06:07", "ExifIFD:OffsetTimeOriginal": "   :  "}
    )
    assert got.utc_offset is None


@pytest.mark.parametrize(
    ("utc", "tz", "wall", "offset"),
    [
        ("2021:07:01 10:00:00", BERLIN, datetime(2021, 7, 1, 12), 7200),
        ("2021:01:15 10:00:00", BERLIN, datetime(2021, 1, 15, 11), 3600),
        ("2021:07:01 10:00:00", NEW_YORK, datetime(2021, 7, 1, 6), -14400),
        ("2021:01:15 10:00:00", NEW_YORK, datetime(2021, 1, 15, 5), -18000),
        # Berlin springs forward at 01:00 UTC and falls back at 01:00 UTC.
        ("2021:03:28 00:59:59", BERLIN, datetime(2021, 3, 28, 1, 59, 59), 3600),
        ("2021:03:28 01:00:00", BERLIN, datetime(2021, 3, 28, 3, 0, 0), 7200),
        ("2021:10:31 00:30:00", BERLIN, datetime(2021, 10, 31, 2, 30), 7200),
        ("2021:10:31 01:30:00", BERLIN, datetime(2021, 10, 31, 2, 30), 3600),
        ("2021:07:01 10:00:00", UTC, datetime(2021, 7, 1, 10), 0),
    ],
)
def test_quicktime_utc_to_local_wall_time(utc: str, tz: Any, wall: datetime, offset: int) -> None:
    got = info({**MOV, "QuickTime:CreateDate": utc}, "clip.mov", tz=tz)
    assert (got.captured, got.utc_offset, got.date_raw) == (wall, offset, utc)


def test_quicktime_utc_uses_offset_time_original_when_present() -> None:
    got = info(
        {
            **MOV,
            "QuickTime:CreateDate": "2021:07:01 10:00:00",
            "ExifIFD:OffsetTimeOriginal": "+09:00",
        },
        "clip.mov",
        tz=NEW_YORK,
    )
    assert (got.captured, got.utc_offset) == (datetime(2021, 7, 1, 19), 32400)


def test_keys_creation_date_keeps_its_wall_time_and_zone() -> None:
    got = info(
        {
            **MOV,
            "Keys:CreationDate": "2021:03:04 05:06:07+09:00",
            "QuickTime:CreateDate": "2021:03:03 20:06:07",
        },
        "clip.mov",
        tz=NEW_YORK,
    )
    assert (got.captured, got.utc_offset, got.date_source) == (
        datetime(2021, 3, 4, 5, 6, 7),
        32400,
        "Keys:CreationDate",
    )


def test_a_z_value_is_utc_and_converted() -> None:
    got = info({"Matroska:DateTimeOriginal": "2021:01:02 03:04:05Z"}, tz=NEW_YORK)
    assert (got.captured, got.utc_offset) == (datetime(2021, 1, 1, 22, 4, 5), -18000)
    xmp = info({"XMP-xmp:CreateDate": "2021:01:02 03:04:05+00:00"}, tz=NEW_YORK)
    assert (xmp.captured, xmp.utc_offset) == (datetime(2021, 1, 2, 3, 4, 5), 0)  # kept


def test_iptc_date_and_time_and_date_only() -> None:
    both = info(
        {
            "IPTC:DateCreated": "2021:05:06",
            "IPTC:TimeCreated": "07:08:12+02:00",
            "Composite:DateTimeCreated": "2021:05:06 07:08:12+02:00",
        }
    )
    assert (both.captured, both.utc_offset, both.date_source) == (
        datetime(2021, 5, 6, 7, 8, 12),
        7200,
        "Composite:DateTimeCreated",
    )
    assert source({"IPTC:DateCreated": "2021:05:06"}) == (datetime(2021, 5, 6), "IPTC:DateCreated")


def test_mtime_in_the_configured_zone() -> None:
    winter = int(datetime(2021, 1, 15, 10, tzinfo=UTC).timestamp()) * 10**9 + 123_456_789
    got = info({}, "x.jpg", tz=NEW_YORK, mtime_ns=winter)
    assert (got.captured, got.utc_offset) == (datetime(2021, 1, 15, 5, 0, 0, 123456), -18000)
    assert got.date_raw == str(winter)
    old = info({}, "x.jpg", tz=UTC, mtime_ns=-(10**18))  # 1938: still the last resort
    assert old.captured.year == 1938
    absurd = info({}, "x.jpg", tz=UTC, mtime_ns=10**30)  # no datetime can hold it: now
    assert (absurd.captured, absurd.date_source) == (datetime(2024, 6, 1, 12), "mtime")


def test_local_timezone_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert resolve_timezone("local").utcoffset(datetime(2021, 1, 1)) == timedelta(hours=9)
    monkeypatch.setenv("TZ", ":Europe/Berlin")
    assert resolve_timezone("local").utcoffset(datetime(2021, 7, 1)) == timedelta(hours=2)
    monkeypatch.delenv("TZ")
    assert resolve_timezone("local").utcoffset(datetime(2021, 7, 1)) is not None
    assert resolve_timezone("America/New_York") == NEW_YORK


def test_one_set_of_bounds_for_every_date_source() -> None:
    """The bounds the tag rules use are the ones a Takeout JSON's date is held to."""
    assert in_bounds(datetime(1826, 1, 1, tzinfo=UTC), NOW)
    assert not in_bounds(datetime(1825, 12, 31, 23, 59, tzinfo=UTC), NOW)
    assert in_bounds(NOW + timedelta(days=1), NOW)
    assert not in_bounds(NOW + timedelta(days=1, seconds=1), NOW)
    assert (
        info({"ExifIFD:DateTimeOriginal": "2024:06:02 12:00:00"}, tz=UTC).date_source
        == "ExifIFD:DateTimeOriginal"
    )
    assert info({"ExifIFD:DateTimeOriginal": "2024:06:02 12:00:01"}, tz=UTC).date_source == "mtime"


# --- dates in file names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "captured"),
    [
        ("IMG_20200101_123456.jpg", datetime(2020, 1, 1, 12, 34, 56)),
        ("20200101_123456.jpg", datetime(2020, 1, 1, 12, 34, 56)),
        ("VID_20200101_123456_001.mp4", datetime(2020, 1, 1, 12, 34, 56)),
        ("20200101123456.jpg", datetime(2020, 1, 1, 12, 34, 56)),
        ("IMG_20200101_123456~2.jpg", datetime(2020, 1, 1, 12, 34, 56)),
        ("Screenshot_20190521-104552.png", datetime(2019, 5, 21, 10, 45, 52)),
        ("Screenshot_20190521-104552_Chrome.jpg", datetime(2019, 5, 21, 10, 45, 52)),
        ("Screenshot 2019-05-21 at 10.45.52.png", datetime(2019, 5, 21, 10, 45, 52)),
        ("Screen Shot 2019-05-21 at 10.45.52 PM.png", datetime(2019, 5, 21, 22, 45, 52)),
        ("Screenshot 2023-01-02 at 12.05.07\u202fAM.png", datetime(2023, 1, 2, 0, 5, 7)),
        ("Screenshot from 2021-01-01 12-30-00.png", datetime(2021, 1, 1, 12, 30)),
        ("signal-2021-01-01-12-30-00.jpg", datetime(2021, 1, 1, 12, 30)),
        ("signal-2021-01-01-12-30-00-123.jpg", datetime(2021, 1, 1, 12, 30, 0, 123000)),
        ("signal-2021-01-01-123000.jpg", datetime(2021, 1, 1, 12, 30)),
        ("2021-01-01 12.30.00.jpg", datetime(2021, 1, 1, 12, 30)),
        ("2021_01_01_12_30_00.jpg", datetime(2021, 1, 1, 12, 30)),
        ("VID-20200101-WA0001.mp4", datetime(2020, 1, 1)),
        ("IMG-20200101-WA0001.jpg", datetime(2020, 1, 1)),
        ("holiday 2021-01-01.jpg", datetime(2021, 1, 1)),
        ("Screen Shot 2019-05-21 at 13.45.52 PM.png", datetime(2019, 5, 21)),  # bad time: date
        ("FB_IMG_1609459200000.jpg", datetime(2021, 1, 1, 1, 0)),  # Unix ms, Berlin winter
        ("PXL_20210701_103000123.jpg", datetime(2021, 7, 1, 12, 30, 0, 123000)),  # UTC name
        ("PXL_20210701_103000123.MP.jpg", datetime(2021, 7, 1, 12, 30, 0, 123000)),
    ],
)
def test_dates_in_file_names(name: str, captured: datetime) -> None:
    assert source({}, name) == (captured, "filename")


@pytest.mark.parametrize(
    "name",
    [
        "IMG_1234.JPG",
        "DSC01234.JPG",
        "20201345_123456.jpg",
        "20200101_256000.jpg",
        "18000101_120000.jpg",
        "20990101_120000.jpg",
        "123420200101_1234567.jpg",
        "19700101_000000.jpg",
        "",
        "photo\udcff.jpg",
    ],
)
def test_names_without_a_usable_date(name: str) -> None:
    assert info({}, name).date_source == "mtime"


def test_file_name_date_raw_is_the_matched_part() -> None:
    assert info({}, "IMG_20200101_123456.jpg").date_raw == "20200101_123456"


# --- file types and extensions ------------------------------------------------------------


def kind(
    ftype: str, mime: str, name: str = "x.bin", ext: str | None = None, error: str | None = None
) -> MediaInfo | NotMedia:
    tags: dict[str, Any] = {"File:FileType": ftype, "File:MIMEType": mime}
    if ext:
        tags["File:FileTypeExtension"] = ext
    if error:
        tags["ExifTool:Error"] = error
    return decide(tags, name, JULY, BERLIN, NOW)


@pytest.mark.parametrize(
    ("ftype", "mime", "ext", "want_kind"),
    [
        ("HEIC", "image/heic", "heic", "image"),
        ("AVIF", "image/avif", "avif", "image"),
        ("JXL", "image/jxl", "jxl", "image"),
        ("DNG", "image/x-adobe-dng", "dng", "image"),
        ("CR3", "image/x-canon-cr3", "cr3", "image"),
        ("ARQ", "application/unknown", "arq", "image"),
        ("MP4", "video/mp4", "mp4", "video"),
        ("M2TS", "video/m2ts", "mts", "video"),
        ("MXF", "application/mxf", "mxf", "video"),
        ("MKV", "video/x-matroska", "mkv", "video"),
        ("3GP", "video/3gpp", "3gp", "video"),
    ],
)
def test_media_kinds(ftype: str, mime: str, ext: str, want_kind: str) -> None:
    got = kind(ftype, mime, f"x.{ext}", ext)
    assert isinstance(got, MediaInfo) and (got.kind, got.file_type, got.mime, got.ext) == (
        want_kind,
        ftype,
        mime,
        f".{ext}",
    )


@pytest.mark.parametrize(
    ("ftype", "mime", "reason"),
    [
        ("TXT", "text/plain", "not a photo or video (ExifTool says: TXT, text/plain)"),
        ("PDF", "application/pdf", "not a photo or video (ExifTool says: PDF, application/pdf)"),
        ("ZIP", "application/zip", "not a photo or video (ExifTool says: ZIP, application/zip)"),
        ("MP3", "audio/mpeg", "not a photo or video (ExifTool says: MP3, audio/mpeg)"),
        ("SVG", "image/svg+xml", "not a photo or video (ExifTool says: SVG, image/svg+xml)"),
        ("XMP", "", "not a photo or video (ExifTool says: XMP, no MIME type)"),
    ],
)
def test_not_media(ftype: str, mime: str, reason: str) -> None:
    assert kind(ftype, mime) == NotMedia(reason)


def test_exiftool_errors_are_not_media() -> None:
    assert decide({"ExifTool:Error": "File format error"}, "a.jpg", JULY, BERLIN, NOW) == NotMedia(
        "unrecognised file type (ExifTool says: File format error)"
    )
    assert decide({"ExifTool:Error": "File is empty"}, "a.jpg", JULY, BERLIN, NOW) == NotMedia(
        "empty file"
    )
    assert decide({}, "a.jpg", JULY, BERLIN, NOW) == NotMedia("unrecognised file type")
    assert kind("JPEG", "image/jpeg", "a.jpg", "jpg", error="Truncated JPEG") == NotMedia(
        "unreadable JPEG file (ExifTool says: Truncated JPEG)"
    )


@pytest.mark.parametrize(
    ("ftype", "ext", "name", "want"),
    [
        ("JPEG", "jpg", "a.JPG", ".jpg"),
        ("JPEG", "jpg", "a.jpeg", ".jpeg"),
        ("JPEG", "jpg", "a.jpe", ".jpe"),
        ("JPEG", "jpg", "a.png", ".jpg"),
        ("JPEG", "jpg", "a", ".jpg"),
        ("JPEG", "jpg", ".jpg", ".jpg"),
        ("JPEG", "jpg", "a.", ".jpg"),
        ("HEIC", "heic", "a.jpg", ".heic"),
        ("HEIC", "heic", "a.HEIF", ".heif"),
        ("HEIC", "heic", "a.hif", ".hif"),
        ("TIFF", "tif", "a.tiff", ".tiff"),
        ("M2TS", "mts", "a.m2ts", ".m2ts"),
        ("MPEG", "mpg", "a.mpeg", ".mpeg"),
        ("MP4", "mp4", "a.m4v", ".mp4"),
        ("M4V", "m4v", "a.mp4", ".m4v"),
        ("MOV", "mov", "a.mp4", ".mov"),
        ("JPEG", "jpg", "a.j/../pg", ".jpg"),
        ("JPEG", "jpg", "a.averyverylongext", ".jpg"),
        ("PNG", "", "a.gif", ".png"),
        ("JPEG", "JPG", "a.jpg", ".jpg"),
    ],
)
def test_library_extension(ftype: str, ext: str, name: str, want: str) -> None:
    got = kind(
        ftype, "video/x" if ftype in ("M2TS", "MPEG", "MP4", "M4V", "MOV") else "image/x", name, ext
    )
    assert isinstance(got, MediaInfo) and got.ext == want


def test_no_usable_extension_at_all() -> None:
    assert kind("X/../Y", "image/x", "a") == NotMedia("no usable file extension for X/../Y content")


# --- any group's capture date (issue 12.2) -----------------------------------------------

LOWER = {
    "XMP-exif:DateTimeOriginal": "2012:01:01 01:01:01",
    "XMP-xmp:CreateDate": "2012:01:02 01:01:01",
    "IPTC:DateCreated": "2012:01:03",
    "IFD0:ModifyDate": "2012:01:04 01:01:01",
}


@pytest.mark.parametrize(
    "tag",
    [
        "CanonRaw:DateTimeOriginal",
        "SigmaRaw:DateTimeOriginal",
        "KyoceraRaw:DateTimeOriginal",
        "Casio:DateTimeOriginal",
        "PictureInfo:DateTimeOriginal",
        "Reconyx:DateTimeOriginal",
        "Kodak:DateTimeOriginal",
        "DV:DateTimeOriginal",
        "FLIR:DateTimeOriginal",
        "H264:DateTimeOriginal",
        "RIFF:DateTimeOriginal",
        "Matroska:DateTimeOriginal",
        "MXF:CreateDate",
        "PNG:CreationTime",
        "PNG:ModifyDate",
        "RIFF:DateCreated",
        "Real-MDPR:CreateDate",
        "FlashPix:CreateDate",
        "Microsoft:DatePictureTaken",
    ],
)
def test_any_groups_capture_date_ranks_after_exif_and_before_xmp_iptc_and_names(tag: str) -> None:
    tags = {tag: "2011:02:03 04:05:06", **LOWER}
    got = info(tags, "IMG_20130101_101010.jpg")
    assert got.date_source == tag and got.date_raw == "2011:02:03 04:05:06"
    assert got.confidence == (
        "high" if tag.endswith("DateTimeOriginal") and not tag.startswith("Matroska") else "medium"
    )
    beaten = info({**tags, "ExifIFD:DateTimeOriginal": "2010:01:01 00:00:00"})
    assert beaten.date_source == "ExifIFD:DateTimeOriginal"


@pytest.mark.parametrize(
    "tag",
    [
        "Composite:DateTimeOriginal",
        "System:FileCreateDate",
        "XMP-dc:CreateDate",
        "IPTC2:DateCreated",
        "ExifIFD:DateTimeDigitized",
        "GPS:CreateDate",
        "Track3:CreateDate",
        "ExifTool:CreateDate",
    ],
)
def test_groups_that_are_not_any_groups_capture_date(tag: str) -> None:
    assert info({tag: "2011:02:03 04:05:06", **LOWER}).date_source == "XMP-exif:DateTimeOriginal"


def test_any_groups_date_keeps_its_zone_and_utc_containers_are_converted() -> None:
    zoned = info({"Reconyx:DateTimeOriginal": "2011:02:03 04:05:06+09:00"})
    assert (zoned.captured, zoned.utc_offset) == (datetime(2011, 2, 3, 4, 5, 6), 32400)
    # AVCHD: the camera's standard zone and a daylight-saving flag (H264.pm)
    dst = info({"H264:DateTimeOriginal": "2011:07:03 04:05:06+01:00 DST"})
    assert (dst.captured, dst.utc_offset) == (datetime(2011, 7, 3, 4, 5, 6), 7200)
    mxf = info({"MXF:CreateDate": "2016:02:03 04:05:06.000"})  # UTC by SMPTE 377M
    assert (mxf.captured, mxf.utc_offset) == (datetime(2016, 2, 3, 5, 5, 6), 3600)
    png = info({"PNG:ModifyDate": "2015:07:02 03:04:05"})  # tIME: UTC by the PNG spec
    assert (png.captured, png.utc_offset) == (datetime(2015, 7, 2, 5, 4, 5), 7200)


# --- precision (issue 12.3) --------------------------------------------------------------


def test_a_date_only_value_gives_way_to_a_full_time_of_that_day() -> None:
    got = info({"IPTC:DateCreated": "2019:05:04", "IFD0:ModifyDate": "2019:05:04 17:53:12"})
    assert (got.captured, got.date_source) == (datetime(2019, 5, 4, 17, 53, 12), "IFD0:ModifyDate")
    other_day = {"IPTC:DateCreated": "2019:05:04", "IFD0:ModifyDate": "2019:05:05 17:53:12"}
    assert source(other_day) == (datetime(2019, 5, 4), "IPTC:DateCreated")
    # the best there is still names the day
    assert source({"IPTC:DateCreated": "2019:05:04"}) == (datetime(2019, 5, 4), "IPTC:DateCreated")
    # a file name with the time of that day refines it too
    assert source({"IPTC:DateCreated": "2019:05:04"}, "IMG_20190504_101112.jpg") == (
        datetime(2019, 5, 4, 10, 11, 12),
        "filename",
    )


def test_a_minute_only_value_gives_way_to_a_full_time_of_that_minute() -> None:
    tags = {
        "XMP-xmp:CreateDate": "2019:05:04 05:53+02:00",
        "IFD0:ModifyDate": "2019:05:04 05:53:12",
    }
    got = info(tags)
    assert (got.captured, got.utc_offset, got.date_source) == (
        datetime(2019, 5, 4, 5, 53, 12),
        7200,
        "IFD0:ModifyDate",
    )
    later = {**tags, "IFD0:ModifyDate": "2019:05:04 05:54:12"}
    assert source(later) == (datetime(2019, 5, 4, 5, 53), "XMP-xmp:CreateDate")
    # zones known on both sides: compared as instants
    utc = {
        "XMP-xmp:CreateDate": "2019:05:04 05:53+02:00",
        "IFD0:ModifyDate": "2019:05:04 03:53:30",
        "IFD0:OffsetTime": "+00:00",
    }
    assert info(utc).date_source == "IFD0:ModifyDate"


def test_a_full_timestamp_is_never_refined_away() -> None:
    tags = {
        "ExifIFD:DateTimeOriginal": "2019:05:04 05:53:12",
        "IFD0:ModifyDate": "2019:05:04 05:53:12.5",
    }
    assert info(tags).date_source == "ExifIFD:DateTimeOriginal"


def test_iptc_date_and_time_are_read_together() -> None:
    tags = {
        "IPTC:DateCreated": "2019:05:04",
        "IPTC:TimeCreated": "10:11:12+02:00",
        "Composite:DateTimeCreated": "2019:05:04 10:11:12+02:00",
        "IFD0:ModifyDate": "2019:05:04 23:00:00",
    }
    got = info(tags)
    assert (got.captured, got.utc_offset, got.date_source) == (
        datetime(2019, 5, 4, 10, 11, 12),
        7200,
        "Composite:DateTimeCreated",
    )


# --- future dates are recorded (issue 12.5) ----------------------------------------------


def test_future_values_above_the_winner_are_recorded_with_why() -> None:
    got = info(
        {
            "ExifIFD:DateTimeOriginal": "2099:01:01 00:00:00",
            "Keys:CreationDate": "2031:01:01 00:00:00+01:00",
            "ExifIFD:CreateDate": "2020:02:02 02:02:02",
            "IFD0:ModifyDate": "2098:01:01 00:00:00",
        }
    )
    assert got.date_source == "ExifIFD:CreateDate"
    assert got.date_skipped == (
        "ExifIFD:DateTimeOriginal = '2099:01:01 00:00:00': in the future (after now + 1 day)"
    )
    none = info(
        {
            "ExifIFD:DateTimeOriginal": "2020:01:01 00:00:00",
            "IFD0:ModifyDate": "2098:01:01 00:00:00",
        }
    )
    assert none.date_skipped is None  # a future value below the winner did not matter
    name = info({}, "IMG_20990101_000000.jpg")
    assert (name.date_source, name.date_skipped) == (
        "mtime",
        "filename '20990101_000000': in the future (after now + 1 day)",
    )


# --- Live Photo identifier and pairing (issue 12.1) --------------------------------------


def test_content_identifier_from_the_video_or_the_stills_maker_note() -> None:
    assert info({**MOV, "Keys:ContentIdentifier": "ABC"}).content_id == "ABC"
    assert info({"Apple:MediaGroupUUID": " ABC "}).content_id == "ABC"
    assert info({"Apple:ContentIdentifier": "ABC"}).content_id == "ABC"  # ExifTool < 12.19
    assert info({"Apple:MediaGroupUUID": 7}).content_id is None
    assert info({"XMP-x:ContentIdentifier": "ABC"}).content_id is None


def _still(captured: str, offset: int | None = 3600, cid: str | None = None) -> Any:
    from daemon.store.catalog import Entry

    return Entry(
        1,
        "0" * 64,
        1,
        "2021-03/2021-03-04 05.06.07.jpg",
        captured,
        "Composite:SubSecDateTimeOriginal",
        "IMG_1.JPG",
        1,
        None,
        offset,
        "high",
        cid,
    )


def _video(tags: dict[str, Any], name: str = "IMG_1.MOV") -> MediaInfo:
    return info({**MOV, **tags}, name)


def test_a_video_pairs_with_its_still_by_content_identifier() -> None:
    from daemon.engine.pairing import motion_pairs

    video = _video(
        {"Keys:CreationDate": "2021:03:04 05:06:08+01:00", "Keys:ContentIdentifier": "CID-1"}
    )
    assert motion_pairs(video, _still("2021-03-04 05:06:07", cid="CID-1"))
    assert not motion_pairs(video, _still("2021-03-04 05:06:07", cid="CID-2"))
    far = _video(
        {"Keys:CreationDate": "2016:03:04 05:06:08+01:00", "Keys:ContentIdentifier": "CID-1"}
    )
    assert motion_pairs(far, _still("2021-03-04 05:06:07", cid="CID-1"))  # same shot


def test_by_name_only_when_the_video_has_no_date_or_the_dates_agree() -> None:
    from daemon.engine.pairing import PAIR_SECONDS, motion_pairs

    still = _still("2021-03-04 05:06:07")
    five_years = _video({"Keys:CreationDate": "2016:03:04 05:06:07+01:00"})
    assert five_years.confidence == "high" and not motion_pairs(five_years, still)
    close = _video({"Keys:CreationDate": "2021:03:04 05:06:08+01:00"})
    assert motion_pairs(close, still)
    # instants compared when both zones are known: 05:06:08+01:00 == 04:06:08Z
    assert motion_pairs(close, _still("2021-03-04 04:06:07", offset=0))
    assert not motion_pairs(close, _still("2021-03-04 05:06:07", offset=0))
    apart = datetime(2021, 3, 4, 5, 6, 7) + timedelta(seconds=PAIR_SECONDS + 1)
    late = _video({"Keys:CreationDate": apart.strftime("%Y:%m:%d %H:%M:%S+01:00")})
    assert not motion_pairs(late, still)
    # no date of its own (mtime), or only one from its (shared) name: the name decides
    assert motion_pairs(_video({}), still)
    assert motion_pairs(_video({}, "IMG_20160101_101010.MOV"), still)
    # a medium date of its own is kept as well when it disagrees
    assert not motion_pairs(_video({"UserData:DateTimeOriginal": "2016:01:01 10:10:10"}), still)
    # one side without an identifier: the dates decide
    tagged = _video(
        {"Keys:CreationDate": "2016:03:04 05:06:07+01:00", "Keys:ContentIdentifier": "CID-1"}
    )
    assert not motion_pairs(tagged, still)


# --- types whose MIME is not image/* or video/* (issue 12.4) -----------------------------


@pytest.mark.parametrize(
    ("ftype", "mime", "ext", "want_kind"),
    [
        ("PSD", "application/vnd.adobe.photoshop", "psd", "image"),
        ("PSB", "application/vnd.adobe.photoshop", "psb", "image"),
        ("CS1", "application/vnd.adobe.photoshop", "cs1", "image"),  # Sinar CaptureShop RAW
        ("EIP", "application/x-captureone", "eip", "image"),  # Capture One: RAW inside
        ("ARQ", "application/unknown", "arq", "image"),
        ("MXF", "application/mxf", "mxf", "video"),
        ("RM", "application/vnd.rn-realmedia", "rm", "video"),
        ("RMVB", "application/vnd.rn-realmedia-vbr", "rmvb", "video"),
        # image/* or video/* at run time (ExifTool 12.57), listed so a change shows here
        ("AVIF", "image/avif", "avif", "image"),  # sequences too (QuickTime.pm AVIF)
        ("Extended WEBP", "image/webp", "webp", "image"),  # animated WebP
        ("AVI", "video/x-msvideo", "avi", "video"),  # MJPEG AVI from old cameras
        ("M2T", "video/mpeg", "m2t", "video"),
        ("M2TS", "video/m2ts", "mts", "video"),
        ("JXL", "image/jxl", "jxl", "image"),
        ("DNG", "image/x-adobe-dng", "dng", "image"),
        ("MOV", "video/quicktime", "mov", "video"),
        ("MPO", "image/mpo", "mpo", "image"),
        ("HEIC", "image/heic-sequence", "heic", "image"),
        ("APNG", "image/apng", "png", "image"),
        ("CRM", "video/x-canon-crm", "crm", "video"),
        ("MNG", "video/mng", "mng", "video"),
    ],
)
def test_pictures_and_movies_by_rule(ftype: str, mime: str, ext: str, want_kind: str) -> None:
    got = kind(ftype, mime, f"x.{ext}", ext)
    assert isinstance(got, MediaInfo) and (got.kind, got.ext) == (want_kind, f".{ext}"), got


@pytest.mark.parametrize(
    ("ftype", "mime"),
    [
        ("PSDT", "application/vnd.adobe.photoshop"),  # a template
        ("MIFF", "application/x-magick-image"),
        ("DICOM", "application/dicom"),
        ("EPS", "application/postscript"),
        ("AI", "application/vnd.adobe.illustrator"),
        ("WMF", "application/x-wmf"),
        ("SWF", "application/x-shockwave-flash"),
        ("M4A", "audio/mp4"),
        ("M4A", "video/quicktime"),
        ("AAX", "audio/vnd.audible.aax"),
        ("EXV", "image/x-exv"),
        ("VNT", "image/vnd.fpx"),
        ("ICO", "image/x-icon"),
        ("AAE", "application/vnd.apple.photos"),
        ("MODD", "application/xml"),
        ("WAV", "audio/x-wav"),
        ("EXIF", "application/unknown"),
    ],
)
def test_not_pictures_or_movies_by_rule(ftype: str, mime: str) -> None:
    got = kind(ftype, mime, "x.bin", "bin")
    assert isinstance(got, NotMedia) and "not a photo or video" in got.reason


def test_a_pngs_modification_time_is_the_last_of_the_other_groups() -> None:
    tags = {
        "PNG:ModifyDate": "2015:01:02 03:04:05",
        "PNG:CreationTime": "2014:01:02 03:04:05",
        "Casio:DateTimeOriginal": "2013:01:02 03:04:05",
        "RIFF:DateCreated": "2012:01:02",
        "XMP-xmp:CreateDate": "2011:01:02 03:04:05",
    }
    order = [
        "PNG:CreationTime",
        "Casio:DateTimeOriginal",
        "RIFF:DateCreated",
        "PNG:ModifyDate",
        "XMP-xmp:CreateDate",
    ]
    for i, want in enumerate(order):
        left = {k: v for k, v in tags.items() if k not in order[:i]}
        assert info(left).date_source == want


@pytest.mark.parametrize(
    ("brand", "want"),
    [
        ("Unknown (avis)", ("image", "AVIF", ".avif")),
        ("avis", ("image", "AVIF", ".avif")),
        ("MP4 v2 [ISO 14496-14]", ("video", "MP4", ".mp4")),
        ("Unknown (avisx)", ("video", "MP4", ".mp4")),
    ],
)
def test_an_avif_sequence_is_a_picture_though_exiftool_says_mp4(
    brand: str, want: tuple[str, str, str]
) -> None:
    tags = {
        "File:FileType": "MP4",
        "File:MIMEType": "video/mp4",
        "File:FileTypeExtension": "mp4",
        "QuickTime:MajorBrand": brand,
    }
    got = decide(tags, "anim.avif", JULY, BERLIN, NOW)
    assert isinstance(got, MediaInfo) and (got.kind, got.file_type, got.ext) == want
