"""Which names travel with a photo, and what they are called in the library."""

from __future__ import annotations

import pytest

from daemon.rules.companions import (
    Companion,
    companion_of,
    library_name,
    matches_stem,
    takeout_names,
)


def companion(name: bytes) -> Companion:
    """companion_of for a name that has one."""
    c = companion_of(name)
    assert c is not None, name
    return c


@pytest.mark.parametrize(
    "name, kind, names, stem, suffix",
    [
        (b"IMG_1.JPG.xmp", "sidecar", (b"IMG_1.JPG",), None, b".jpg.xmp"),
        (b"IMG_1.xmp", "sidecar", (), b"IMG_1", b".xmp"),
        (b"IMG_1234.AAE", "sidecar", (), b"IMG_1234", b".aae"),
        (b"IMG_O1234.AAE", "sidecar", (), b"IMG_1234", b".aae"),
        (b"IMG_1.JPG.json", "sidecar", (b"IMG_1.JPG",), None, b".jpg.json"),
        (b"IMG_1.JPG.supplemental-metadata.json", "sidecar", (b"IMG_1.JPG",), None, b".jpg.json"),
        (
            b"PXL_20230101_101010123.jpg.supplemental-metad.json",
            "sidecar",
            (b"PXL_20230101_101010123.jpg",),
            None,
            b".jpg.json",
        ),
        (b"IMG_1.JPG(1).json", "sidecar", (b"IMG_1(1).JPG",), None, b".jpg.json"),
        (b"IMG_1.MOV", "motion", (), b"IMG_1", b".mov"),
    ],
)
def test_companions(
    name: bytes, kind: str, names: tuple[bytes, ...], stem: bytes | None, suffix: bytes
) -> None:
    c = companion_of(name)
    assert c is not None
    assert (c.kind, c.names, c.stem, c.suffix) == (kind, names, stem, suffix)


@pytest.mark.parametrize("name", [b"IMG_1.JPG", b"metadata.json", b"notes.txt", b"clip.mp4"])
def test_standalone(name: bytes) -> None:
    assert companion_of(name) is None


def test_stem_matches_media_not_other_sidecars() -> None:
    xmp = companion(b"IMG_1.xmp")
    assert matches_stem(xmp, b"IMG_1.CR2") and matches_stem(xmp, b"IMG_1.jpg")
    assert not matches_stem(xmp, b"IMG_1.aae") and not matches_stem(xmp, b"IMG_12.jpg")
    mov = companion(b"IMG_1.MOV")
    assert matches_stem(mov, b"IMG_1.HEIC") and not matches_stem(mov, b"IMG_1.png")


def test_library_names() -> None:
    base = "2024-06/2024-06-03 10.11.12.jpg"
    assert library_name(base, companion(b"IMG_1.JPG.xmp")) == "2024-06/2024-06-03 10.11.12.jpg.xmp"
    assert library_name(base, companion(b"IMG_1.xmp")) == "2024-06/2024-06-03 10.11.12.xmp"
    assert (
        library_name("2024-06/2024-06-03 10.11.12.1.heic", companion(b"IMG_1.MOV"))
        == "2024-06/2024-06-03 10.11.12.1.mov"
    )


def test_takeout_names_round_trip() -> None:
    for photo in (b"IMG_1.JPG", b"PXL_20230101_101010123.MP.jpg", b"IMG_1(1).JPG"):
        names = takeout_names(photo)
        assert names and all(companion(n).names == (photo,) for n in names), names
