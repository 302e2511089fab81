"""Issue 15.8: a companion is never deduplicated away from its photo.

Two different photos whose sidecars are byte-identical (an editor's default XMP, an
empty AAE): each photo keeps its own sidecar in the library, through `import --move`
and through the daemon. The same photo's sidecar imported again is still a duplicate.
(The catalog's sha256 stays UNIQUE: the second row is keyed `<sha256>:<photo row id>`.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from tests.helpers import check_consistent, cli, jpeg_bytes, make_config, wait_for, write
from tests.system.daemon_harness import Daemon

BASE = datetime(2022, 4, 5, 6, 7, 8)
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>\n'


def twins(folder: Path, n: int = 3) -> dict[Path, bytes]:
    files: dict[Path, bytes] = {}
    for i in range(n):
        files[folder / f"IMG_{i}.JPG"] = jpeg_bytes(BASE + timedelta(minutes=i), 300 + i)
        files[folder / f"IMG_{i}.JPG.xmp"] = XMP  # the same bytes for every photo
        files[folder / f"IMG_{i}.AAE"] = b""  # empty: rejected, never a "duplicate"
    files[folder / "IMG_0.xmp"] = XMP + b"own"  # a stem sidecar of its own
    for p, d in files.items():
        write(p, d)
    return files


def idle(catalog: Path) -> bool:
    with sqlite3.connect(catalog) as conn:
        return not conn.execute("SELECT count(*) FROM jobs WHERE step != 'done'").fetchone()[0]


def sidecars(library: Path) -> list[str]:
    return sorted(
        p.name
        for p in library.rglob("*.xmp")
        if not any(part.startswith(".") for part in p.relative_to(library).parts)
    )


def test_identical_sidecars_each_stay_with_their_photo(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    files = twins(tmp_path / "card")
    res = cli(cfg_path, "import", "--move", str(tmp_path / "card"))
    assert res.returncode == 0, res.stdout + res.stderr
    names = sidecars(cfg.library)
    assert len([n for n in names if n.endswith(".jpg.xmp")]) == 3, names
    for p in cfg.library.glob("*/*.jpg"):
        assert (p.parent / (p.name + ".xmp")).read_bytes() == XMP
    check_consistent(cfg, {p: d for p, d in files.items() if d}, move=True)
    # the same photo and sidecar again: duplicates, nothing added
    again = twins(tmp_path / "card2")
    res = cli(cfg_path, "import", "--move", str(tmp_path / "card2"))
    assert res.returncode == 0, res.stderr
    assert sidecars(cfg.library) == names
    assert "filed" not in res.stdout.split("imported")[-1].split("\n")[0], res.stdout
    assert len(again) == len(files)
    # `find` by the sidecar's content names all three
    found = cli(cfg_path, "find", str(cfg.library / next(cfg.library.rglob("*.jpg.xmp"))))
    assert found.stdout.count(".jpg.xmp") >= 3, found.stdout


def test_daemon_keeps_each_photos_sidecar(
    tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    cfg, cfg_path = make_config(tmp_path)
    d = start_daemon(cfg_path)
    files = twins(cfg.inbox / "phone")
    wait_for(
        lambda: len([n for n in sidecars(cfg.library) if n.endswith(".jpg.xmp")]) == 3,
        30,
        lambda: f"three sidecars filed: {sidecars(cfg.library)}",
    )
    wait_for(
        lambda: not any(p.exists() for p in files) and idle(cfg.catalog), 60, "every file handled"
    )
    assert d.terminate() == 0
    check_consistent(cfg, {p: v for p, v in files.items() if v}, move=True)
