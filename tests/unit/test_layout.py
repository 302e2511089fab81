"""Pure naming rules."""

from __future__ import annotations

from datetime import datetime

import pytest

from daemon.rules import layout


def test_default_layout() -> None:
    when = datetime(2024, 6, 3, 9, 5, 7)
    assert (
        layout.library_path(layout.DEFAULT_LAYOUT, when, ".JPG")
        == "2024-06/2024-06-03 09.05.07.jpg"
    )


@pytest.mark.parametrize(
    "path, n, expected",
    [
        ("2024-06/2024-06-03 09.05.07.jpg", 0, "2024-06/2024-06-03 09.05.07.jpg"),
        ("2024-06/2024-06-03 09.05.07.jpg", 1, "2024-06/2024-06-03 09.05.07.1.jpg"),
        ("2024-06/2024-06-03 09.05.07.jpg", 12, "2024-06/2024-06-03 09.05.07.12.jpg"),
        ("2024-06/noext", 2, "2024-06/noext.2"),
    ],
)
def test_numbered(path: str, n: int, expected: str) -> None:
    assert layout.numbered(path, n) == expected


def test_numbered_name_fits_name_max() -> None:
    long = b"a" * 251 + b".jpg"
    out = layout.numbered_name(long, 3)
    assert len(out) <= 255 and out.endswith(b".3.jpg")


@pytest.mark.parametrize(
    "ext, clean",
    [
        (".JPG", ".jpg"),
        ("heic", ".heic"),
        ("../x", ""),
        (".j\x00pg", ""),
        (".a/b", ""),
        ("." + "x" * 40, ""),
    ],
)
def test_crafted_extensions_never_reach_a_path(ext: str, clean: str) -> None:
    assert layout.clean_ext(ext) == clean


@pytest.mark.parametrize(
    "name, partial",
    [
        ("IMG_1.jpg", False),
        ("IMG_1.jpg.part", True),
        ("a.crdownload", True),
        ("x.tmp", True),
        ("y.download", True),
        ("z.!sync", True),
        (".syncthing.a.jpg.tmp", True),
        ("~$doc", True),
        (".hidden.jpg", True),
        ("photo.partial.jpg", False),
    ],
)
def test_partial_names(name: str, partial: bool) -> None:
    assert layout.is_partial(name) is partial


# -- fields, cleaning, and layouts refused (issues 13.1, 16.2) -------------------------

WHEN = datetime(2024, 6, 3, 9, 5, 7)


def test_text_fields_with_fallbacks() -> None:
    lay = "{source|inbox}/{make|nocam}/{model}/{kind}/{original}{ext}"
    assert (
        layout.library_path(
            lay,
            WHEN,
            ".JPG",
            original="IMG_1",
            make="Canon",
            model="EOS R5",
            kind="photo",
            source="bob-phone",
        )
        == "bob-phone/Canon/EOS R5/photo/IMG_1.jpg"
    )
    assert (
        layout.library_path(lay, WHEN, ".mov", original="clip")
        == "inbox/nocam/unknown/unknown/clip.mov"
    )


@pytest.mark.parametrize(
    "value, clean",
    [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", ""),
        (".hidden", "hidden"),
        ("a\x00b\x1b[0m\nc", "a_b_[0m_c"),
        ("  spaced  ", "spaced"),
        ("bad\udcffname", "bad_name"),
        ("\u0085x", "_x"),
        (". .", ""),
        (".. ..", ""),
        (" . .x", "x"),
        (". . .jpg", "jpg"),
        ("\u3000.\u3000.x", "x"),
        # bidi overrides and line separators: a name that reads otherwise than it is
        ("IMG_\u202egpj.exe", "IMG__gpj.exe"),
        ("a\u2028b\u2066c", "a_b_c"),
    ],
)
def test_values_are_cleaned_for_a_file_name(value: str, clean: str) -> None:
    assert layout.clean_component(value, 64) == clean


def test_long_values_are_cut_between_utf8_characters() -> None:
    out = layout.clean_component("é" * 100, 64)
    assert out == "é" * 32 and len(out.encode()) == 64
    out = layout.clean_component("a" + "é" * 100, 64)
    assert len(out.encode()) == 63  # the half character is dropped, not mangled


@pytest.mark.parametrize(
    "lay",
    [
        "{month:/>1.0}{day:.>2.0}{ext}",  # a format spec that escapes the library (16.2)
        "{year!r}{ext}",
        "{year}/{camera}{ext}",
        "{year}/{0}{ext}",
        "{year.real}{ext}",
        "{year}/../x{ext}",
        "/abs/{year}{ext}",
        "{year}//{month}{ext}",
        "{year}/.x/{day}{ext}",
        "{year}/{original}",
        "{year}/{ext}",
        "{ext}{year}{ext}",
        "{year}/{month|x}{ext}",
        "{model|a/b}/{year}{ext}",
        "{model|.x}/{year}{ext}",
        ("{year}/{original}{original}{original}{original}{ext}"),
        "{year",
        "",
    ],
)
def test_dangerous_or_ambiguous_layouts_are_refused(lay: str) -> None:
    assert layout.validate_layout(lay) is not None


@pytest.mark.parametrize(
    "lay",
    [
        layout.DEFAULT_LAYOUT,
        layout.UNDATED_LAYOUT,
        "{year}/{make|camera} {model}/{original}{ext}",
        "{kind}s/{year}/{month}/{day}/{hour}{minute}{second}{ext}",
    ],
)
def test_good_layouts_are_accepted(lay: str) -> None:
    assert layout.validate_layout(lay) is None


def test_render_checks_every_path_whatever_the_values() -> None:
    capped = layout.render("x/{original}{ext}", layout.Naming(WHEN, ".jpg", original="é" * 300))
    assert capped == "x/" + "é" * 60 + ".jpg"
    with pytest.raises(layout.LayoutError):  # literal text too long for a name: refused
        layout.render("x" * 300 + "{ext}", layout.Naming(WHEN, ".jpg"))
    for rel in ("../x.jpg", "/x.jpg", "a//b.jpg", "a/.b.jpg", "a/./b.jpg", ""):
        assert layout.unsafe_path(rel) is not None
    assert layout.unsafe_path("a/b c/d.jpg") is None


def test_pairs_and_numbers() -> None:
    assert layout.pairs_with(".cr2", ".JPG") and layout.pairs_with(".heic", ".dng")
    assert not layout.pairs_with(".jpg", ".jpeg") and not layout.pairs_with(".mov", ".cr2")
    assert layout.number_of("a/b.3.cr2", "a/b.jpg") == 3
    assert layout.number_of("a/b.cr2", "a/b.jpg") == 0
    assert layout.number_of("a/bc.cr2", "a/b.jpg") is None
    assert layout.number_of("a/b.03.cr2", "a/b.jpg") is None
