"""Faults made for real: a full filesystem under the library, a catalog locked by another
process, ExifTool killed while filing, and the daemon SIGKILLed at random moments."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.store import db
from tests.helpers import (
    check_consistent,
    cli,
    cli_argv,
    jpeg_bytes,
    make_config,
    small_tmpfs,
    tree_hashes,
    wait_for,
    write,
)
from tests.system.daemon_harness import Daemon

BASE = datetime(2019, 9, 9, 9, 9, 0)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs: a real filesystem that fills up."""
    with small_tmpfs(tmp_path / "small", "6m") as mnt:
        yield mnt


def test_library_filesystem_full_waits_then_resumes(tmp_path: Path, small_fs: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    text = cfg_path.read_text().replace(
        f'library = "{tmp_path}/library"', f'library = "{small_fs}/library"'
    )
    cfg_path.write_text(text)
    from daemon import config

    cfg = config.load(str(cfg_path))
    filler = small_fs / "filler"
    filler.write_bytes(os.urandom(4 << 20))  # leaves about 2 MiB
    d = Daemon(tmp_path, cfg_path)
    try:
        d.ready()
        small = {
            write(cfg.inbox / f"s{i}.jpg", jpeg_bytes(BASE + timedelta(seconds=i), i)): None
            for i in range(3)
        }
        big_data = jpeg_bytes(BASE + timedelta(minutes=5), 99) + os.urandom(3 << 20)
        big = write(cfg.inbox / "big.jpg", big_data)
        wait_for(lambda: len(tree_hashes(cfg.library)) == 3, 20, "the small files filed")
        wait_for(lambda: "library full" in d.status(), 20, "STATUS says the library is full")
        status = json.loads(cli(cfg_path, "status", "--json").stdout)
        assert status["library_full"] is True
        assert "LIBRARY FULL" in cli(cfg_path, "status").stdout
        assert big.read_bytes() == big_data, "the source stays while it waits"
        # a retry's copy may be under way at any moment; a partial copy left behind
        # would never go away
        wait_for(lambda: os.listdir(cfg.staging) == [], 10, "no partial copy left in staging")
        filler.unlink()  # space comes back: filing resumes by itself
        wait_for(lambda: len(tree_hashes(cfg.library)) == 4, 30, "the big file filed")
        wait_for(lambda: "library full" not in d.status(), 10)
        assert d.terminate() == 0
        files = {p: jpeg_bytes(BASE + timedelta(seconds=i), i) for i, p in enumerate(small)}
        files[big] = big_data
        check_consistent(cfg, files, move=True)
    finally:
        d.close()


def test_catalog_locked_by_another_process_for_a_while(tmp_path: Path) -> None:
    """Another process holds the catalog's write lock for two seconds: the import waits
    for it (busy timeout) instead of failing, then files everything."""
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "card"
    files = {write(src / f"p{i}.jpg", jpeg_bytes(BASE, i)): jpeg_bytes(BASE, i) for i in range(5)}
    conn = db.connect(cfg.catalog)  # creates and migrates it
    conn.execute("BEGIN IMMEDIATE")  # hold the write lock
    importer = subprocess.Popen(
        cli_argv(cfg_path, "import", str(src)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert not _wait_quietly(importer, 2.0), "import finished while the catalog was locked"
        assert not cfg.library.exists() or tree_hashes(cfg.library) == {}
    finally:
        conn.execute("COMMIT")
        conn.close()
    out, err = importer.communicate(timeout=60)
    assert importer.returncode == 0, err
    assert "5 filed" in out
    check_consistent(cfg, files, move=False)


def _wait_quietly(proc: subprocess.Popen[Any], seconds: float) -> bool:
    try:
        proc.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def exiftool_children(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid), "-f", "exiftool"], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def test_exiftool_killed_while_filing(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path, settle_seconds=0.1)
    d = Daemon(tmp_path, cfg_path)
    files = {}
    try:
        d.ready()
        for i in range(60):  # undated JPEGs, dated by name: ExifTool reads every one
            files[write(cfg.inbox / f"IMG_20200101_1200{i:02d}.jpg", jpeg_bytes(None, i))] = (
                jpeg_bytes(None, i)
            )
        kills = 0

        def kill_some() -> bool:
            nonlocal kills
            for pid in exiftool_children(d.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
            return len(tree_hashes(cfg.library)) >= 30 or kills >= 5

        wait_for(kill_some, 30, "ExifTool killed a few times")
        wait_for(lambda: len(tree_hashes(cfg.library)) == 60, 60, "all 60 filed")
        assert kills >= 1
        assert d.terminate() == 0
    finally:
        d.close()
    conn = db.connect(cfg.catalog)
    try:
        bad = conn.execute("SELECT count(*) FROM jobs WHERE outcome != 'filed'").fetchall()
    finally:
        conn.close()
    assert bad[0][0] == 0, "a file was rejected or failed because ExifTool died"
    check_consistent(cfg, files, move=True)


@pytest.mark.slow
def test_daemon_sigkilled_50_times_while_filing_2000_files(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path, settle_seconds=0.1)
    files = {}
    for i in range(2000):
        data = jpeg_bytes(BASE + timedelta(seconds=i // 2), i)
        files[write(tmp_path / "src" / f"d{i // 100}" / f"f{i:04d}.jpg", data)] = data
    os.rename(tmp_path / "src", cfg.inbox / "dump")
    files = {cfg.inbox / "dump" / p.relative_to(tmp_path / "src"): d for p, d in files.items()}
    rng = random.Random(2026)
    for _ in range(50):
        d = Daemon(tmp_path, cfg_path)
        try:
            d.ready(60)
            deadline = rng.uniform(0.05, 0.6)
            _wait_quietly(d.proc, deadline)
        finally:
            d.close()  # SIGKILL
    d = Daemon(tmp_path, cfg_path)
    try:
        d.ready(60)
        wait_for(lambda: len(tree_hashes(cfg.library)) == 2000, 300, "all 2000 filed")
        wait_for(lambda: not any(p.is_file() for p in cfg.inbox.rglob("*")), 30)
        assert d.terminate() == 0
    finally:
        d.close()
    check_consistent(cfg, files, move=True)
