"""Issue 15.4: a lost or damaged catalog is noticed, never silently replaced.

The library knows its catalog ({library}/.mediasortd.library holds the catalog's id):
a catalog deleted, truncated or replaced while the daemon is stopped makes it refuse to
start (exit 78, naming `verify --repair`), which rebuilds the catalog from the library;
while it runs, the daemon notices and stops loudly; a damaged page is found by
`verify --deep` and every command says so without a traceback."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from daemon.config import Config
from daemon.store import db
from tests.helpers import cli, jpeg_bytes, make_config, tree_hashes, wait_for, write
from tests.system.daemon_harness import Daemon

BASE = datetime(2023, 5, 6, 7, 8, 9)


def filed_library(tmp: Path, n: int = 6) -> tuple[Config, Path, Path]:
    cfg, cfg_path = make_config(tmp)
    card = tmp / "card"
    for i in range(n):
        write(card / f"IMG_{i}.JPG", jpeg_bytes(BASE + timedelta(seconds=i), i))
    res = cli(cfg_path, "import", str(card))
    assert res.returncode == 0, res.stderr
    return cfg, cfg_path, card


def remove_catalog(catalog: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{catalog}{suffix}").unlink(missing_ok=True)


def assert_refused(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 78, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert "verify --repair" in res.stderr


@pytest.mark.parametrize("how", ["deleted", "truncated", "replaced"])
def test_lost_while_stopped_refuses_then_repair_rebuilds(tmp_path: Path, how: str) -> None:
    cfg, cfg_path, card = filed_library(tmp_path)
    before = tree_hashes(cfg.library)
    assert (cfg.library / ".mediasortd.library").exists()
    if how == "deleted":
        remove_catalog(cfg.catalog)
    elif how == "truncated":
        os.truncate(cfg.catalog, 0)
        for suffix in ("-wal", "-shm"):
            Path(f"{cfg.catalog}{suffix}").unlink(missing_ok=True)
    else:  # another mediasortd's catalog, with history of its own
        (tmp_path / "other").mkdir()
        other, other_path = make_config(tmp_path / "other")
        write(tmp_path / "o" / "x.jpg", jpeg_bytes(BASE, 99))
        assert cli(other_path, "import", str(tmp_path / "o")).returncode == 0
        remove_catalog(cfg.catalog)
        shutil.copy(other.catalog, cfg.catalog)
    assert_refused(cli(cfg_path, "import", str(card)))
    d = Daemon(tmp_path, cfg_path)
    try:
        assert d.proc.wait(60) == 78
    finally:
        d.close()
    assert "verify --repair" in (tmp_path / "daemon.log").read_text()
    assert tree_hashes(cfg.library) == before  # nothing filed twice
    verify = cli(cfg_path, "verify")
    assert verify.returncode == 1 and "Traceback" not in verify.stderr
    if how == "replaced":  # another library's catalog: never merged, moved aside first
        refused = cli(cfg_path, "verify", "--repair")
        assert refused.returncode == 78 and "move this one aside" in refused.stderr
        remove_catalog(cfg.catalog)
    rep = cli(cfg_path, "verify", "--repair")
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "catalog_claimed" in rep.stdout
    again = cli(cfg_path, "import", str(card))
    assert again.returncode == 0, again.stderr
    assert "6 duplicate" in again.stdout and "filed" not in again.stdout
    assert tree_hashes(cfg.library) == before


def test_new_catalog_beside_unknown_library_points_to_adopt(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    write(cfg.library / "2020-01" / "2020-01-01 00.00.00.jpg", jpeg_bytes(BASE, 1))
    res = cli(cfg_path, "import", str(tmp_path / "inbox"))
    assert_refused(res)
    assert "adopt" in res.stderr
    assert cli(cfg_path, "adopt", str(cfg.library)).returncode == 0
    assert cli(cfg_path, "import", str(tmp_path / "inbox")).returncode == 0


def test_empty_library_and_upgrade_need_no_marker(tmp_path: Path) -> None:
    cfg, cfg_path, card = filed_library(tmp_path, 2)
    marker = cfg.library / ".mediasortd.library"
    marker.unlink()  # as a catalog from before the marker: it is written again
    assert cli(cfg_path, "import", str(card)).returncode == 0
    assert db.catalog_id(db.connect(cfg.catalog, readonly=True)) in marker.read_text()


def _corrupt_index(catalog: Path) -> None:
    conn = db.connect(catalog, readonly=True)
    try:
        page_size = int(db.first(conn.execute("PRAGMA page_size").fetchall()))
        root = int(
            db.first(
                conn.execute(
                    "SELECT rootpage FROM sqlite_master WHERE name = 'files_original_name'"
                ).fetchall()
            )
        )
    finally:
        conn.close()
    with open(catalog, "r+b") as f:
        f.seek((root - 1) * page_size + 8)
        f.write(random.Random(1).randbytes(page_size - 8))


def test_damaged_index_page_is_reported_never_traced_back(tmp_path: Path) -> None:
    cfg, cfg_path, card = filed_library(tmp_path)
    _corrupt_index(cfg.catalog)
    deep = cli(cfg_path, "verify", "--deep")
    assert deep.returncode == 1, deep.stdout + deep.stderr
    assert "catalog_damaged" in deep.stdout
    for args in (
        ["find", "IMG_1.JPG"],
        ["status"],
        ["history"],
        ["import", str(card)],
        ["verify", "--deep", "--json"],
    ):
        res = cli(cfg_path, *args)
        assert "Traceback" not in res.stderr, (args, res.stderr)
        if res.returncode not in (0, 1):
            assert "damaged" in res.stderr or "malformed" in res.stderr, (args, res.stderr)


@pytest.mark.parametrize("how", ["deleted", "replaced", "truncated"])
def test_lost_while_running_stops_loudly(tmp_path: Path, how: str) -> None:
    cfg, cfg_path = make_config(tmp_path)
    d = Daemon(tmp_path, cfg_path)
    try:
        d.ready()
        write(cfg.inbox / "a.jpg", jpeg_bytes(BASE, 1))
        wait_for(lambda: not (cfg.inbox / "a.jpg").exists(), 30, "a.jpg filed")
        if how == "deleted":
            cfg.catalog.unlink()
        elif how == "replaced":
            tmp = cfg.catalog.with_name("new.db")
            tmp.write_bytes(b"")
            tmp.rename(cfg.catalog)
        else:
            os.truncate(cfg.catalog, 0)
        code = d.proc.wait(30)
    finally:
        d.close()
    log = (tmp_path / "daemon.log").read_text()
    assert code not in (0, None), log[-2000:]
    # noticed by the guard, or (truncated) by SQLite first: either way said clearly
    assert "daemon.catalog_lost" in log or "is damaged" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert "verify --repair" in log
