"""Issue 15.7: the state directory (the catalog's filesystem) full or read-only.

Nothing is lost; the one-shot commands say so with the path (exit 75 full, 73
read-only), never a traceback; the daemon waits for space as it does for a full
library, says so in STATUS= and `status`, and goes on by itself once space is freed."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers import (
    check_consistent,
    cli,
    jpeg_bytes,
    make_config,
    small_tmpfs,
    wait_for,
    write,
)
from tests.system.daemon_harness import Daemon

BASE = datetime(2020, 2, 3, 4, 5, 6)


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    # room for SQLite's write-ahead log (up to ~4 MiB before its checkpoint) once freed
    with small_tmpfs(tmp_path / "state", "8m") as mnt:
        yield mnt


def fill(mnt: Path) -> Path:
    """Fill the filesystem to the last byte; the filler is returned to free it."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 512):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def photos(folder: Path, n: int, seed: int = 0) -> dict[Path, bytes]:
    out = {
        folder / f"IMG_{seed + i}.JPG": jpeg_bytes(BASE + timedelta(seconds=seed + i), seed + i)
        for i in range(n)
    }
    for p, d in out.items():
        write(p, d)
    return out


def test_import_with_the_state_dir_full_says_so(tmp_path: Path, small_state: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    assert cli(cfg_path, "import", str(tmp_path / "inbox")).returncode == 0  # the catalog
    fill(small_state)
    files = photos(tmp_path / "card", 40)
    res = cli(cfg_path, "import", "--move", str(tmp_path / "card"))
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == 75, (res.returncode, res.stdout, res.stderr[-2000:])
    assert str(small_state) in res.stderr.splitlines()[-1]
    assert all(p.read_bytes() == d for p, d in files.items() if p.exists())
    (small_state / "filler").unlink()
    again = cli(cfg_path, "import", "--move", str(tmp_path / "card"))
    assert again.returncode == 0, again.stderr[-2000:]
    check_consistent(cfg, files, move=True)


def test_state_dir_read_only_says_so(tmp_path: Path, small_state: Path) -> None:
    _cfg, cfg_path = make_config(tmp_path)
    photos(tmp_path / "card", 2)
    assert cli(cfg_path, "import", str(tmp_path / "card")).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_state)], check=True)
    try:
        for args in (
            ["import", str(tmp_path / "card")],
            ["run"],
            ["undo", "x"],
            ["verify", "--repair"],
        ):
            res = cli(cfg_path, *args, timeout=60)
            assert "Traceback" not in res.stderr, (args, res.stderr[-3000:])
            # `run` checks its writable paths first (the unit's self-check: exit 78)
            assert res.returncode in ((73, 78) if args == ["run"] else (73,)), (
                args,
                res.returncode,
                res.stderr[-2000:],
            )
            assert str(small_state) in res.stderr, (args, res.stderr)
        st = cli(cfg_path, "status")
        assert "Traceback" not in st.stderr, st.stderr
        if st.returncode == 0:
            assert "CATALOG READ-ONLY" in st.stdout
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_state)], check=True)


def test_daemon_waits_while_the_state_dir_is_full(tmp_path: Path, small_state: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    d = Daemon(tmp_path, cfg_path)
    try:
        d.ready()
        filler = fill(small_state)
        files = photos(cfg.inbox, 40)
        wait_for(
            lambda: "catalog's filesystem full" in d.status() or d.proc.poll() is not None,
            30,
            "STATUS= says the catalog is full",
        )
        assert d.proc.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
        info = json.loads(cli(cfg_path, "status", "--json").stdout)
        assert info["state_full"] is True
        assert "CATALOG FULL" in cli(cfg_path, "status").stdout
        filler.unlink()
        wait_for(lambda: not any(p.exists() for p in files), 60, "every photo filed")
        wait_for(lambda: "catalog's filesystem full" not in d.status(), 10)
        assert d.terminate() == 0
    finally:
        d.close()
    check_consistent(cfg, files, move=True)
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()
