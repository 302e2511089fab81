"""Does a file look cut short (`cut_short`)? A second line of defence behind the read lease
and the close-after-write event, for a writer that closes and reopens the file between
chunks (no writer in the pause: nothing in the kernel can tell). Reads only, from an open
descriptor: a few header and tail reads, never the whole file in the common case:

- JPEG: an EOI marker (FF D9) after the start of the image data; padding or a trailer
  after it (zeros, Samsung's SEFT, a Motion Photo's video) is fine. The tail is looked at
  first; only when it has no EOI (a large trailer) are the markers walked to find it.
- PNG: the IEND chunk in the tail (anything after it is fine).
- MP4 / MOV / 3GP / CR3 (ISO base media): the top-level boxes add up to the file size
  (a box running past the end is a file cut short) and a `moov` box is among them
  (HEIF/AVIF stills have `meta` instead and are not asked for one).

Anything else, and anything unreadable, is not judged (None): this never rejects.
"""

from __future__ import annotations

import os

TAIL = 64 * 1024
WINDOW = 1024 * 1024
_HEIF_BRANDS = {
    b"heic",
    b"heix",
    b"heim",
    b"heis",
    b"hevc",
    b"hevx",
    b"mif1",
    b"msf1",
    b"avif",
    b"avis",
    b"avci",
    b"jpeg",
    b"miaf",
}
_BMFF_FIRST = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


def cut_short(fd: int, size: int) -> str | None:
    """Why the open file of `size` bytes looks cut short, or None (complete, or a kind
    not judged)."""
    try:
        head = os.pread(fd, 16, 0)
        if head.startswith(b"\xff\xd8\xff"):
            return _jpeg(fd, size)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            tail = os.pread(fd, min(size, 4096), max(0, size - 4096))
            return None if b"IEND\xaeB`\x82" in tail else "a PNG without its IEND chunk"
        if len(head) >= 8 and head[4:8] in _BMFF_FIRST:
            return _bmff(fd, size)
    except (OSError, ValueError):
        return None
    return None


class _Window:
    """The file's bytes read through pread, a window at a time (never mmap: a file
    truncated under a mapping would kill the daemon with SIGBUS)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self.start, self.data = 0, b""

    def _load(self, pos: int, n: int = 4096) -> None:
        if not self.start <= pos < self.start + len(self.data):
            self.start, self.data = pos, os.pread(self.fd, n, pos)
            if not self.data:
                raise ValueError("the file ended early")  # shrank meanwhile: not judged

    def __getitem__(self, i: int) -> int:
        self._load(i)
        return self.data[i - self.start]

    def two(self, i: int) -> int:
        return self[i] << 8 | self[i + 1]

    def find_ff(self, pos: int) -> int:
        while pos < self.size:
            self._load(pos, WINDOW)
            j = self.data.find(b"\xff", pos - self.start)
            if j >= 0:
                return self.start + j
            pos = self.start + len(self.data)
        return -1


def _jpeg(fd: int, size: int) -> str | None:
    m = _Window(fd, size)
    sos = _segments(m, 2, size)
    if sos is None:
        return "a JPEG whose headers run past the end"
    if sos < 0:  # an EOI before any image data (a marker walk ended there)
        return None
    for tail in (4096, TAIL):  # most cameras end with it, or with a short trailer
        start = max(sos, size - tail)
        if b"\xff\xd9" in os.pread(fd, size - start, start):
            return None
    return None if _eoi_after(m, sos, size) else "a JPEG without its end marker (FF D9)"


def _segments(m: _Window, pos: int, size: int) -> int | None:
    """From `pos` (just after SOI or after entropy data), walk marker segments to the first
    start of scan: the offset where its entropy-coded data begins; -1 at an EOI; None when
    a segment runs past the end."""
    while pos + 4 <= size:
        if m[pos] != 0xFF:
            return -1  # not a marker: not a JPEG we understand; not judged
        marker = m[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:
            return -1
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        end = pos + 2 + m.two(pos + 2)
        if end > size:
            return None
        pos = end
        if marker == 0xDA:
            return pos
    return None


def _eoi_after(m: _Window, pos: int, size: int) -> bool:
    """Walk entropy-coded data and the segments between scans (progressive JPEGs) from
    `pos`: whether an EOI comes before the end."""
    while True:
        j = m.find_ff(pos)
        if j < 0 or j + 1 >= size:
            return False
        nxt = m[j + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
            pos = j + 2
            continue
        if nxt == 0xFF:
            pos = j + 1
            continue
        if nxt == 0xD9:
            return True
        got = _segments(m, j, size)
        if got is None:
            return False
        if got < 0:
            return True  # an EOI (or data we do not understand: not judged)
        pos = got


def _bmff(fd: int, size: int) -> str | None:
    pos, brand, moov = 0, b"", False
    while pos < size:
        if size - pos < 8:
            return "a video whose last box header is cut short"
        hdr = os.pread(fd, 16, pos)
        n, kind = int.from_bytes(hdr[:4], "big"), hdr[4:8]
        if n == 1:
            if len(hdr) < 16:
                return "a video whose last box header is cut short"
            n = int.from_bytes(hdr[8:16], "big")
        elif n == 0:  # runs to the end of the file
            n = size - pos
        if n < 8:
            return None  # not a box structure we understand: not judged
        if kind == b"ftyp":
            brand = os.pread(fd, 4, pos + 8)
        moov = moov or kind == b"moov"
        if pos + n > size:
            return (
                f"a video cut short: its '{kind.decode('latin-1')}' box needs "
                f"{pos + n:,} bytes, the file has {size:,}"
            )
        pos += n
    if not moov and brand not in _HEIF_BRANDS:
        return "a video without its 'moov' box (its index is written last)"
    return None
