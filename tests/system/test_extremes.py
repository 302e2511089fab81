"""Issue 15.3: no single file stops the service. The extremes of every value read from
the outside world (mtimes long before 1970 and past 2262, sizes, names with every odd
byte, EXIF dates, offsets and numbers at their limits) go through the real `import`
and the real daemon: each file is filed or rejected with a reason, never a crash."""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from PIL import Image

from daemon.store import db
from tests.helpers import cli, make_config, wait_for
from tests.system.daemon_harness import Daemon

NS = 1_000_000_000
YEAR = 365 * 86400 * NS


def exif_jpeg(seed: int, tags: dict[int, str]) -> bytes:
    """A small real JPEG whose EXIF sub-IFD carries `tags` as they are (any string)."""
    rng = random.Random(seed)
    img = Image.new("RGB", (8, 8), (rng.randrange(256), rng.randrange(256), seed % 256))
    exif = Image.Exif()
    for tag, value in tags.items():
        exif.get_ifd(0x8769)[tag] = value
    exif[0x010E] = f"extreme {seed}"
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


DTO, OFFSET, SUBSEC, CREATE = 0x9003, 0x9011, 0x9291, 0x9004

EXIF_CASES: dict[str, dict[int, str]] = {
    "year1_east": {DTO: "0001:01:01 00:00:00", OFFSET: "+14:00"},
    "year9999_west": {DTO: "9999:12:31 23:59:59", OFFSET: "-14:00"},
    "year0": {DTO: "0000:01:01 00:00:00"},
    "bad_fields": {DTO: "2024:13:45 99:99:99", CREATE: "2024:02:30 25:00:00"},
    "offset_huge": {DTO: "2020:01:01 10:00:00", OFFSET: "+99:99"},
    "offset_garbage": {DTO: "2020:01:01 10:00:01", OFFSET: "+9999999999999999999:00"},
    "subsec_huge": {DTO: "2020:01:01 10:00:02", SUBSEC: "9" * 40},
    "subsec_neg": {DTO: "2020:01:01 10:00:03", SUBSEC: "-5"},
    "year_huge": {DTO: "99999999999999999999:01:01 00:00:00"},
    "date_nul": {DTO: "2020:01:01\x0010:00:04"},
}

# name bytes that are legal in a file name: every control byte, DEL, lone UTF-8
# continuation and lead bytes, the bytes of an escape sequence, a name of 255 bytes
ODD_NAMES = [
    b"ctl-" + bytes(range(1, 32)) + b".jpg",
    b"del\x7f.jpg",
    b"latin1-\xe9\xff\x80.jpg",
    b"esc\x1b[2J\x1b]0;x\x07.jpg",
    b"nl\nfiled  etc-passwd.jpg",
    b"back\\slash%s.jpg",
    b"-dash.jpg",
    b"x" * 251 + b".jpg",
    b" .jpg",
    b"..jpg",
    b"\xc0\xaf.jpg",
]


def make_extremes(root: Path) -> dict[bytes, bytes]:
    """{path: content}: one distinct file per extreme."""
    out: dict[bytes, bytes] = {}
    base = os.fsencode(root)
    os.makedirs(base, exist_ok=True)
    seed = 100

    def put(name: bytes, data: bytes, mtime_ns: int | None = None) -> None:
        path = base + b"/" + name
        with open(path, "wb") as f:
            f.write(data)
        if mtime_ns is not None:
            try:
                os.utime(path, ns=(mtime_ns, mtime_ns))
            except OSError:  # the filesystem cannot hold it: keep what it can
                pass
        out[path] = data

    plain = datetime(2021, 3, 4, 5, 6, 7)
    for label, mtime in [
        ("mtime2300", 330 * YEAR),
        ("mtime2262max", 2**63 - 1),
        ("mtime2263", 2**63 + NS),
        ("mtime_far", 2**64 + 12345),
        ("mtime1900", -70 * YEAR),
        ("mtime_neg_max", -(2**63)),
        ("mtime_before_min", -(2**63) - NS),
        ("mtime_zero", 0),
    ]:
        seed += 1
        # one with an EXIF date, one whose only date is the mtime
        put(
            f"{label}_exif.jpg".encode(),
            exif_jpeg(seed, {DTO: plain.strftime("%Y:%m:%d %H:%M:%S")}),
            mtime,
        )
        seed += 1
        put(f"{label}_nodate.jpg".encode(), exif_jpeg(seed, {}), mtime)
        seed += 1
        put(f"{label}.txt".encode(), b"text %d" % seed, mtime)
    for label, tags in EXIF_CASES.items():
        seed += 1
        put(f"exif_{label}.jpg".encode(), exif_jpeg(seed, tags))
    for name in ODD_NAMES:
        seed += 1
        put(name, exif_jpeg(seed, {DTO: "2019:01:01 00:00:00"}))
    # huge and sparse: a hole of 2 GiB after a JPEG (hashed as zeros, never stored)
    seed += 1
    sparse = base + b"/sparse.jpg"
    data = exif_jpeg(seed, {DTO: "2019:01:02 00:00:00"})
    with open(sparse, "wb") as f:
        f.write(data)
        f.truncate(2 << 30)
    out[sparse] = data
    return out


