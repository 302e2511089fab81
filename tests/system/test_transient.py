"""Issue 15.6: the daemon's own trouble of the moment is not the file's fault.

Too many open files (a real RLIMIT_NOFILE in the subprocess) never sends a good photo to
`rejected`: the job is retried, and at worst fails with the reason, its source untouched.
A source folder removed after a crash between decide and retire: the job finishes as
done (the bytes are safe in the library), neither failed nor retried forever."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

from tests.helpers import check_consistent, cli, jpeg_bytes, make_config, wait_for, write
from tests.system.daemon_harness import Daemon

BASE = datetime(2021, 9, 8, 7, 6, 5)
N = 12
SPARE = 3  # descriptors left: the settle check gets its look, the filing does not


def jobs(catalog: Path) -> list[tuple[str, str | None, str | None]]:
    with sqlite3.connect(catalog) as conn:
        return conn.execute("SELECT step, outcome, error FROM jobs ORDER BY id").fetchall()


def test_too_many_open_files_is_retried_never_rejected(tmp_path: Path) -> None:
    """The running daemon's descriptor limit is lowered (prlimit) to just above what it
    holds: opening a source's folder, the source or its staged copy meets EMFILE for real.
    No file is rejected or taken for vanished for it; the daemon keeps running; once the
    limit is raised again every photo is filed, nothing lost or uncatalogued."""
    cfg, cfg_path = make_config(tmp_path)
    d = Daemon(tmp_path, cfg_path)
    try:
        d.ready()
        pid = d.proc.pid
        held = len(os.listdir(f"/proc/{pid}/fd"))
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (held + SPARE, hard))
        data = {
            cfg.inbox / f"IMG_{i}.JPG": jpeg_bytes(BASE + timedelta(seconds=i), i) for i in range(N)
        }
        for p, v in data.items():
            write(p, v)
        log = tmp_path / "daemon.log"
        wait_for(
            lambda: (
                '"ingest.deferred"' in log.read_text() and "Too many open files" in log.read_text()
            ),
            30,
            "a file to meet EMFILE",
        )
        assert d.proc.poll() is None, log.read_text()[-3000:]
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        wait_for(lambda: not any(p.exists() for p in data), 150, "every photo filed")  # backoff
        assert d.terminate() == 0
    finally:
        d.close()
    rows = jobs(cfg.catalog)
    assert [o for _, o, _ in rows] == ["filed"] * N, rows
    assert not cfg.rejected.exists() or not any(cfg.rejected.rglob("*"))
    check_consistent(cfg, data, move=True)


def test_source_folder_removed_between_decide_and_retire(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "card" / "DCIM"
    data = {src / f"IMG_{i}.JPG": jpeg_bytes(BASE + timedelta(seconds=i), i) for i in range(N)}
    for p, d in data.items():
        write(p, d)
    killed = cli(
        cfg_path,
        "import",
        "--move",
        str(tmp_path / "card"),
        env={"MEDIASORTD_TEST_KILL_AT": "decided:1"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    shutil.rmtree(src)  # the card's folder is gone before the import is run again
    (tmp_path / "empty").mkdir()
    again = cli(cfg_path, "import", "--move", str(tmp_path / "empty"))
    assert again.returncode == 0, again.stdout + again.stderr
    rows = jobs(cfg.catalog)
    assert all(step == "done" for step, _, _ in rows), rows
    assert not any(outcome == "failed" for _, outcome, _ in rows), rows
    lib = {p.name for p in cfg.library.rglob("*.jpg")}
    assert len(lib) >= 1  # the decided job's photo is in the library, catalogued
    verify = cli(cfg_path, "verify")
    assert verify.returncode == 0, verify.stdout
    assert os.listdir(cfg.staging) == []
