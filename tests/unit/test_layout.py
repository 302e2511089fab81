"""Pure naming rules."""

from __future__ import annotations

from datetime import datetime

import pytest

from daemon import layout


def test_default_layout() -> None:
    when = datetime(2024, 6, 3, 9, 5, 7)
    assert layout.library_path(layout.DEFAULT_LAYOUT, when, ".JPG") == \
        "2024-06/2024-06-03 09.05.07.jpg"


@pytest.mark.parametrize("path, n, expected", [
    ("2024-06/2024-06-03 09.05.07.jpg", 0, "2024-06/2024-06-03 09.05.07.jpg"),
    ("2024-06/2024-06-03 09.05.07.jpg", 1, "2024-06/2024-06-03 09.05.07.1.jpg"),
    ("2024-06/2024-06-03 09.05.07.jpg", 12, "2024-06/2024-06-03 09.05.07.12.jpg"),
    ("2024-06/noext", 2, "2024-06/noext.2"),
])
def test_numbered(path: str, n: int, expected: str) -> None:
    assert layout.numbered(path, n) == expected


def test_numbered_name_fits_name_max() -> None:
    long = b"a" * 251 + b".jpg"
    out = layout.numbered_name(long, 3)
    assert len(out) <= 255 and out.endswith(b".3.jpg")


@pytest.mark.parametrize("ext, clean", [(".JPG", ".jpg"), ("heic", ".heic"),
                                        ("../x", ""), (".j\x00pg", ""), (".a/b", ""),
                                        ("." + "x" * 40, "")])
def test_crafted_extensions_never_reach_a_path(ext: str, clean: str) -> None:
    assert layout.clean_ext(ext) == clean


@pytest.mark.parametrize("name, partial", [
    ("IMG_1.jpg", False), ("IMG_1.jpg.part", True), ("a.crdownload", True), ("x.tmp", True),
    ("y.download", True), ("z.!sync", True), (".syncthing.a.jpg.tmp", True), ("~$doc", True),
    (".hidden.jpg", True), ("photo.partial.jpg", False),
])
def test_partial_names(name: str, partial: bool) -> None:
    assert layout.is_partial(name) is partial
