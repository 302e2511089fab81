"""Pure rules for files that travel with a photo: sidecars (XMP, AAE, Google Takeout
JSON) and the motion half of a Live Photo. Which names are companions, which names their
partner could have, and what they are called in the library. No I/O.

A companion is filed beside its partner under the partner's new base name:
`IMG_1.JPG` -> `2024-06/2024-06-03 10.11.12.jpg`, so `IMG_1.JPG.xmp` ->
`2024-06/2024-06-03 10.11.12.jpg.xmp`, `IMG_1.xmp` -> `... 10.11.12.xmp`,
`IMG_1.MOV` (Live Photo) -> `... 10.11.12.mov`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SIDECAR_EXTS = frozenset({b"xmp", b"aae", b"json"})
STILL_EXTS = frozenset({b"heic", b"heif", b"jpg", b"jpeg"})
MOTION_EXTS = frozenset({b"mov"})
TAKEOUT_WORD = b"supplemental-metadata"
_TAKEOUT_MAX = 51  # Google Takeout cuts JSON file names to this many bytes
_DUP_INDEX = re.compile(rb"^(?P<name>.+?)(?P<n>\(\d+\))\.json$")
_SAFE = re.compile(rb"^[a-z0-9]{1,10}$")


@dataclass(frozen=True)
class Companion:
    kind: str  # "sidecar" or "motion"
    names: tuple[bytes, ...]  # exact names the partner may have, in the same folder
    stem: bytes | None  # or any name `stem.EXT` with EXT in `exts`
    exts: frozenset[bytes]  # the partner extensions a stem match accepts (empty: any)
    suffix: bytes  # the library name's ending after the partner's base: b".jpg.xmp"


def _split(name: bytes) -> tuple[bytes, bytes]:
    stem, dot, ext = name.rpartition(b".")
    return (stem, ext.lower()) if dot and stem else (name, b"")


def _safe_suffix(*parts: bytes) -> bytes | None:
    parts = tuple(p.lower() for p in parts)
    return b"".join(b"." + p for p in parts) if all(_SAFE.match(p) for p in parts) else None


def companion_of(name: bytes) -> Companion | None:
    """What `name` is a companion of, or None for a file that stands alone."""
    stem, ext = _split(name)
    if ext == b"json":
        return _takeout(name)
    if ext in (b"xmp", b"aae"):
        _, inner_ext = _split(stem)
        if inner_ext and _safe_suffix(inner_ext):  # IMG_1.JPG.xmp: the photo's full name
            suffix = _safe_suffix(inner_ext, ext)
            assert suffix is not None
            return Companion("sidecar", (stem,), None, frozenset(), suffix)
        suffix = _safe_suffix(ext)  # IMG_1.xmp: the photo's stem
        assert suffix is not None
        if ext == b"aae" and stem.upper().startswith(b"IMG_O"):  # IMG_O1234.AAE: edits
            stem = b"IMG_" + stem[5:]
        return Companion("sidecar", (), stem, frozenset(), suffix)
    if ext in MOTION_EXTS:
        return Companion("motion", (), stem, STILL_EXTS, _safe_suffix(ext) or b"")
    return None


def _takeout(name: bytes) -> Companion | None:
    """Google Takeout: `IMG_1.JPG.json`, `IMG_1.JPG.supplemental-metadata.json` (cut to 51
    bytes: `...supplemental-metad.json`), `IMG_1.JPG(1).json` for `IMG_1(1).JPG`."""
    body = name[:-5]
    m = _DUP_INDEX.match(name)
    index = b""
    if m:
        body, index = m["name"], m["n"]
    for cut in range(len(TAKEOUT_WORD), 0, -1):
        if body.endswith(b"." + TAKEOUT_WORD[:cut]):
            body = body[: -cut - 1]
            break
    photo_stem, photo_ext = _split(body)
    if not photo_ext:
        return None  # a plain .json that names no photo
    photo = photo_stem + index + b"." + body.rpartition(b".")[2]
    suffix = _safe_suffix(photo_ext, b"json")
    return Companion("sidecar", (photo,), None, frozenset(), suffix) if suffix else None


def takeout_names(photo: bytes) -> list[bytes]:
    """The names a Takeout JSON for `photo` may have, most likely first."""
    stem, ext = _split(photo)
    m = re.match(rb"^(?P<stem>.+?)(?P<n>\(\d+\))$", stem)
    if m and ext:  # IMG_1(1).JPG -> IMG_1.JPG.supplemental-metadata(1).json, IMG_1.JPG(1).json
        base, index = m["stem"] + b"." + photo.rpartition(b".")[2], m["n"]
    else:
        base, index = photo, b""
    out: list[bytes] = []
    for body in (base + b"." + TAKEOUT_WORD, base):
        full = body + index + b".json"
        out.append(full)
        if len(full) > _TAKEOUT_MAX:
            out.append(body[: _TAKEOUT_MAX - 5 - len(index)] + index + b".json")
    return list(dict.fromkeys(out))


def matches_stem(companion: Companion, partner: bytes) -> bool:
    """Whether `partner` (a name in the same folder) is `stem.EXT` for this companion."""
    if companion.stem is None:
        return False
    stem, ext = _split(partner)
    return (
        stem == companion.stem
        and bool(ext)
        and (not companion.exts or ext in companion.exts)
        and ext not in SIDECAR_EXTS
    )


def library_name(partner_path: str, companion: Companion) -> str:
    """`2024-06/2024-06-03 10.11.12.jpg` + `.jpg.xmp` -> `2024-06/2024-06-03 10.11.12.jpg.xmp`;
    + `.xmp` or `.mov` -> `... 10.11.12.xmp`: the partner's base name, our ending."""
    head, _, name = partner_path.rpartition("/")
    stem = name.rpartition(".")[0] or name
    out = stem + companion.suffix.decode()
    return f"{head}/{out}" if head else out
