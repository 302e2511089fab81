"""quickmeta against the real ExifTool: for every JPEG here, the in-process answer (when
it gives one) is exactly the MediaInfo ExifTool's tags give, and it does answer for the
ordinary dated camera JPEG. Files made by Pillow, tagged by the real exiftool, then cut
short and fuzzed."""

from __future__ import annotations

import os
import random
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.media import quickmeta
from daemon.media.metadata import Reader
from daemon.model import MediaInfo
from tests.helpers import jpeg_bytes
from tests.integration import media_factory as make

MTIME = int(datetime(2021, 7, 1, 10, 0, tzinfo=UTC).timestamp() * 1e9)

# Tag sets written by exiftool (a '#' writes the raw value past exiftool's checks).
TAGGED: dict[str, dict[str, str]] = {
    "dto": {"DateTimeOriginal": "2020:01:02 03:04:05"},
    "dto_subsec": {"DateTimeOriginal": "2020:01:02 03:04:05", "SubSecTimeOriginal": "123"},
    "dto_zone": {"DateTimeOriginal": "2020:01:02 03:04:05", "OffsetTimeOriginal": "-05:30"},
    "dto_camera": {
        "DateTimeOriginal": "2020:01:02 03:04:05",
        "Make": "Canon ",
        "Model": "Canon EOS R5",
    },  # the camera, for the layout's {make} {model}
    "dto_all": {
        "DateTimeOriginal": "2020:01:02 03:04:05",
        "SubSecTimeOriginal": "07",
        "OffsetTimeOriginal": "+09:00",
        "CreateDate": "2020:01:02 03:04:06",
        "SubSecTimeDigitized": "5",
        "OffsetTimeDigitized": "+09:00",
    },
    "dto_zero": {"DateTimeOriginal#": "0000:00:00 00:00:00", "CreateDate": "2019:05:06 07:08:09"},
    "dto_blank": {"DateTimeOriginal#": "    :  :     :  :  ", "CreateDate": "2019:05:06 07:08:09"},
    "dto_future": {"DateTimeOriginal": "2099:01:01 00:00:00"},
    "dto_future_create": {
        "DateTimeOriginal": "2099:01:01 00:00:00",
        "SubSecTimeOriginal": "5",
        "CreateDate": "2019:05:06 07:08:09",
    },  # the skip is recorded
    "dto_1970": {"DateTimeOriginal": "1970:01:01 00:00:00", "ModifyDate": "2018:01:01 01:01:01"},
    "dto_bad_day": {"DateTimeOriginal#": "2020:02:31 10:00:00"},
    "create_only": {"CreateDate": "2019:05:06 07:08:09", "OffsetTimeDigitized": "+01:00"},
    "create_subsec": {"CreateDate": "2019:05:06 07:08:09", "SubSecTimeDigitized": "999"},
    "modify_only": {"ModifyDate": "2018:01:01 01:01:01", "OffsetTime": "+02:00"},
    "xmp_only": {"XMP-exif:DateTimeOriginal": "2017:03:04 05:06:07+01:00"},
    "xmp_and_exif": {
        "XMP-exif:DateTimeOriginal": "2017:03:04 05:06:07+01:00",
        "DateTimeOriginal": "2016:01:01 00:00:01",
    },
    "iptc": {"IPTC:DateCreated": "2015:06:07", "IPTC:TimeCreated": "08:09:10+02:00"},
    "subsec_spaces": {"DateTimeOriginal": "2020:01:02 03:04:05", "SubSecTimeOriginal#": "12  "},
    "zone_odd": {"DateTimeOriginal": "2020:01:02 03:04:05", "OffsetTimeOriginal#": "+5:00"},
    "dto_dashes": {"DateTimeOriginal#": "2020-01-02 03:04:05"},
    "ifd0_dto": {"IFD0:DateTimeOriginal": "2014:01:01 01:01:01"},
    "mpf": {"DateTimeOriginal": "2020:01:02 03:04:05"},  # and an MPF segment, added below
    "plain": {},
}
NAMES = {
    "dto": "IMG_20000101_000000.jpg",
    "plain": "IMG_20000101_000000.JPG",
    "xmp_only": "photo.jpeg",
    "create_only": "PXL_20200101_101010123.jpg",
}


