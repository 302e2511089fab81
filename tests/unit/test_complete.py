"""complete.cut_short: a file cut short is named, a whole one (padding and trailers after
its end included) is not; kinds it does not know are never judged."""

from __future__ import annotations

import io
import os
from datetime import datetime
from pathlib import Path

from PIL import Image

from daemon.inbox.complete import cut_short
from tests.helpers import jpeg_bytes


def judged(tmp_path: Path, data: bytes) -> str | None:
    p = tmp_path / "f"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        return cut_short(fd, len(data))
    finally:
        os.close(fd)


def box(kind: bytes, body: bytes) -> bytes:
    return (8 + len(body)).to_bytes(4, "big") + kind + body


def test_jpeg(tmp_path: Path) -> None:
    j = jpeg_bytes(datetime(2022, 1, 1), 1, size=64)
    assert judged(tmp_path, j) is None
    assert judged(tmp_path, j + b"\0" * 100_000) is None  # padding after the end
    assert judged(tmp_path, j + box(b"ftyp", b"mp42") + os.urandom(200_000)) is None  # motion
    for cut in (300, len(j) // 2, len(j) - 2):
        assert judged(tmp_path, j[:cut]) is not None, cut
    b = io.BytesIO()
    Image.effect_noise((400, 400), 60).convert("RGB").save(b, "JPEG", progressive=True)
    pj = b.getvalue()
    assert judged(tmp_path, pj) is None
    assert judged(tmp_path, pj[: len(pj) * 2 // 3]) is not None


def test_png(tmp_path: Path) -> None:
    b = io.BytesIO()
    Image.new("RGB", (50, 50)).save(b, "PNG")
    png = b.getvalue()
    assert judged(tmp_path, png) is None and judged(tmp_path, png + b"junk") is None
    assert judged(tmp_path, png[:-12]) is not None


def test_iso_media(tmp_path: Path) -> None:
    mov = box(b"ftyp", b"qt  \0\0\0\0") + box(b"mdat", os.urandom(5000)) + box(b"moov", b"x" * 90)
    assert judged(tmp_path, mov) is None
    assert judged(tmp_path, mov[:-1]) is not None  # the last box runs past the end
    assert judged(tmp_path, mov[:5000]) is not None
    no_index = box(b"ftyp", b"isom\0\0\0\0") + box(b"mdat", b"y" * 100)
    assert "moov" in (judged(tmp_path, no_index) or "")
    heic = box(b"ftyp", b"heic\0\0\0\0") + box(b"meta", b"m" * 40) + box(b"mdat", b"z" * 99)
    assert judged(tmp_path, heic) is None


def test_other_kinds_are_not_judged(tmp_path: Path) -> None:
    for data in (b"", b"hello", b"II*\0" + os.urandom(500), b"\xff\xd8\xff"):
        assert judged(tmp_path, data) is None or data.startswith(b"\xff\xd8")
