"""`mediasortd undo`, the real command in a subprocess, on catalogs built by real imports
and a real daemon: files back where they came from (never over anything), catalog rows
gone, `verify --deep` clean; SIGKILLed at every point and resumed; daemon bursts."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from daemon import config
from daemon.app import lookup, report
from daemon.store import db
from tests.helpers import (
    check_consistent,
    cli,
    jpeg_bytes,
    make_config,
    sha,
    tree_hashes,
    wait_for,
    write,
)
from tests.system.daemon_harness import Daemon

BASE = datetime(2022, 7, 1, 8, 0, 0)
OLD_MTIME_NS = 1_600_000_000 * 10**9


def card(root: Path, n: int = 6) -> dict[Path, bytes]:
    """Photos (pairs share a second), a duplicate of the first, a text file, an empty file;
    each with an old mtime that undo must give back."""
    files = {
        root / "cam" / f"DSC_{i:04d}.JPG": jpeg_bytes(BASE + timedelta(seconds=i // 2), i)
        for i in range(n)
    }
    files[root / "again" / "DSC_0000.JPG"] = jpeg_bytes(BASE, 0)
    files[root / "readme.txt"] = b"hello"
    files[root / "zero.jpg"] = b""
    for p, d in files.items():
        write(p, d)
        os.utime(p, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    return files


def history(cfg: config.Config, **kw: Any) -> list[dict[str, Any]]:
    conn = db.connect(cfg.catalog, readonly=True)
    try:
        return lookup.history(conn, limit=None, **kw)
    finally:
        conn.close()


def batches(cfg: config.Config) -> list[str]:
    """Batch ids, oldest first."""
    return list(dict.fromkeys(r["batch"] for r in reversed(history(cfg))))


def catalog_rows(cfg: config.Config) -> int:
    conn = db.connect(cfg.catalog, readonly=True)
    try:
        return int(db.first(conn.execute("SELECT count(*) FROM files").fetchall()))
    finally:
        conn.close()


def verify(cfg: config.Config) -> report.Report:
    conn = db.connect(cfg.catalog, readonly=True)
    try:
        return report.verify(cfg, conn, deep=True)
    finally:
        conn.close()


def verify_clean(cfg_path: Path) -> None:
    """The real `verify --deep`."""
    r = cli(cfg_path, "verify", "--deep", "--json")
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["ok"] is True


def all_back(files: dict[Path, bytes]) -> None:
    for p, d in files.items():
        assert p.read_bytes() == d, p
        assert p.stat().st_mtime_ns == OLD_MTIME_NS, p
    folders = {p.parent for p in files}
    extra = [p for f in folders for p in f.iterdir() if p.is_file() and p not in files]
    assert extra == [], f"undo left something beside the sources: {extra}"


def library_empty(cfg: config.Config) -> None:
    assert tree_hashes(cfg.library) == {}
    for side in (cfg.duplicates, cfg.rejected):
        assert not side.exists() or list(side.iterdir()) == []
    assert catalog_rows(cfg) == 0


def test_undo_an_import_move_puts_everything_back(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "card"
    files = card(src)
    assert cli(cfg_path, "import", "--move", str(src)).returncode == 0
    assert not any(p.exists() for p in files)
    [batch] = batches(cfg)
    stranger = write(src / "cam" / "DSC_0003.JPG", b"a different file, written since")

    before = (tree_hashes(tmp_path, hidden=True), catalog_rows(cfg))
    dry = cli(cfg_path, "undo", "--dry-run", batch[:22])  # a unique prefix will do
    assert dry.returncode == 0, dry.stderr
    assert "would restore" in dry.stdout and f"dry run, nothing changed: undo {batch}" in dry.stdout
    assert f"{src}/cam/DSC_0003.JPG <- " in dry.stdout and "DSC_0003.1.JPG" in dry.stdout
    assert (tree_hashes(tmp_path, hidden=True), catalog_rows(cfg)) == before

    r = cli(cfg_path, "undo", batch)
    assert r.returncode == 0, r.stderr
    assert f"undo {batch} (undo-" in r.stdout and "9 file(s): 9 put back" in r.stdout
    assert stranger.read_bytes() == b"a different file, written since"  # never overwritten
    moved_aside = src / "cam" / "DSC_0003.1.JPG"
    assert moved_aside.read_bytes() == files.pop(src / "cam" / "DSC_0003.JPG")
    files[moved_aside] = moved_aside.read_bytes()
    files[stranger] = stranger.read_bytes()
    os.utime(stranger, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    all_back(files)
    library_empty(cfg)
    verify_clean(cfg_path)

    found = json.loads(cli(cfg_path, "find", "--json", "DSC_0001.JPG").stdout)[0]["results"]
    assert [(a["outcome"], a["undo"]["outcome"]) for a in found] == [("filed", "restored")]
    undone = history(cfg, outcomes=["undone"])
    assert len(undone) == 9 and {u["batch"] for u in undone} == {batches(cfg)[-1]}
    again = cli(cfg_path, "undo", batch)
    assert again.returncode == 0 and "nothing to undo" in again.stdout
    assert "9 file(s) of it were undone before" in again.stdout

    # the catalog forgot them: importing again files them again
    files.pop(stranger)
    assert cli(cfg_path, "import", "--move", str(src)).returncode == 0
    check_consistent(cfg, files, move=True)
    assert len(tree_hashes(cfg.library)) == 6


def test_undo_plain_imports_since_when(tmp_path: Path) -> None:
    """A plain import left its sources: undo only removes the library copies and rows
    (a source deleted since is put back). --since takes every batch since then. Usage
    errors exit 64."""
    cfg, cfg_path = make_config(tmp_path)
    plain = card(tmp_path / "plain", 4)
    assert cli(cfg_path, "import", str(tmp_path / "plain")).returncode == 0
    moved = {write(tmp_path / "moved" / "IMG_1.JPG", jpeg_bytes(BASE, 50)): jpeg_bytes(BASE, 50)}
    [moved_path] = moved
    os.utime(moved_path, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    assert cli(cfg_path, "import", "--move", str(tmp_path / "moved")).returncode == 0
    inodes = {p: p.stat().st_ino for p in plain}
    gone = tmp_path / "plain" / "cam" / "DSC_0002.JPG"
    gone.unlink()  # the user deleted a source since: the library copy is the only one

    r = cli(cfg_path, "undo", "--since", "1h")
    assert r.returncode == 0, r.stderr
    assert (
        "2 put back, 3 library copy removed (the source still had it), 3 nothing to undo"
        in r.stdout
    ), r.stdout
    all_back({**plain, **moved})
    assert all(p.stat().st_ino == ino for p, ino in inodes.items() if p != gone)
    library_empty(cfg)
    assert verify(cfg).ok
    assert cli(cfg_path, "undo", "--since", "2999-01-01").stdout.count("nothing to undo") == 1
    cases: list[tuple[tuple[str, ...], str]] = [
        ((), "give BATCH... or --since WHEN"),
        (("import-1999",), "no such batch"),
        (("--since", "whenever"), "not a time"),
    ]
    for args, msg in cases:
        r = cli(cfg_path, "undo", *args)
        assert r.returncode == 64 and msg in r.stderr, r.stderr


def unfinished_undo(cfg: config.Config) -> bool:
    return any(p.kind == "unfinished" and "undo of job" in p.detail for p in verify(cfg).problems)


def test_undo_killed_at_every_point_then_resumed(tmp_path: Path) -> None:
    """The real `undo` SIGKILLed at each point of its protocol in turn, each run resuming
    the one before (a replay of a replay), the last one finished by an import's start-up:
    everything back once, nothing left behind, the catalog consistent."""
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "card"
    files = card(src)  # 9 files: 6 filed, a quarantined duplicate, 2 rejects
    assert cli(cfg_path, "import", "--move", str(src)).returncode == 0
    [batch] = batches(cfg)
    # recorded:3 -> two files undone, the 3rd about to start; placed:1 -> the 3rd's bytes
    # back at its source, not committed; restored:2 -> the 4th committed as restored;
    # unlinked:1 -> its library copy removed, its row not yet; done:2 -> the 5th finished
    for point in ("recorded:3", "placed:1", "restored:2", "unlinked:1", "done:2"):
        killed = cli(cfg_path, "undo", batch, env={"MEDIASORTD_TEST_KILL_AT": f"undo.{point}"})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stdout, killed.stderr)
        assert unfinished_undo(cfg), point
    empty = tmp_path / "empty"
    empty.mkdir()
    resumed = cli(cfg_path, "import", str(empty))  # any writing command finishes it first
    assert resumed.returncode == 0, resumed.stderr
    final = cli(cfg_path, "undo", batch)
    assert final.returncode == 0, final.stderr
    assert (
        "nothing to undo" in final.stdout and "9 file(s) of it were undone before" in final.stdout
    )
    all_back(files)
    library_empty(cfg)
    verify_clean(cfg_path)
    assert not any(".mediasortd-" in p.name for p in tmp_path.rglob("*"))
    undone = history(cfg, outcomes=["undone"])
    assert sorted(u["job"] for u in undone) == list(range(1, 10))  # each file undone once


def test_daemon_bursts_get_their_own_batch_and_undo_keeps_them_out_of_the_inbox(
    tmp_path: Path,
) -> None:
    cfg, cfg_path = make_config(tmp_path, settle_seconds=0.2, batch_idle_seconds=0.5)
    d = Daemon(tmp_path, cfg_path)
    try:
        d.ready()
        first = {
            write(cfg.inbox / f"a{i}.jpg", jpeg_bytes(BASE, 200 + i)): jpeg_bytes(BASE, 200 + i)
            for i in range(3)
        }
        wait_for(lambda: len(tree_hashes(cfg.library)) == 3, 20, "first burst filed")
        info = json.loads(cli(cfg_path, "status", "--json").stdout)
        assert info["now"]["writer"] == {"pid": d.proc.pid, "command": "run"}

        def quiet_for(seconds: float) -> bool:  # the journal's last word is old enough
            last = json.loads(cli(cfg_path, "status", "--json").stdout)["now"]["last_finished"]
            return time.time() - datetime.fromisoformat(last).timestamp() > seconds

        wait_for(lambda: quiet_for(1.0), 10, "a quiet inbox")
        second = {
            write(cfg.inbox / "trip" / f"b{i}.jpg", jpeg_bytes(BASE, 300 + i)): jpeg_bytes(
                BASE, 300 + i
            )
            for i in range(2)
        }
        wait_for(lambda: len(tree_hashes(cfg.library)) == 5, 20, "second burst filed")
        assert d.terminate() == 0
    finally:
        d.close()
    run1, run2 = batches(cfg)
    assert run1.startswith("run-") and run2.startswith("run-")
    assert sorted(os.path.basename(r["source"]) for r in history(cfg, batches=[run2])) == [
        "b0.jpg",
        "b1.jpg",
    ]
    log = (tmp_path / "daemon.log").read_text()
    assert f'"batch": "{run2}"' in log and "daemon.batch_started" in log

    r = cli(cfg_path, "undo", run2)
    assert r.returncode == 0, r.stderr
    assert not any(cfg.inbox.rglob("*.jpg")), "the daemon would file them again at once"
    for p, data in second.items():
        back = cfg.library / ".undone" / run2 / p.relative_to(cfg.inbox)
        assert back.read_bytes() == data
    assert sorted(tree_hashes(cfg.library).values()) == sorted(map(sha, first.values()))
    assert catalog_rows(cfg) == 3
    verify_clean(cfg_path)
