"""metadata against the real exiftool and real files: one test per rule of the issue
"Capture dates and file types people can trust", then the stay-open process's faults
(killed, hung, parent killed), made for real with signals."""

from __future__ import annotations

import fcntl
import gc
import os
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from daemon.errors import ToolError
from daemon.media.exiftool import ExifTool, ExifToolFailed
from daemon.media.metadata import Reader
from daemon.model import MediaInfo, NotMedia
from tests.helpers import wait_for
from tests.integration import media_factory as make

ROOT = Path(__file__).resolve().parents[2]
JULY = int(datetime(2021, 7, 1, 10, 0, tzinfo=UTC).timestamp() * 1e9)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every file the tests read, made once: Pillow, ffmpeg, one exiftool run for tags."""
    d = tmp_path_factory.mktemp("media")
    f: dict[str, Path] = {}
    for name in (
        "subsec",
        "offset",
        "all3",
        "create_modify",
        "modify",
        "zero",
        "future",
        "plain",
        "xmp",
        "iptc_date_only",
    ):
        f[name] = make.image(d / f"{name}.jpg")
    for suffix in (".png", ".webp", ".gif", ".tif"):
        f[suffix] = make.image(d / f"image{suffix}")
    f["jpeg_as_png"] = make.image(d / "jpeg.png", fmt="JPEG")
    f["png_as_jpg"] = make.image(d / "png.jpg", fmt="PNG")
    f["mov"] = make.video(d / "clip.mov")
    f["mp4"] = make.video(d / "clip.mp4")
    for name in ("qt_summer", "qt_winter", "keys"):
        f[name] = make.copy(f["mov"], d / f"{name}.mov")
    f["text"] = make.text(d / "notes.jpg")
    f["junk"] = make.junk(d / "junk.jpg")
    f["truncated"] = make.truncated(f["plain"], d / "truncated.jpg")
    f["empty"] = make.text(d / "empty.jpg", "")
    make.write_tags(
        {
            f["subsec"]: {
                "DateTimeOriginal": "2021:03:04 05:06:07",
                "SubSecTimeOriginal": "123",
                "OffsetTimeOriginal": "+09:00",
            },
            f["offset"]: {
                "DateTimeOriginal": "2021:03:04 05:06:07",
                "OffsetTimeOriginal": "-05:00",
            },
            f["all3"]: {
                "DateTimeOriginal": "2021:01:01 01:01:01",
                "CreateDate": "2020:02:02 02:02:02",
                "ModifyDate": "2019:03:03 03:03:03",
            },
            f["create_modify"]: {
                "CreateDate": "2020:02:02 02:02:02",
                "ModifyDate": "2019:03:03 03:03:03",
            },
            f["modify"]: {"ModifyDate": "2019:03:03 03:03:03", "OffsetTime": "+01:00"},
            f["zero"]: {
                "DateTimeOriginal#": "0000:00:00 00:00:00",
                "CreateDate": "2020:02:02 02:02:02",
            },
            f["future"]: {
                "DateTimeOriginal": "2099:01:01 00:00:00",
                "CreateDate": "2020:02:02 02:02:02",
            },
            f["xmp"]: {
                "XMP-photoshop:DateCreated": "2018:05:06 07:08:09+02:00",
                "ModifyDate": "2019:03:03 03:03:03",
            },
            f["iptc_date_only"]: {"IPTC:DateCreated": "2017:06:07"},
            f["qt_summer"]: {
                "QuickTime:CreateDate": "2021:07:01 10:00:00",
                "TrackCreateDate": "2021:07:01 10:00:00",
                "MediaCreateDate": "2021:07:01 10:00:00",
            },
            f["qt_winter"]: {"QuickTime:CreateDate": "2021:01:15 10:00:00"},
            f["keys"]: {
                "Keys:CreationDate": "2021:03:04 05:06:07+09:00",
                "QuickTime:CreateDate": "2021:03:03 20:06:07",
            },
            f["mp4"]: {"Keys:CreationDate": "2020:12:31 23:59:59-08:00"},
        }
    )
    f["large"] = make.large_video(f["qt_summer"], d / "large.mov")  # after its tags
    return f


@pytest.fixture(scope="module")
def berlin(media: dict[str, Path]) -> Iterator[Reader]:
    with Reader(timezone="Europe/Berlin") as reader:
        yield started(reader, media)


@pytest.fixture(scope="module")
def new_york(media: dict[str, Path]) -> Iterator[Reader]:
    with Reader(timezone="America/New_York") as reader:
        yield started(reader, media)


def started(reader: Reader, media: dict[str, Path]) -> Reader:
    """`reader` with its ExifTool running (a video is not read in-process): the process
    is the module's fixture's, not the first test's that reads with it (the leak check)."""
    reader.describe(os.fsencode(media["mp4"]), "clip.mp4", JULY)
    assert reader.pid is not None
    return reader


