"""Real media files for the integration tests: tiny images from Pillow, tiny videos from
ffmpeg, and tags written by the real exiftool (all of a batch in one exiftool run).

Nothing here is a fake: whatever the daemon reads from these, it would read from a
camera's file carrying the same tags.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from PIL import Image

# Pillow's format for each suffix we make; the format may be forced to lie about it.
FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


def photo(
    when: datetime | None,
    seed: int,
    *,
    make: str | None = None,
    model: str | None = None,
    subsec: str | None = None,
) -> bytes:
    """A small real JPEG with the EXIF a camera writes (date, sub-second, make, model)."""
    rng = random.Random(seed)
    img = Image.new("RGB", (16, 16), (rng.randrange(256), rng.randrange(256), seed % 256))
    exif = Image.Exif()
    exif[0x010E] = f"naming test {seed}"
    if make is not None:
        exif[0x010F] = make
    if model is not None:
        exif[0x0110] = model
    if when is not None:
        exif.get_ifd(0x8769)[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")
        if subsec is not None:
            exif.get_ifd(0x8769)[0x9291] = subsec
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif.tobytes(), quality=90)
    return out.getvalue()


def image(path: Path, fmt: str | None = None, color: str = "red") -> Path:
    """An 8x8 image at `path`, in `fmt` (default: the one its suffix names)."""
    fmt = fmt or FORMATS[path.suffix.lower()]
    Image.new("RGB", (8, 8), color).save(path, format=fmt)
    return path


def video(path: Path, container: str | None = None) -> Path:
    """A 0.2 s, 16x16 video (MPEG-4 Part 2: the fastest encoder to start) at `path`."""
    return ffmpeg_video(path, container or path.suffix.lstrip(".").lower())


def copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def text(path: Path, content: str = "not a photo\n") -> Path:
    path.write_text(content)
    return path


def junk(path: Path, size: int = 3000) -> Path:
    """Bytes no format starts with (a fixed pattern, so runs are repeatable)."""
    path.write_bytes(bytes((i * 7 + 3) % 251 for i in range(size)))
    return path


def truncated(src: Path, dst: Path, size: int = 100) -> Path:
    """The first `size` bytes of `src`: a copy cut short."""
    dst.write_bytes(src.read_bytes()[:size])
    return dst


def large_video(src: Path, dst: Path, gap: int = 3 * 1024**3) -> Path:
    """`src` (a QuickTime file) rebuilt as ftyp, a sparse `gap`-byte mdat, then moov: the
    layout of a long camera clip, whose metadata sits past the 2 GB mark. Takes a few KB
    of disk."""
    data, atoms, at = src.read_bytes(), {}, 0
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        atoms[kind] = data[at : at + size]
        at += size
    with open(dst, "wb") as f:
        f.write(atoms[b"ftyp"])
        f.write(struct.pack(">I4sQ", 1, b"mdat", gap + 16))  # size 1: a 64-bit size follows
        f.seek(gap, os.SEEK_CUR)
        f.write(atoms[b"moov"])
    return dst


def write_tags(files: Mapping[Path, Mapping[str, str]]) -> None:
    """Write tags with the real exiftool: {path: {"DateTimeOriginal": "2021:...", ...}}.

    One exiftool run for all files, one command each. A name ending in '#' writes the
    raw value (how '0000:00:00 00:00:00' gets past exiftool's date checks). QuickTime
    dates are stored exactly as given: the spec says UTC, so give UTC.
    """
    lines: list[str] = []
    for path, tags in files.items():
        lines.append("-overwrite_original")
        lines += [f"-{name}={value}" for name, value in tags.items()]
        lines += [os.fspath(path), "-execute"]
    done = subprocess.run(
        ["exiftool", "-config", "", "-q", "-@", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or done.stderr.strip():
        raise RuntimeError(f"exiftool could not write test tags: {done.stderr.strip()}")


def apple_maker_note(content_id: str) -> bytes:
    """An Apple iOS maker note holding only the Live Photo identifier, laid out as
    ExifTool reads it (MakerNotes.pm MakerNoteApple, Apple.pm): "Apple iOS\\0", version
    1, "MM", then an IFD at offset 14 whose offsets count from the note's start; tag
    0x0011 (ExifTool 12.19+: MediaGroupUUID, before: ContentIdentifier) is a string."""
    value = content_id.encode() + b"\0"
    data_at = 14 + 2 + 12 + 4
    ifd = struct.pack(">H", 1) + struct.pack(">HHII", 0x0011, 2, len(value), data_at)
    return b"Apple iOS\0" + b"\0\x01" + b"MM" + ifd + struct.pack(">I", 0) + value


def apple_still(
    path: Path, taken: str, content_id: str | None, offset: str | None = None, color: str = "red"
) -> Path:
    """An iPhone-like JPEG: Make Apple, DateTimeOriginal `taken` (EXIF form), its zone,
    and (when given) the Live Photo identifier in an Apple maker note."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Apple", "iPhone 12"
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = taken
    if offset is not None:
        sub[0x9011] = offset
    if content_id is not None:
        sub[0x927C] = apple_maker_note(content_id)
    Image.new("RGB", (8, 8), color).save(path, format="JPEG", exif=exif)
    return path


def apple_video(path: Path, created: str, content_id: str | None) -> Path:
    """A Live Photo-like MOV: Keys CreationDate `created` (ISO 8601 with its zone) and
    (when given) Keys ContentIdentifier, written as QuickTime 'mdta' keys by ffmpeg."""
    meta = {"com.apple.quicktime.creationdate": created}
    if content_id is not None:
        meta["com.apple.quicktime.content.identifier"] = content_id
    return ffmpeg_video(path, "mov", metadata=meta, extra=("-movflags", "use_metadata_tags"))


def psd(path: Path, big: bool = False, size: int = 4) -> Path:
    """A minimal valid Photoshop document from Adobe's file format specification: the
    26-byte header ("8BPS", version 1, or 2 for PSB), empty colour mode data, image
    resources and layer/mask sections (PSB: an 8-byte length), raw RGB image data."""
    head = b"8BPS" + struct.pack(">H", 2 if big else 1) + b"\0" * 6
    head += struct.pack(">HIIHH", 3, size, size, 8, 3)
    sections = struct.pack(">II", 0, 0) + struct.pack(">Q" if big else ">I", 0)
    path.write_bytes(head + sections + struct.pack(">H", 0) + bytes(3 * size * size))
    return path


def with_riff_chunk(src: Path, dst: Path, fourcc: bytes, body: bytes) -> Path:
    """`src` (a RIFF file: AVI, WebP) with one more top-level chunk at its end and its
    RIFF size mended: how a camera's IDIT (AVI capture date) chunk sits in the file."""
    data = bytearray(src.read_bytes())
    chunk = fourcc + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")
    data += chunk
    struct.pack_into("<I", data, 4, len(data) - 8)
    dst.write_bytes(bytes(data))
    return dst


def png_text(path: Path, text: Mapping[str, str]) -> Path:
    """An 8x8 PNG with tEXt chunks (e.g. {"Creation Time": "2018:03:04 05:06:07"})."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8), "green").save(path, format="PNG", pnginfo=info)
    return path


def ffmpeg_video(
    path: Path,
    fmt: str,
    codec: str = "mpeg4",
    metadata: Mapping[str, str] | None = None,
    rate: int = 5,
    extra: Sequence[str] = (),
) -> Path:
    """A 0.2 s 16x16 video in container `fmt` with `codec`, ffmpeg metadata and `extra`
    output options."""
    meta = [a for k, v in (metadata or {}).items() for a in ("-metadata", f"{k}={v}")]
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"color=c=blue:s=16x16:r={rate}:d=0.2",
            "-c:v",
            codec,
            *extra,
            *meta,
            "-f",
            fmt,
            str(path),
        ],
        check=True,
    )
    return path