def _with_segment(data: bytes, marker: int, body: bytes) -> bytes:
    """`data` with one more APPn segment right after SOI."""
    return data[:2] + struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body + data[2:]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("quick")
    files: list[Path] = []
    for name in TAGGED:
        files.append(make.image(d / f"{name}.jpg", color="green"))
    make.write_tags({path: TAGGED[path.stem] for path in files})
    mpf = d / "mpf.jpg"
    mpf.write_bytes(_with_segment(mpf.read_bytes(), 0xE2, b"MPF\0II*\0\x08\0\0\0\0\0"))
    renamed = []
    for path in files:
        if path.stem in NAMES:
            renamed.append(path.rename(d / NAMES[path.stem]))
        else:
            renamed.append(path)
    files = renamed
    # Pillow's own EXIF (little-endian, the layout the benchmark and the tests use)
    for i in range(4):
        files.append(d / f"pillow{i}.jpg")
        files[-1].write_bytes(jpeg_bytes(datetime(2010 + i, 2, 3, 4, 5, 6), seed=i))
    files.append(d / "pillow_undated.jpg")
    files[-1].write_bytes(jpeg_bytes(None, seed=9))
    # iPhone stills: a Live Photo's (its identifier in an Apple maker note) and a plain one
    files.append(make.apple_still(d / "apple_live.jpg", "2021:03:04 05:06:07", "CID-7", "+01:00"))
    files.append(
        make.apple_still(d / "apple_plain.jpg", "2021:03:04 05:06:07", None, "+01:00", color="blue")
    )
    # Two EXIF blocks; a JPEG-named PNG; a file cut short at every interesting place
    dated = (d / "dto_all.jpg").read_bytes()
    exif_at = dated.index(b"Exif\0\0") - 4
    (length,) = struct.unpack(">H", dated[exif_at + 2 : exif_at + 4])
    files.append(d / "two_exif.jpg")
    files[-1].write_bytes(dated[:2] + dated[exif_at : exif_at + 2 + length] + dated[2:])
    files.append(make.image(d / "png_named.jpg", fmt="PNG"))
    for cut in (3, 20, exif_at + 10, exif_at + length - 4, exif_at + length + 40, len(dated) - 100):
        files.append(d / f"cut{cut}.jpg")
        files[-1].write_bytes(dated[:cut])
    # Fuzzed: bytes of the header changed at random, repeatably
    rng = random.Random(20261126)
    bases = [dated, (d / "pillow0.jpg").read_bytes()]  # big- and little-endian EXIF
    for n in range(int(os.environ.get("QUICKMETA_FUZZ", "200"))):
        data = bytearray(bases[n % 2])
        head = data.index(b"\xff\xda")
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(2, head)] = rng.randrange(256)
        files.append(d / f"fuzz{n:03d}.jpg")
        files[-1].write_bytes(bytes(data))
    return files


def test_in_process_answers_equal_exiftools(corpus: list[Path]) -> None:
    items = [(bytes(p), p.name, MTIME) for p in corpus]
    with Reader("Europe/Paris", quick=False) as slow_reader:
        truth = slow_reader.describe_many(items)
    with Reader("Europe/Paris") as reader:
        answered = {}
        for item, want in zip(items, truth):
            got = reader._quick(*item, datetime.now(UTC))  # the in-process answer alone, if any
            if got is not None:
                answered[item[1]] = got
                slow = want if isinstance(want, MediaInfo) else None
                assert slow is not None and got == slow, item[1]
        # through the public entry point: the same answers, ExifTool asked for the rest
        assert reader.describe_many(items) == truth
        # and the same again from the heads a copy hands over (ingest does not read twice)
        heads = [quickmeta.header(memoryview(p.read_bytes())) for p in corpus]
        assert reader.describe_many(items, heads) == truth
    # It must answer for the ordinary case, or the fast path is dead code.
    for name in (
        "dto_subsec.jpg",
        "dto_zone.jpg",
        "dto_all.jpg",
        "IMG_20000101_000000.jpg",
        "dto_zero.jpg",
        "dto_blank.jpg",
        "PXL_20200101_101010123.jpg",
        "create_subsec.jpg",
        "xmp_and_exif.jpg",
        "pillow0.jpg",
        "pillow3.jpg",
        "apple_plain.jpg",
        "dto_future_create.jpg",
    ):
        assert name in answered, name
    assert (answered["dto_camera.jpg"].make, answered["dto_camera.jpg"].model) == (
        "Canon",
        "Canon EOS R5",
    )
    assert answered["dto_all.jpg"].date_source == "Composite:SubSecDateTimeOriginal"
    assert answered["dto_all.jpg"].date_raw == "2020:01:02 03:04:05.07+09:00"
    assert answered["dto_future_create.jpg"].date_skipped == (
        "Composite:SubSecDateTimeOriginal = '2099:01:01 00:00:00.5': in the future (after now "
        "+ 1 day); ExifIFD:DateTimeOriginal = '2099:01:01 00:00:00': in the future (after now "
        "+ 1 day)"
    )
    # ...and leave to ExifTool what it cannot be sure of
    for name in (
        "mpf.jpg",
        "two_exif.jpg",
        "png_named.jpg",
        "IMG_20000101_000000.JPG",
        "photo.jpeg",
        "iptc.jpg",
        "modify_only.jpg",
        "pillow_undated.jpg",
        "dto_future.jpg",
        "zone_odd.jpg",
        "dto_dashes.jpg",
        "ifd0_dto.jpg",
        "cut3.jpg",
        "cut20.jpg",
        "apple_live.jpg",
    ):
        assert name not in answered, name
    assert sum(name.startswith("fuzz") for name in answered) > 20


def test_jpeg_tags_refuses_what_is_not_a_jpeg() -> None:
    assert quickmeta.jpeg_tags(b"") is None
    assert quickmeta.jpeg_tags(b"\x89PNG\r\n\x1a\n" + b"\0" * 100) is None
    assert quickmeta.jpeg_tags(b"\xff\xd8\xff") is None