def describe(
    reader: Reader, path: Path, name: str | None = None, mtime_ns: int = JULY
) -> MediaInfo:
    info = reader.describe(os.fsencode(path), name or path.name, mtime_ns)
    assert isinstance(info, MediaInfo), info
    return info


def state(pid: int) -> str:
    """The process's state letter from /proc ("" once it is reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def gone(pid: int) -> bool:
    """The process has exited (a zombie whose parent is gone counts as exited)."""
    return state(pid) in ("", "Z", "X")


def freeze(pid: int) -> None:
    """SIGSTOP, and wait until it has taken effect: a frozen exiftool reads nothing."""
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: state(pid) == "T", 10, f"{pid} to stop")


def queued_input(pid: int) -> int:
    """Bytes waiting unread in the pipe that is `pid`'s stdin."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return int.from_bytes(buf, sys.byteorder)
    finally:
        os.close(fd)


# --- capture dates -----------------------------------------------------------------------


def test_subseconds_and_offset_come_from_the_composite(
    media: dict[str, Path], berlin: Reader
) -> None:
    info = describe(berlin, media["subsec"])
    assert info.captured == datetime(2021, 3, 4, 5, 6, 7, 123000)
    assert info.utc_offset == 9 * 3600
    assert (info.date_source, info.confidence) == ("Composite:SubSecDateTimeOriginal", "high")
    assert info.date_raw == "2021:03:04 05:06:07.123+09:00"


def test_offset_time_original_is_recorded_and_wall_time_kept(
    media: dict[str, Path], berlin: Reader
) -> None:
    info = describe(berlin, media["offset"])
    assert info.captured == datetime(2021, 3, 4, 5, 6, 7)  # not moved to Berlin time
    assert info.utc_offset == -5 * 3600


def test_date_time_original_beats_create_date_beats_modify_date(
    media: dict[str, Path], berlin: Reader
) -> None:
    first = describe(berlin, media["all3"])
    assert (first.captured, first.date_source) == (
        datetime(2021, 1, 1, 1, 1, 1),
        "ExifIFD:DateTimeOriginal",
    )
    second = describe(berlin, media["create_modify"])
    assert (second.captured, second.date_source) == (
        datetime(2020, 2, 2, 2, 2, 2),
        "ExifIFD:CreateDate",
    )
    third = describe(berlin, media["modify"])
    assert (third.captured, third.date_source) == (
        datetime(2019, 3, 3, 3, 3, 3),
        "Composite:SubSecModifyDate",
    )
    assert (third.utc_offset, third.confidence) == (3600, "medium")


def test_zero_dates_are_skipped(media: dict[str, Path], berlin: Reader) -> None:
    info = describe(berlin, media["zero"])
    assert (info.captured, info.date_source) == (
        datetime(2020, 2, 2, 2, 2, 2),
        "ExifIFD:CreateDate",
    )


def test_a_future_date_is_skipped(media: dict[str, Path], berlin: Reader) -> None:
    info = describe(berlin, media["future"])
    assert info.date_source == "ExifIFD:CreateDate"


@pytest.mark.parametrize(
    ("reader", "clip", "wall", "offset"),
    [
        ("berlin", "qt_summer", datetime(2021, 7, 1, 12), 2 * 3600),  # CEST
        ("berlin", "qt_winter", datetime(2021, 1, 15, 11), 3600),  # CET
        ("new_york", "qt_summer", datetime(2021, 7, 1, 6), -4 * 3600),  # EDT
        ("new_york", "qt_winter", datetime(2021, 1, 15, 5), -5 * 3600),  # EST
    ],
)
def test_quicktime_utc_is_converted_to_the_configured_zone(
    media: dict[str, Path],
    berlin: Reader,
    new_york: Reader,
    reader: str,
    clip: str,
    wall: datetime,
    offset: int,
) -> None:
    info = describe({"berlin": berlin, "new_york": new_york}[reader], media[clip])
    assert (info.captured, info.utc_offset) == (wall, offset)
    assert (info.date_source, info.confidence) == ("QuickTime:CreateDate", "high")


