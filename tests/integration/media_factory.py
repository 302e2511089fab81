"""Real media files for the integration tests: tiny images from Pillow, tiny videos from
ffmpeg, and tags written by the real exiftool (all of a batch in one exiftool run).

Nothing here is a fake: whatever the daemon reads from these, it would read from a
camera's file carrying the same tags.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

# Pillow's format for each suffix we make; the format may be forced to lie about it.
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF",
           ".tif": "TIFF", ".tiff": "TIFF"}


def image(path: Path, fmt: str | None = None, color: str = "red") -> Path:
    """An 8x8 image at `path`, in `fmt` (default: the one its suffix names)."""
    fmt = fmt or FORMATS[path.suffix.lower()]
    Image.new("RGB", (8, 8), color).save(path, format=fmt)
    return path


def video(path: Path, container: str | None = None) -> Path:
    """A 0.2 s, 16x16 video (MPEG-4 Part 2: the fastest encoder to start) at `path`."""
    container = container or path.suffix.lstrip(".").lower()
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "color=c=blue:s=16x16:r=5:d=0.2", "-c:v", "mpeg4",
                    "-f", container, str(path)], check=True)
    return path


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
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        atoms[kind] = data[at:at + size]
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
    done = subprocess.run(["exiftool", "-config", "", "-q", "-@", "-"],
                          input="\n".join(lines) + "\n", capture_output=True, text=True,
                          check=False)
    if done.returncode != 0 or done.stderr.strip():
        raise RuntimeError(f"exiftool could not write test tags: {done.stderr.strip()}")
