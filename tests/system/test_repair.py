"""`verify --repair` and `adopt` with the real command on real libraries."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from daemon.config import Config
from tests.helpers import (
    check_consistent,
    cli,
    jpeg_bytes,
    make_config,
    rot,
    tree_hashes,
    write,
)

BASE = datetime(2018, 1, 2, 3, 4, 5)


def imported(tmp_path: Path, n: int = 5) -> tuple[Config, Path, dict[Path, bytes]]:
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "card"
    files = {
        write(src / f"p{i}.jpg", jpeg_bytes(BASE + timedelta(seconds=i), i)): jpeg_bytes(
            BASE + timedelta(seconds=i), i
        )
        for i in range(n)
    }
    assert cli(cfg_path, "import", str(src)).returncode == 0
    return cfg, cfg_path, files


def test_repair_catalogues_strays_quarantines_rot_marks_missing(tmp_path: Path) -> None:
    cfg, cfg_path, files = imported(tmp_path)
    lib = sorted(tree_hashes(cfg.library))
    (cfg.library / lib[0]).unlink()  # gone
    rotten = cfg.library / lib[1]
    rot(rotten)
    stray = write(cfg.library / "2018-01" / "from-elsewhere.jpg", jpeg_bytes(BASE, 77))
    dup = write(cfg.library / "old" / "copy.jpg", files[sorted(files)[2]])  # same as p2
    junk = write(cfg.library / "notes.txt", b"shopping list")
    write(cfg.staging / "job-999", b"leftover")
    assert cli(cfg_path, "verify").returncode == 1
    r = cli(cfg_path, "verify", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert f"marked_missing  {lib[0]}" in out
    assert f"rot_quarantined {lib[1]}" in out
    assert "catalogued      2018-01/from-elsewhere.jpg" in out
    assert "quarantined     old/copy.jpg" in out and "rejected        notes.txt" in out
    assert stray.exists() and not dup.exists() and not junk.exists()
    assert (cfg.rejected / "bitrot" / lib[1]).exists()
    assert not any(cfg.staging.iterdir())
    verify = cli(cfg_path, "verify", "--deep", "--json")
    assert verify.returncode == 0, verify.stdout
    # the lost file comes back from a backup: filed anew, the library heals
    again = cli(cfg_path, "import", str(tmp_path / "card"))
    assert again.returncode == 0 and "2 filed" in again.stdout, again.stdout
    assert lib[0] in tree_hashes(cfg.library) and lib[1] in tree_hashes(cfg.library)
    assert json.loads(cli(cfg_path, "verify", "--deep", "--json").stdout)["ok"]


def test_adopt_an_existing_sorted_library_in_place(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    existing = {}
    for i in range(6):
        p = cfg.library / "2017" / f"holiday {i}.jpg"
        existing[p] = write(p, jpeg_bytes(BASE + timedelta(days=i), 100 + i)).read_bytes()
    write(
        cfg.library / "2017" / "holiday copy.jpg", existing[cfg.library / "2017" / "holiday 0.jpg"]
    )
    write(cfg.library / "2017" / "readme.txt", b"gosort was here")
    before = tree_hashes(cfg.library)
    r = cli(cfg_path, "adopt", str(cfg.library))
    assert r.returncode == 0, r.stderr
    assert "adopted: 6 catalogued, 1 copy, 1 left" in r.stdout
    assert all(p.read_bytes() == d for p, d in existing.items()), "adopt renamed or changed files"
    assert tree_hashes(cfg.library) == before, "adopt moved or removed something"
    assert cli(cfg_path, "verify", "--deep").returncode == 0
    status = json.loads(cli(cfg_path, "status", "--json").stdout)
    assert status["library_files"] == 6
    # new imports now recognise adopted content as duplicates
    src = write(tmp_path / "again" / "x.jpg", existing[cfg.library / "2017" / "holiday 3.jpg"])
    again = cli(cfg_path, "import", str(src.parent))
    assert "1 duplicate" in again.stdout
    assert cli(cfg_path, "adopt", str(cfg.library)).stdout.startswith("adopted: 0 catalogued")
    outside = cli(cfg_path, "adopt", str(tmp_path))
    assert outside.returncode != 0 and "must be the library" in outside.stderr


def test_nothing_world_writable_is_created(tmp_path: Path) -> None:
    cfg, cfg_path, files = imported(tmp_path)
    old = os.umask(0)
    try:
        write(tmp_path / "more" / "dup.jpg", files[min(files)])
        write(tmp_path / "more" / "note.txt", b"x")
        r = cli(cfg_path, "import", "--move", str(tmp_path / "more"))
        assert r.returncode == 0
    finally:
        os.umask(old)
    for root in (cfg.library, cfg.state_dir):
        for p in [root, *root.rglob("*")]:
            assert not p.stat().st_mode & 0o002, f"{p} is world-writable"
    assert cfg.catalog.stat().st_mode & 0o777 == 0o640  # group-readable, never group-writable
    check_consistent(cfg, files, move=False)