def test_a_video_past_2_gb_keeps_its_date(media: dict[str, Path], berlin: Reader) -> None:
    assert media["large"].stat().st_size > 3 * 1024**3
    info = describe(berlin, media["large"])  # needs -api LargeFileSupport=1 in 12.x
    assert (info.captured, info.date_source) == (datetime(2021, 7, 1, 12), "QuickTime:CreateDate")


def test_keys_creation_date_keeps_its_wall_time(
    media: dict[str, Path], berlin: Reader, new_york: Reader
) -> None:
    for reader in (berlin, new_york):
        info = describe(reader, media["keys"])
        assert (info.captured, info.utc_offset) == (datetime(2021, 3, 4, 5, 6, 7), 9 * 3600)
        assert info.date_source == "Keys:CreationDate"
    mp4 = describe(berlin, media["mp4"])
    assert (mp4.captured, mp4.utc_offset) == (datetime(2020, 12, 31, 23, 59, 59), -8 * 3600)


def test_xmp_and_iptc_dates_come_before_modify_date(media: dict[str, Path], berlin: Reader) -> None:
    xmp = describe(berlin, media["xmp"])
    assert (xmp.captured, xmp.utc_offset) == (datetime(2018, 5, 6, 7, 8, 9), 2 * 3600)
    assert (xmp.date_source, xmp.confidence) == ("XMP-photoshop:DateCreated", "medium")
    iptc = describe(berlin, media["iptc_date_only"])
    assert (iptc.captured, iptc.date_source) == (datetime(2017, 6, 7), "IPTC:DateCreated")


@pytest.mark.parametrize(
    ("name", "captured"),
    [
        ("IMG_20200101_123456.png", datetime(2020, 1, 1, 12, 34, 56)),
        ("20200102_123456.png", datetime(2020, 1, 2, 12, 34, 56)),
        ("PXL_20210101_123456789.png", datetime(2021, 1, 1, 13, 34, 56, 789000)),  # UTC name
        ("IMG-20200103-WA0001.png", datetime(2020, 1, 3)),
        ("Screenshot 2019-05-21 at 10.45.52.png", datetime(2019, 5, 21, 10, 45, 52)),
        ("Screenshot_20190522-104552.png", datetime(2019, 5, 22, 10, 45, 52)),
        ("signal-2021-01-04-12-30-00.png", datetime(2021, 1, 4, 12, 30)),
        ("2021-01-05 12.30.00.png", datetime(2021, 1, 5, 12, 30)),
    ],
)
def test_a_date_in_the_file_name(
    media: dict[str, Path], berlin: Reader, name: str, captured: datetime
) -> None:
    info = describe(berlin, media[".png"], name)
    assert (info.captured, info.date_source, info.confidence) == (captured, "filename", "medium")


def test_file_name_dates_in_one_batch(media: dict[str, Path], berlin: Reader) -> None:
    names = ["VID_20200101_010101.mp4", "holiday.mp4", "VID-20200202-WA0002.mp4"]
    got = berlin.describe_many([(os.fsencode(media["mov"]), n, JULY) for n in names])
    assert [(i.captured, i.date_source) for i in got if isinstance(i, MediaInfo)] == [
        (datetime(2020, 1, 1, 1, 1, 1), "filename"),
        (datetime(2021, 7, 1, 12), "mtime"),
        (datetime(2020, 2, 2), "filename"),
    ]


def test_mtime_is_the_last_resort_with_low_confidence(
    media: dict[str, Path], berlin: Reader, new_york: Reader
) -> None:
    summer = describe(berlin, media["plain"], "holiday.jpg", JULY)
    assert (summer.captured, summer.utc_offset) == (datetime(2021, 7, 1, 12), 7200)
    assert (summer.date_source, summer.date_raw, summer.confidence) == ("mtime", str(JULY), "low")
    winter = int(datetime(2021, 1, 15, 10, tzinfo=UTC).timestamp() * 1e9) + 250_000_000
    info = describe(new_york, media["mov"], "clip.mov", winter)  # its QuickTime dates are 0
    assert (info.captured, info.utc_offset) == (datetime(2021, 1, 15, 5, 0, 0, 250000), -18000)


# --- file types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "kind", "file_type", "ext"),
    [
        (".png", "image", "PNG", ".png"),
        (".webp", "image", "WEBP", ".webp"),
        (".gif", "image", "GIF", ".gif"),
        (".tif", "image", "TIFF", ".tif"),
        ("plain", "image", "JPEG", ".jpg"),
        ("mov", "video", "MOV", ".mov"),
        ("mp4", "video", "MP4", ".mp4"),
    ],
)
def test_file_type_comes_from_content(
    media: dict[str, Path], berlin: Reader, key: str, kind: str, file_type: str, ext: str
) -> None:
    info = describe(berlin, media[key])
    assert (info.kind, info.file_type, info.ext) == (kind, file_type, ext)


