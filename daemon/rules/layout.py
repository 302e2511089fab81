"""Pure naming rules: the layout language (parsed, validated, rendered into a library path),
the `.N` numbering of names that share a second, which inbox names are candidates and
which are partial. No I/O. Every name built here is relative, has no `..`, no NUL and no
leading dot, whatever the metadata said: crafted tags never reach a path.
"""

from __future__ import annotations

import fnmatch
import re
import string
from dataclasses import dataclass
from datetime import datetime

DEFAULT_LAYOUT = "{year}-{month}/{year}-{month}-{day} {hour}.{minute}.{second}{ext}"
UNDATED_LAYOUT = "undated/{original}{ext}"  # undated = "folder": a layout of its own
DATE_FIELDS = ("year", "month", "day", "hour", "minute", "second")
TEXT_FIELDS = ("original", "make", "model", "kind", "source")
FIELDS = frozenset({*DATE_FIELDS, "ext", *TEXT_FIELDS})
DEFAULT_FALLBACK = "unknown"  # a text field with no value and no `|fallback`
FIELD_MAX = 64  # bytes of UTF-8 a text field keeps (`original`: ORIGINAL_MAX)
ORIGINAL_MAX = 120
NAME_MAX = 255
NAME_ROOM = 40  # bytes a file name keeps free for `.N` and a sidecar's `.jpg.json`
PATH_MAX_REL = 1024  # bytes a relative library path may have at most

# Names still being written by some tool: ignored until renamed.
PARTIAL_PATTERNS = (
    "*.part",
    "*.crdownload",
    "*.tmp",
    "*.download",
    "*.!sync",
    ".syncthing.*",
    "~$*",
    ".*",
)

# A RAW and the JPEG or HEIC a camera writes with it keep one stem (`x.cr2`, `x.jpg`).
RAW_EXTS = frozenset(
    {
        ".3fr",
        ".ari",
        ".arq",
        ".arw",
        ".cr2",
        ".cr3",
        ".crw",
        ".dcr",
        ".dng",
        ".erf",
        ".fff",
        ".gpr",
        ".iiq",
        ".k25",
        ".kdc",
        ".mef",
        ".mos",
        ".mrw",
        ".nef",
        ".nrw",
        ".orf",
        ".ori",
        ".pef",
        ".raf",
        ".raw",
        ".rw2",
        ".rwl",
        ".sr2",
        ".srf",
        ".srw",
        ".x3f",
    }
)
STILL_EXTS = frozenset({".jpg", ".jpeg", ".heic", ".heif", ".hif"})

_EXT_RE = re.compile(r"^\.[a-z0-9]{1,10}$")
# C0 and C1 control characters, DEL, '/', lone surrogates (a name that was not UTF-8),
# line separators and bidi overrides (a name that would read otherwise than it is)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f/\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class LayoutError(ValueError):
    """A layout that would produce a path outside the library, or an unusable name."""


@dataclass(frozen=True)
class Naming:
    """The values a layout's fields are filled from (text fields: raw, cleaned here)."""

    captured: datetime
    ext: str
    original: str = ""  # the original base name without its extension
    make: str = ""
    model: str = ""
    kind: str = ""  # "photo" or "video"
    source: str = ""  # the inbox sub-folder (or inbox) the file came from


@dataclass(frozen=True)
class _Field:
    name: str
    fallback: str | None  # the `|text` part, when given


_PARSED: dict[str, tuple[str | _Field, ...]] = {}  # parse_layout's answers (pure, per text)


def parse_layout(layout: str) -> tuple[str | _Field, ...]:
    """Literal text and fields, in order; LayoutError when `layout` is not a plain template
    of known fields (no format specs, no conversions, no attribute or index access).
    Parsed once per text (render runs for every file); errors are not kept."""
    if (got := _PARSED.get(layout)) is not None:
        return got
    parsed = tuple(_parse_layout(layout))
    if len(_PARSED) < 64:
        _PARSED[layout] = parsed
    return parsed