def outcomes(catalog: Path) -> dict[bytes, tuple[str, str | None]]:
    conn = db.connect(catalog, readonly=True)
    try:
        return {
            bytes(s): (o, e)
            for s, o, e in conn.execute(
                "SELECT source, outcome, error FROM jobs WHERE step = 'done'"
            )
        }
    finally:
        conn.close()


def check_all_handled(
    found: dict[bytes, tuple[str, str | None]], inputs: dict[bytes, bytes]
) -> None:
    missing = set(inputs) - set(found)
    assert not missing, f"never handled: {sorted(missing)}"
    bad = {p: oe for p, oe in found.items() if oe[0] not in ("filed", "rejected", "duplicate")}
    assert not bad, f"not filed or rejected: {bad}"
    for path, (outcome, error) in found.items():
        if outcome == "rejected":
            assert error, f"{path!r} rejected without a reason"
        if path.endswith(b".jpg"):
            assert outcome == "filed", (path, outcome, error)


def test_import_survives_every_extreme(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    inputs = make_extremes(tmp_path / "card")
    res = cli(cfg_path, "import", str(tmp_path / "card"))
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 0, res.stdout + res.stderr
    check_all_handled(outcomes(cfg.catalog), inputs)
    assert not any(p.name.startswith("2262") for p in cfg.library.iterdir())  # no future
    # every read-only command reads these rows back without a traceback
    for args in (
        ["status"],
        ["status", "--json"],
        ["history", "--limit", "0"],
        ["history", "--json"],
        ["find", "*"],
        ["find", "--json", "*"],
        ["verify"],
    ):
        out = cli(cfg_path, *args)
        assert "Traceback" not in out.stderr, (args, out.stderr)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
    json.loads(cli(cfg_path, "history", "--json", "--limit", "0").stdout)


def test_daemon_survives_every_extreme(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> None:
    cfg, cfg_path = make_config(tmp_path)
    d = start_daemon(cfg_path)
    inputs = make_extremes(cfg.inbox / "drop")
    inputs = {p: v for p, v in inputs.items() if not os.path.basename(p).startswith(b".")}
    wait_for(
        lambda: d.proc.poll() is not None or len(outcomes(cfg.catalog)) >= len(inputs),
        60,
        lambda: f"{len(outcomes(cfg.catalog))} of {len(inputs)} handled",
    )
    assert d.proc.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
    check_all_handled(outcomes(cfg.catalog), inputs)
    assert os.listdir(cfg.inbox / "drop") == ["..jpg"]  # hidden names are not taken
    assert d.terminate() == 0
    # and it starts again
    assert start_daemon(cfg_path).terminate() == 0
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()


def test_names_cannot_forge_output_lines(tmp_path: Path) -> None:
    """Issue 15.8: a file name with a newline, escape sequences or bidi overrides is shown
    escaped by history, status, find and verify: it can neither forge a line nor drive the
    terminal (JSON escapes them itself)."""
    _cfg, cfg_path = make_config(tmp_path)
    card = tmp_path / "card"
    names = [
        b"a\nfiled     FORGED.jpg",
        b"b\x1b[2J\x1b]0;owned\x07.jpg",
        b"c\xe2\x80\xaegpj.txt",
        b"d\r\x85FORGED.txt",
    ]
    for i, name in enumerate(names):
        os.makedirs(card, exist_ok=True)
        with open(os.fsencode(card) + b"/" + name, "wb") as f:
            f.write(
                exif_jpeg(500 + i, {DTO: "2018:01:01 00:00:00"})
                if name.endswith(b".jpg")
                else b"not media %d" % i
            )
    assert cli(cfg_path, "import", str(card)).returncode == 0
    bad = [
        chr(c)
        for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, 0x202E)
        if c != 0x0A
    ]
    for args in (
        ["history"],
        ["status"],
        ["find", "*"],
        ["find", "a*"],
        ["import", "--dry-run", str(card)],
    ):
        out = cli(cfg_path, *args).stdout
        assert not [c for c in bad if c in out], (args, out)
        assert not any(
            line.startswith(("filed     FORGED", "FORGED")) for line in out.splitlines()
        ), (args, out)
    raw = cli(cfg_path, "history", "--json").stdout
    assert "a\\nfiled     FORGED.jpg" in raw  # JSON: the name as it is, escaped by JSON
    json.loads(raw)