@pytest.mark.parametrize(
    ("key", "name", "ext"),
    [
        ("jpeg_as_png", "photo.png", ".jpg"),  # contradicts the content
        ("png_as_jpg", "photo.jpg", ".png"),
        ("plain", "photo", ".jpg"),  # no extension
        ("plain", "PHOTO.JPEG", ".jpeg"),  # a synonym agrees: kept, lower-cased
        (".tif", "scan.TIFF", ".tiff"),
        ("mov", "clip.mp4", ".mov"),
        ("plain", "x.j/../pg", ".jpg"),  # crafted: never reaches a path
    ],
)
def test_wrong_or_missing_extension_is_corrected(
    media: dict[str, Path], berlin: Reader, key: str, name: str, ext: str
) -> None:
    assert describe(berlin, media[key], name).ext == ext


def test_a_text_file_is_not_media(media: dict[str, Path], berlin: Reader) -> None:
    got = berlin.describe(os.fsencode(media["text"]), "notes.jpg", JULY)
    assert got == NotMedia("not a photo or video (ExifTool says: TXT, text/plain)")


def test_junk_truncated_empty_and_missing_files_never_raise(
    media: dict[str, Path], berlin: Reader, tmp_path: Path
) -> None:
    keys = ["junk", "truncated", "empty"]
    paths = [os.fsencode(media[k]) for k in keys] + [os.fsencode(tmp_path / "gone.jpg")]
    got = berlin.describe_many([(p, "IMG_1.jpg", JULY) for p in paths])
    assert got[0] == NotMedia("unrecognised file type (ExifTool says: File format error)")
    # 100 bytes of a JPEG: ExifTool still knows the type (with a warning); filed by mtime.
    assert isinstance(got[1], MediaInfo) and got[1].file_type == "JPEG"
    assert got[2] == NotMedia("empty file")
    assert isinstance(got[3], NotMedia) and "File not found" in got[3].reason
    assert berlin.restarts == 0
    assert describe(berlin, media["subsec"]).date_source == "Composite:SubSecDateTimeOriginal"


def test_odd_path_bytes_reach_exiftool_intact(
    media: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = os.fsencode(tmp_path) + b"/ lead \xff\xfe #x.jpg"
    make.copy(media["subsec"], Path(os.fsdecode(odd)))
    monkeypatch.chdir(tmp_path)
    make.copy(media["subsec"], tmp_path / "-n.jpg")  # relative, and looks like an option
    make.copy(media["subsec"], tmp_path / "#n.jpg")  # looks like an argfile comment
    with ExifTool() as et:
        for tags in et.read([odd, b"-n.jpg", b"#n.jpg"]):
            assert tags.get("ExifIFD:DateTimeOriginal") == "2021:03:04 05:06:07", tags


# --- the stay-open process ---------------------------------------------------------------


def test_several_files_in_one_request_keep_their_order(
    media: dict[str, Path], tmp_path: Path
) -> None:
    keys = ["subsec", "text", "mov", "all3", ".gif"]
    paths = [os.fsencode(media[k]) for k in keys]
    paths.insert(2, os.fsencode(tmp_path / "missing.jpg"))
    with ExifTool() as et:
        got = et.read(paths)
        assert [t.get("File:FileType") for t in got] == ["JPEG", "TXT", None, "MOV", "JPEG", "GIF"]
        assert "File not found" in got[2]["ExifTool:Error"]
        assert got[4]["ExifIFD:DateTimeOriginal"] == "2021:01:01 01:01:01"
        assert et.restarts == 0


def test_a_path_with_a_newline_is_refused(tmp_path: Path, berlin: Reader) -> None:
    with ExifTool() as et:
        with pytest.raises(ValueError, match="argfile"):
            et.read([os.fsencode(tmp_path) + b"/a\nb.jpg"])
        assert et.pid is None  # refused before anything was sent
    got = berlin.describe(b"/tmp/a\n-b.jpg", "a.jpg", JULY)
    assert isinstance(got, NotMedia) and "cannot be passed" in got.reason


def test_killed_between_requests_restarts(media: dict[str, Path]) -> None:
    with ExifTool() as et:
        et.read([os.fsencode(media["plain"])])
        pid = et.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: gone(pid), 10, "exiftool to die")
        got = et.read([os.fsencode(media["subsec"])])
        assert got[0]["ExifIFD:DateTimeOriginal"] == "2021:03:04 05:06:07"
        assert (et.restarts, et.pid != pid) == (1, True)