def _parse_layout(layout: str) -> list[str | _Field]:
    out: list[str | _Field] = []
    try:
        parsed = list(string.Formatter().parse(layout))
    except ValueError as e:
        raise LayoutError(f"not a valid template: {e}") from None
    for literal, name, spec, conv in parsed:
        if literal:
            out.append(literal)
        if name is None:
            continue
        if spec or conv:
            raise LayoutError(
                f"{{{name}{'!' + conv if conv else ''}:{spec}}}: fields are plain "
                "values: no format specs or conversions"
            )
        field, bar, fallback = name.partition("|")
        if field not in FIELDS:
            raise LayoutError(f"unknown field {{{field}}}; allowed: " + ", ".join(sorted(FIELDS)))
        if bar:
            if field not in TEXT_FIELDS:
                raise LayoutError(f"{{{name}}}: only {', '.join(TEXT_FIELDS)} take a fallback")
            if not fallback or clean_component(fallback, FIELD_MAX) != fallback:
                raise LayoutError(
                    f"{{{name}}}: the fallback must be a plain, non-empty name "
                    "part (no '/', no leading dot, no control characters)"
                )
        out.append(_Field(field, fallback if bar else None))
    return out


def clean_component(text: str, cap: int) -> str:
    """`text` made fit for one part of a file name: no '/', no control characters, no
    lone surrogates (each becomes '_'), no leading dots or surrounding blanks, at most
    `cap` bytes of UTF-8 (cut between characters). May be empty."""
    text = _UNSAFE.sub("_", text)
    while text != (bare := text.strip().lstrip(".")):  # ' . .x' is 'x', never '.x'
        text = bare
    raw = text.encode("utf-8")
    if len(raw) > cap:
        text = raw[:cap].decode("utf-8", "ignore").rstrip()
    return text


def render(layout: str, naming: Naming) -> str:
    """The relative library path `layout` gives for `naming`; LayoutError if it would not
    stay beneath the library (checked on the result, whatever the values were)."""
    c = naming.captured
    dates = {
        "year": f"{c.year:04d}",
        "month": f"{c.month:02d}",
        "day": f"{c.day:02d}",
        "hour": f"{c.hour:02d}",
        "minute": f"{c.minute:02d}",
        "second": f"{c.second:02d}",
    }
    parts: list[str] = []
    for token in parse_layout(layout):
        if isinstance(token, str):
            parts.append(token)
        elif token.name in dates:
            parts.append(dates[token.name])
        elif token.name == "ext":
            parts.append(clean_ext(naming.ext))
        else:
            value = clean_component(
                getattr(naming, token.name), ORIGINAL_MAX if token.name == "original" else FIELD_MAX
            )
            parts.append(value or token.fallback or DEFAULT_FALLBACK)
    rel = "".join(parts)
    if (problem := unsafe_path(rel)) is not None:
        shown = rel if len(rel) <= 80 else rel[:60] + "..." + rel[-16:]
        raise LayoutError(f"{shown!r}: {problem}")
    return rel


def unsafe_path(rel: str) -> str | None:
    """Why `rel` cannot be a library path (it must stay beneath the library and be
    seen by verify), or None: relative, no empty, '.', '..' or hidden parts, no NUL,
    each name short enough to be numbered."""
    if not rel or rel.startswith("/"):
        return "not a relative path"
    if "\0" in rel:
        return "has a NUL byte"
    try:
        size = len(rel.encode("utf-8"))
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if size > PATH_MAX_REL:
        return f"longer than {PATH_MAX_REL} bytes"
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            return "has an empty, '.' or '..' part"
        if part.startswith("."):
            return f"has a hidden part {part!r}"
        if len(part.encode("utf-8")) > NAME_MAX - NAME_ROOM:
            return f"has a name longer than {NAME_MAX - NAME_ROOM} bytes"
    return None


# Sample values config loading renders a layout with: ordinary, empty and hostile ones.
_LONG = "\u00e9" * 300
SAMPLES = (
    Naming(
        datetime(2024, 6, 3, 9, 5, 7),
        ".jpg",
        "IMG_0001",
        "Canon",
        "Canon EOS R5",
        "photo",
        "bob-phone",
    ),
    Naming(datetime(1, 1, 1), ".x", "", "", "", "", ""),
    Naming(datetime(9999, 12, 31, 23, 59, 59), "." + "z" * 10, _LONG, _LONG, _LONG, _LONG, _LONG),
    Naming(datetime(2020, 1, 1), ".mov", "../../etc/passwd", "/", "..", ".hidden", "."),
    Naming(datetime(2020, 1, 1), ".jpg", "\x00\x1b[31m\n", " . ", "a/../../b", "\ud800", "~/x"),
    Naming(datetime(2020, 1, 1), ".jpg", " . .x", ".. ..", ". .", " .\u3000. ", "..."),
)


