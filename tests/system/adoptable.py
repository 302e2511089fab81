"""A library as another tool (GoSort) left it: what the adopt and repair tests start from
(test_adopt_repair, test_redteam)."""

from __future__ import annotations

from datetime import datetime, timedelta

from daemon import config
from tests.helpers import jpeg_bytes, write

BASE = datetime(2019, 5, 6, 7, 8, 9)


def sorted_library(cfg: config.Config) -> dict[str, bytes]:
    """A library as GoSort left it: photos with sidecars, a Takeout JSON, notes, an album
    copy, an orphan sidecar, an empty file."""
    lib = cfg.library
    files = {
        "2019/05/IMG_1.JPG": jpeg_bytes(BASE, 1),
        "2019/05/IMG_1.JPG.xmp": b"<x:xmpmeta>rating 3</x:xmpmeta>",
        "2019/05/IMG_2.jpg": jpeg_bytes(BASE + timedelta(hours=1), 2),
        "2019/05/IMG_2.xmp": b"<x:xmpmeta>rating 4</x:xmpmeta>",
        "2019/05/IMG_3.jpg": jpeg_bytes(BASE + timedelta(hours=2), 3),
        "2019/05/IMG_3.jpg.json": b'{"photoTakenTime": {"timestamp": "1557126489"}}',
        "2019/05/notes.txt": b"who is in which photo",
        "2019/05/orphan.xmp": b"<x:xmpmeta>nobody</x:xmpmeta>",
        "2019/05/empty.jpg": b"",
        "Albums/Trip/IMG_1 copy.JPG": jpeg_bytes(BASE, 1),
    }
    for rel, data in files.items():
        write(lib / rel, data)
    return files