def test_killed_mid_request_raises_then_the_next_request_works(media: dict[str, Path]) -> None:
    with ExifTool() as et:
        paths = [os.fsencode(media["plain"]), os.fsencode(media["subsec"])]
        et.read(paths[:1])
        pid = et.pid
        assert pid is not None
        freeze(pid)  # it cannot answer, so the request stays in flight
        failures: list[ExifToolFailed] = []

        def request() -> None:
            try:
                et.read(paths)
            except ExifToolFailed as e:  # anything else fails the test as a thread exception
                failures.append(e)

        worker = threading.Thread(target=request)
        worker.start()
        try:
            wait_for(lambda: queued_input(pid) > 0, 10, "the request to be sent")
        finally:
            os.kill(pid, signal.SIGKILL)
            worker.join(timeout=20)
        assert not worker.is_alive()
        assert len(failures) == 1
        assert "died (killed by SIGKILL)" in str(failures[0]) and not failures[0].timed_out
        assert failures[0].done == []
        assert et.restarts == 1
        assert et.read(paths)[1]["ExifIFD:DateTimeOriginal"] == "2021:03:04 05:06:07"


def test_a_hung_exiftool_times_out_and_is_replaced(media: dict[str, Path]) -> None:
    with ExifTool(timeout=2.0) as et:
        path = os.fsencode(media["plain"])
        et.read([path])
        pid = et.pid
        assert pid is not None
        freeze(pid)
        started = time.monotonic()
        with pytest.raises(ExifToolFailed, match="timed out after 2 s") as failed:
            et.read([path, path])
        assert failed.value.timed_out and time.monotonic() - started < 5
        assert gone(pid) and et.restarts == 1
        assert et.read([path])[0]["File:FileType"] == "JPEG"


def test_reader_turns_a_hang_into_not_media_and_survives_a_kill(media: dict[str, Path]) -> None:
    with Reader(timezone="UTC", timeout=2.0, quick=False) as reader:  # ExifTool's faults
        path = os.fsencode(media["subsec"])
        assert isinstance(reader.describe(path, "a.jpg", JULY), MediaInfo)
        pid = reader.pid
        assert pid is not None
        freeze(pid)
        hung = reader.describe(path, "a.jpg", JULY)
        assert isinstance(hung, NotMedia) and "timed out after 2 s" in hung.reason
        assert reader.restarts == 1
        pid = reader.pid
        assert pid is None  # replaced lazily, by the next request
        assert isinstance(reader.describe(path, "a.jpg", JULY), MediaInfo)
        pid = reader.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # someone else's kill: the file is read again
        wait_for(lambda: gone(pid), 10, "exiftool to die")
        again = reader.describe(path, "a.jpg", JULY)
        assert isinstance(again, MediaInfo) and reader.restarts == 2


def test_missing_or_broken_exiftool_is_a_tool_error(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="exiftool not found"):
        ExifTool("/nonexistent/exiftool")
    with pytest.raises(ToolError):
        Reader(exiftool="no-such-exiftool-here")
    broken = tmp_path / "exiftool"
    broken.write_text("#!/bin/sh\necho 'Cannot locate Image/ExifTool.pm' >&2\nexit 2\n")
    broken.chmod(0o755)
    # Installed but unable to start: the tool's fault, not the file's.
    with (
        Reader(exiftool=str(broken)) as reader,
        pytest.raises(ToolError, match=r"did not start \(died\): Cannot locate"),
    ):
        reader.describe(b"/x.jpg", "x.jpg", JULY)


def test_close_is_idempotent_and_reaps(media: dict[str, Path]) -> None:
    et = ExifTool()
    et.read([os.fsencode(media["plain"])])
    pid = et.pid
    assert pid is not None
    et.close()
    et.close()
    assert et.pid is None and gone(pid)
    assert et.read([os.fsencode(media["plain"])])[0]["File:FileType"] == "JPEG"  # starts anew
    et.close()
    assert et.restarts == 0
    dropped = ExifTool()
    dropped.read([os.fsencode(media["plain"])])
    pid = dropped.pid
    assert pid is not None
    del dropped  # never closed: its finalizer stops exiftool, with no ResourceWarning
    gc.collect()
    assert gone(pid)