def validate_layout(layout: str) -> str | None:
    """Return why `layout` is unusable, or None when it is fine: only known fields as
    plain values, ending with {ext} after a non-empty name (so `.N` always goes before
    the extension and two files never need the same path), and every sample value,
    hostile ones included, renders to a path beneath the library."""
    try:
        tokens = parse_layout(layout)
    except LayoutError as e:
        return str(e)
    last = tokens[-1] if tokens else None
    if not isinstance(last, _Field) or last.name != "ext":
        return "must end with {ext} (the `.N` of two files that share a name goes before it)"
    if any(isinstance(t, _Field) and t.name == "ext" for t in tokens[:-1]):
        return "{ext} may appear only once, at the end"
    if layout.startswith("/"):
        return "must be a relative path"
    for sample in SAMPLES:
        try:
            render(layout, sample)
        except LayoutError as e:
            return f"gives an unusable path for sample values: {e}"
    return None


def clean_ext(ext: str) -> str:
    """A safe, lower-case extension with its dot, or '' when `ext` is not one."""
    ext = ext.lower()
    if ext and not ext.startswith("."):
        ext = "." + ext
    return ext if _EXT_RE.match(ext) else ""


def library_path(layout: str, captured: datetime, ext: str, **text: str) -> str:
    """The preferred library path (relative) for a file captured at `captured`; `text`:
    the text fields (original, make, model, kind, source)."""
    return render(layout, Naming(captured, ext, **text))


def pairs_with(ext: str, other: str | None = None) -> bool:
    """Whether a file with extension `ext` is half of a RAW+JPEG/HEIC pair (with `other`
    given: whether the two extensions make one)."""
    ext = clean_ext(ext)
    if other is None:
        return ext in RAW_EXTS or ext in STILL_EXTS
    other = clean_ext(other)
    return (ext in RAW_EXTS and other in STILL_EXTS) or (ext in STILL_EXTS and other in RAW_EXTS)


def stem_of(path: str) -> str:
    """`a/b.1.jpg` -> `a/b.1`: a library path without its extension."""
    head, _, name = path.rpartition("/")
    stem, dot, _ = name.rpartition(".")
    out = stem if dot and stem else name
    return f"{head}/{out}" if head else out


def number_of(path: str, preferred: str) -> int | None:
    """n when `path` is numbered(`preferred`, n) with any extension, else None."""
    want, got = stem_of(preferred), stem_of(path)
    if got == want:
        return 0
    head, dot, n = got.rpartition(".")
    if dot and head == want and n.isdigit() and not n.startswith("0"):
        return int(n)
    return None


def numbered(path: str, n: int) -> str:
    """`path` with `.n` before its extension (n=0 is `path` itself): `a/b.jpg` -> `a/b.2.jpg`."""
    if n == 0:
        return path
    head, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f".{n}" + (f".{ext}" if ext else "")
    out = stem + suffix
    return f"{head}/{out}" if head else out


def numbered_name(name: bytes, n: int) -> bytes:
    """A raw file name with `.n` before its extension, trimmed to fit NAME_MAX."""
    if n == 0:
        return name[:NAME_MAX]
    stem, dot, ext = name.rpartition(b".")
    if not dot or not stem:
        stem, ext = name, b""
    suffix = b"." + str(n).encode() + (b"." + ext if ext else b"")
    if len(suffix) > NAME_MAX // 2:
        suffix = b"." + str(n).encode()
    return stem[: NAME_MAX - len(suffix)] + suffix


def is_partial(name: str) -> bool:
    """True for names that tools use while a file is still being written."""
    return any(fnmatch.fnmatchcase(name, p) for p in PARTIAL_PATTERNS)