CHILD = """
import os, signal, sys
from daemon.media.exiftool import ExifTool
et = ExifTool()
et.read([sys.argv[1].encode()])
print(et.pid, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_no_exiftool_outlives_its_python(media: dict[str, Path], how: str) -> None:
    """Normal exit: the finalizer stops it. SIGKILL: exiftool would poll its closed stdin
    forever, so it is started with a parent-death signal."""
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(media["plain"]), how],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert child.returncode == (0 if how == "exit" else -signal.SIGKILL), child.stderr
    assert "Warning" not in child.stderr
    pid = int(child.stdout)
    wait_for(lambda: gone(pid), 10, f"exiftool {pid} to exit")


# --- round 2 (issue 12): other groups' dates, precision, types, Live Photo identifiers ----


@pytest.fixture(scope="module")
def round2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real files for each class: Pillow and ffmpeg output, bytes written from the
    formats' documentation, tags written by the real exiftool."""
    d = tmp_path_factory.mktemp("round2")
    f: dict[str, Path] = {}
    f["png_text"] = make.png_text(d / "text.png", {"Creation Time": "2018:03:04 05:06:07"})
    f["png_time"] = make.image(d / "time.png")
    f["avi"] = make.ffmpeg_video(d / "clip.avi", "avi", "mjpeg", {"date": "2019-05-04"})
    f["avi_idit"] = make.with_riff_chunk(
        f["avi"], d / "idit.avi", b"IDIT", b"Mon Mar 03 09:44:56 2005\n\0"
    )
    f["mkv"] = make.ffmpeg_video(
        d / "clip.mkv", "matroska", metadata={"creation_time": "2019-05-04T05:06:07Z"}
    )
    f["mxf"] = make.ffmpeg_video(
        d / "clip.mxf", "mxf", "mpeg2video", {"creation_time": "2016-02-03T04:05:06Z"}, rate=25
    )
    f["mts"] = make.ffmpeg_video(d / "clip.mts", "mpegts", "mpeg2video")
    f["avif_seq"] = make.ffmpeg_video(d / "anim.avif", "avif", "libaom-av1")  # major brand avis
    f["psd"] = make.psd(d / "layers.psd")
    f["psd_dated"] = make.psd(d / "dated.psd")
    f["psb"] = make.psd(d / "big.psb", big=True)
    f["psd_named_jpg"] = make.psd(d / "layers.jpg")
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    f["webp_anim"] = d / "anim.webp"
    frames[0].save(f["webp_anim"], save_all=True, append_images=frames[1:], duration=100)
    f["iptc_both"] = make.image(d / "iptc_both.jpg")
    f["iptc_day"] = make.image(d / "iptc_day.jpg")
    f["xmp_minute"] = make.image(d / "xmp_minute.jpg")
    f["still"] = make.apple_still(d / "IMG_0002.JPG", "2021:03:04 05:06:07", "CID-0002", "+01:00")
    f["video"] = make.apple_video(d / "IMG_0002.MOV", "2021-03-04T05:06:08+0100", "CID-0002")
    make.write_tags(
        {
            f["png_time"]: {"PNG:ModifyDate": "2015:01:02 03:04:05"},
            f["psd_dated"]: {"DateTimeOriginal": "2014:05:06 07:08:09"},
            f["iptc_both"]: {
                "IPTC:DateCreated": "2017:06:07",
                "IPTC:TimeCreated": "08:09:10+02:00",
                "ModifyDate": "2017:06:07 23:00:00",
            },
            f["iptc_day"]: {"IPTC:DateCreated": "2017:06:07", "ModifyDate": "2017:06:07 21:22:23"},
            f["xmp_minute"]: {
                "XMP-xmp:CreateDate": "2019:05:04 05:53+02:00",
                "ModifyDate": "2019:05:04 05:53:12",
            },
        }
    )
    return f


@pytest.mark.parametrize(
    ("key", "source", "captured", "offset"),
    [
        ("png_text", "PNG:CreationTime", datetime(2018, 3, 4, 5, 6, 7), None),
        ("png_time", "PNG:ModifyDate", datetime(2015, 1, 2, 4, 4, 5), 3600),  # tIME is UTC
        ("avi_idit", "RIFF:DateTimeOriginal", datetime(2005, 3, 3, 9, 44, 56), None),
        ("avi", "RIFF:DateCreated", datetime(2019, 5, 4), None),  # ICRD: a day
        ("mkv", "Matroska:DateTimeOriginal", datetime(2019, 5, 4, 7, 6, 7), 7200),
        ("mxf", "MXF:CreateDate", datetime(2016, 2, 3, 5, 5, 6), 3600),
    ],
)
def test_other_containers_dates_from_real_files(
    round2: dict[str, Path],
    berlin: Reader,
    key: str,
    source: str,
    captured: datetime,
    offset: int | None,
) -> None:
    info = describe(berlin, round2[key], "holiday" + round2[key].suffix)
    assert (info.date_source, info.captured, info.utc_offset) == (source, captured, offset)


def test_every_groups_date_time_original_in_exiftools_tables_is_a_capture_date(
    berlin: Reader,
) -> None:
    """The rule over ExifTool's own tag tables (exiftool -listx): every group that has a
    DateTimeOriginal ranks it after the EXIF dates and before XMP, IPTC and names."""
    import re

    from daemon.rules.mediainfo import decide

    listing = subprocess.run(
        ["exiftool", "-config", "", "-listx"], capture_output=True, check=True, text=True
    ).stdout
    # <table name='...' g0='...' g1='GROUP' ...> ... <tag ... name='DateTimeOriginal' ...
    groups = {
        m[1]
        for m in re.finditer(r"<table [^>]*\bg1='([^']*)'[^>]*>(.*?)</table>", listing, re.DOTALL)
        if re.search(r"<tag [^>]*\bname='DateTimeOriginal'", m[2])
    }
    groups -= {"Composite", "IFD0", "ExifIFD"}  # ranked by rules of their own
    groups = {g for g in groups if g and not g.startswith("XMP")}
    assert {
        "CanonRaw",
        "SigmaRaw",
        "KyoceraRaw",
        "Casio",
        "PictureInfo",
        "Reconyx",
        "H264",
        "RIFF",
        "Matroska",
    } <= groups
    lower = {
        "XMP-exif:DateTimeOriginal": "2012:01:01 01:01:01",
        "IPTC:DateCreated": "2012:01:03",
        "IFD0:ModifyDate": "2012:01:04 01:01:01",
        "File:FileType": "JPEG",
        "File:MIMEType": "image/jpeg",
    }
    now = datetime.now(UTC)
    for group in sorted(groups):
        tag = f"{group}:DateTimeOriginal"
        got = decide(
            {tag: "2011:02:03 04:05:06", **lower}, "IMG_20130101_101010.jpg", JULY, berlin.tz, now
        )
        assert isinstance(got, MediaInfo) and got.date_source == tag, (tag, got)
        exif = decide(
            {
                "ExifIFD:DateTimeOriginal": "2010:01:01 00:00:00",
                tag: "2011:02:03 04:05:06",
                **lower,
            },
            "x.jpg",
            JULY,
            berlin.tz,
            now,
        )
        assert isinstance(exif, MediaInfo) and exif.date_source == "ExifIFD:DateTimeOriginal"


def test_precision_on_real_files(round2: dict[str, Path], berlin: Reader) -> None:
    both = describe(berlin, round2["iptc_both"])  # IPTC DateCreated + TimeCreated together
    assert (both.date_source, both.captured, both.utc_offset) == (
        "Composite:DateTimeCreated",
        datetime(2017, 6, 7, 8, 9, 10),
        7200,
    )
    day = describe(berlin, round2["iptc_day"])  # a day gives way to a time of that day
    assert (day.date_source, day.captured) == ("IFD0:ModifyDate", datetime(2017, 6, 7, 21, 22, 23))
    minute = describe(berlin, round2["xmp_minute"])  # a minute to a second of that minute
    assert (minute.date_source, minute.captured, minute.utc_offset) == (
        "IFD0:ModifyDate",
        datetime(2019, 5, 4, 5, 53, 12),
        7200,
    )


@pytest.mark.parametrize(
    ("key", "name", "kind", "ftype", "ext"),
    [
        ("psd", "layers.psd", "image", "PSD", ".psd"),
        ("psb", "big.psb", "image", "PSB", ".psb"),
        ("psd_named_jpg", "layers.jpg", "image", "PSD", ".psd"),  # by content
        ("webp_anim", "anim.webp", "image", "Extended WEBP", ".webp"),
        ("avif_seq", "anim.avif", "image", "AVIF", ".avif"),  # ExifTool 12.57: MP4
        ("avi", "clip.avi", "video", "AVI", ".avi"),  # MJPEG AVI
        ("mts", "clip.mts", "video", "M2T", ".mts"),
        ("mxf", "clip.mxf", "video", "MXF", ".mxf"),
    ],
)
def test_pictures_and_movies_whatever_their_mime_type(
    round2: dict[str, Path], berlin: Reader, key: str, name: str, kind: str, ftype: str, ext: str
) -> None:
    info = describe(berlin, round2[key], name)
    assert (info.kind, info.file_type, info.ext) == (kind, ftype, ext)


def test_a_photoshop_document_is_dated_like_a_photo(
    round2: dict[str, Path], berlin: Reader
) -> None:
    info = describe(berlin, round2["psd_dated"])
    assert (info.date_source, info.captured) == (
        "ExifIFD:DateTimeOriginal",
        datetime(2014, 5, 6, 7, 8, 9),
    )


def test_live_photo_identifiers_are_read_from_both_halves(
    round2: dict[str, Path], berlin: Reader
) -> None:
    still, video = (describe(berlin, round2[k]) for k in ("still", "video"))
    assert (still.content_id, still.date_source) == ("CID-0002", "Composite:SubSecDateTimeOriginal")
    assert (video.content_id, video.captured, video.date_source) == (
        "CID-0002",
        datetime(2021, 3, 4, 5, 6, 8),
        "Keys:CreationDate",
    )
    # the in-process reader leaves a still with an Apple maker note to ExifTool
    assert (
        berlin._quick(os.fsencode(round2["still"]), "IMG_0002.JPG", JULY, datetime.now(UTC)) is None
    )


def test_a_skipped_future_date_is_named(media: dict[str, Path], berlin: Reader) -> None:
    info = describe(berlin, media["future"])
    assert info.date_skipped == (
        "ExifIFD:DateTimeOriginal = '2099:01:01 00:00:00': in the future (after now + 1 day)"
    )


# Every FileType ExifTool knows, decided: the pictures and movies whose MIME type is not
# image/* or video/*, and the image/* or video/* types that are neither. (AVI and WEBP get
# video/x-msvideo and image/webp at run time, the QuickTime family its MIME by brand.)
MEDIA_BY_RULE = {"PSD", "PSB", "CS1", "EIP", "ARQ", "MXF", "RM", "RMVB", "AVI", "WEBP"}
NOT_MEDIA_BY_RULE = {
    "SVG",
    "DWG",
    "ICO",
    "CUR",
    "DJVU",
    "EXV",
    "VNT",
    "M4A",
    "M4B",
    "M4P",
    "F4A",
    "F4B",
    "AAX",
}
RUN_TIME_MIME = {
    "AVI": "video/x-msvideo",
    "WEBP": "image/webp",
    "M4A": "audio/mp4",
    "M4B": "audio/mp4",
    "M4P": "audio/mp4",
    "F4A": "audio/mp4",
    "F4B": "audio/mp4",
    "AAX": "audio/vnd.audible.aax",
}


def test_every_exiftool_file_type_is_decided_by_rule() -> None:
    """ExifTool's own table of file types (%fileTypeLookup) and MIME types (%mimeType, the
    base type's when a type has none, as SetFileType does): each is a picture, a movie, or
    neither, by the rule book, and the exceptions to "image/* or video/*" are these."""
    from daemon.rules.mediainfo import decide

    script = (
        "my %m = %Image::ExifTool::mimeType; my %l = %Image::ExifTool::fileTypeLookup;"
        "for my $t (sort keys %l) { my $v = $l{$t}; next unless ref $v;"
        " my $b = ref $v->[0] ? $v->[0][0] : $v->[0]; my $mm = $m{$t};"
        ' $mm = $m{$b} unless $mm or $b eq "TIFF";'
        ' print "$t\\t", $mm || "application/unknown", "\\n" }'
    )
    table = subprocess.run(
        ["perl", "-MImage::ExifTool", "-e", script], capture_output=True, text=True, check=True
    ).stdout
    types = dict(line.split("\t") for line in table.splitlines())
    assert len(types) > 250 and {"PSD", "MXF", "JXL", "DNG", "AVIF", "M2TS"} <= set(types)
    now = datetime.now(UTC)
    wrong = []
    for ftype, static in sorted(types.items()):
        mime = RUN_TIME_MIME.get(ftype, static)
        got = decide(
            {
                "File:FileType": ftype,
                "File:MIMEType": mime,
                "File:FileTypeExtension": ftype.lower(),
            },
            "x",
            JULY,
            UTC,
            now,
        )
        want = ftype in MEDIA_BY_RULE or (
            mime.split("/")[0] in ("image", "video") and ftype not in NOT_MEDIA_BY_RULE
        )
        if isinstance(got, MediaInfo) != want:
            wrong.append((ftype, mime, got))
    # A Windows Media Center recording: a movie, but its extension (.dvr-ms) is no safe
    # library extension: rejected with that reason, never lost.
    assert wrong == [
        ("DVR-MS", "video/x-ms-dvr", NotMedia("no usable file extension for DVR-MS content"))
    ]
