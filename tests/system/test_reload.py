"""SIGHUP = reload, the state lock that survives its file being removed, and the start-up
self-check, with the real `mediasortd run` in a subprocess (a NOTIFY_SOCKET the test
binds). The same under the real systemd: tests/system/test_unit_reload.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from daemon.app import report
from daemon.config import load
from tests.helpers import ROOT, jpeg_bytes, make_config, tree_hashes, wait_for, write
from tests.system.daemon_harness import Daemon

BASE = datetime(2021, 5, 6, 7, 8, 9)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, Daemon]]:
    _, cfg_path = make_config(tmp_path, settle_seconds=0.2)
    d = Daemon(tmp_path, cfg_path)
    d.ready()
    yield cfg_path, d
    d.close()


def cli(cfg_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(cfg_path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def reload(d: Daemon) -> None:
    n = len(d.notify.seen("READY=1"))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: len(d.notify.seen("READY=1")) > n or d.proc.poll() is not None,
        10,
        "READY=1 after the reload",
    )
    assert d.proc.poll() is None, "SIGHUP stopped the daemon"


def edit(cfg_path: Path, old: str, new: str) -> None:
    text = cfg_path.read_text()
    assert old in text, text
    cfg_path.write_text(text.replace(old, new))


def test_sighup_applies_a_new_layout_and_inbox_to_the_next_file(
    daemon: tuple[Path, Daemon],
) -> None:
    cfg_path, d = daemon
    cfg = load(str(cfg_path))
    write(cfg.inbox / "a.jpg", jpeg_bytes(BASE, 1))
    wait_for(lambda: "1 filed" in d.status(), 15, "the first file filed")
    assert (cfg.library / "2021-05" / "2021-05-06 07.08.09.jpg").exists()

    new_inbox = cfg.inbox.parent / "inbox2"
    edit(
        cfg_path, "[ingest]", '[ingest]\nlayout = "{year}/{month}{day}-{hour}{minute}{second}{ext}"'
    )
    edit(cfg_path, f'inbox = "{cfg.inbox}"', f'inbox = "{new_inbox}"')
    reload(d)
    msgs = [m for _, m in d.notify.messages]
    i = msgs.index("RELOADING=1")
    assert re.fullmatch(r"MONOTONIC_USEC=\d+", msgs[i + 1]), msgs[i : i + 3]
    assert "READY=1" in msgs[i:]
    assert d.status().startswith(f"STATUS=watching {new_inbox}:"), d.status()

    write(new_inbox / "b.jpg", jpeg_bytes(BASE, 2))
    wait_for(
        (cfg.library / "2021" / "0506-070809.jpg").exists,
        15,
        "the next file filed under the new layout, from the new inbox",
    )
    write(cfg.inbox / "c.jpg", jpeg_bytes(BASE, 3))  # the old inbox is no longer watched
    assert d.proc.poll() is None
    assert d.terminate() == 0
    assert (cfg.inbox / "c.jpg").exists()


def test_a_bad_config_on_reload_keeps_the_old_one_and_says_so(daemon: tuple[Path, Daemon]) -> None:
    cfg_path, d = daemon
    cfg = load(str(cfg_path))
    good = cfg_path.read_text()
    edit(cfg_path, "[ingest]", '[ingest]\non_duplicate = "shred"')
    reload(d)
    assert "config reload failed" in d.status() and "on_duplicate" in d.status(), d.status()
    out = cli(cfg_path, "status")  # the config file is broken (78), the daemon runs on
    assert out.returncode == 78 and "on_duplicate" in out.stderr, out.stderr
    assert re.search(r"CONFIG .*reload failed.*on_duplicate", out.stdout), out.stdout
    info = json.loads(cli(cfg_path, "status", "--json").stdout)
    assert "on_duplicate" in info["daemon"]["config_error"]
    write(cfg.inbox / "a.jpg", jpeg_bytes(BASE, 1))  # the old config files on
    wait_for(lambda: "1 filed" in d.status(), 15, "a file filed on the old config")

    cfg_path.write_text(good.replace("[ingest]", "[ingest]\nqueue_size = 7"))
    reload(d)
    assert "config reload failed" not in d.status(), d.status()
    assert "restart to apply queue_size" in d.status(), d.status()
    assert "CONFIG" in cli(cfg_path, "status").stdout  # "needs a restart" line
    cfg_path.write_text(good)  # back to the running value: nothing waits for a restart
    reload(d)
    assert d.status().startswith("STATUS=watching "), d.status()
    log = (cfg_path.parent / "daemon.log").read_text()
    assert '"event": "daemon.reload_failed"' in log and "daemon.reload_needs_restart" in log


def test_removing_the_lock_file_lets_no_second_writer_in(
    daemon: tuple[Path, Daemon], tmp_path: Path
) -> None:
    cfg_path, d = daemon
    cfg = load(str(cfg_path))
    holder = report.writer(cfg)
    assert holder == {"pid": d.proc.pid, "command": "run"}, holder
    (cfg.state_dir / "lock").unlink()
    src = write(tmp_path / "src" / "x.jpg", jpeg_bytes(BASE, 9))
    out = cli(cfg_path, "import", str(src.parent))
    assert out.returncode == 75, out.stdout + out.stderr
    assert "another mediasortd" in out.stderr, out.stderr
    second = Daemon(tmp_path, cfg_path)
    try:
        assert second.proc.wait(30) == 75
    finally:
        second.close()
    # the daemon makes its lock file again (checked every second), status sees it again
    wait_for(
        lambda: report.writer(cfg) == {"pid": d.proc.pid, "command": "run"},
        10,
        "the lock file made again",
    )
    write(cfg.inbox / "x.jpg", jpeg_bytes(BASE, 9))
    wait_for(lambda: "1 filed" in d.status(), 15, "the file filed once, by the daemon")
    assert len(tree_hashes(cfg.library)) == 1
    assert d.terminate() == 0
    assert report.writer(cfg) is None


def test_a_folder_it_cannot_write_stops_the_start_with_78(tmp_path: Path) -> None:
    _, cfg_path = make_config(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    text = cfg_path.read_text().replace(
        f'library = "{tmp_path}/library"', f'library = "{blocker}/library"'
    )
    cfg_path.write_text(text)
    out = cli(cfg_path, "run")
    assert out.returncode == 78, out.stderr
    line = out.stderr.strip()
    assert "\n" not in line and f"{blocker}/library: the library" in line, line
    assert "ReadWritePaths=" in line and "unit-paths" in line, line
    drop = cli(cfg_path, "unit-paths")
    assert drop.returncode == 0, drop.stderr
    assert f"ReadWritePaths=-{tmp_path}/inbox -{blocker}/library" in drop.stdout, drop.stdout
    assert not os.path.exists(tmp_path / "state" / "lock")


def test_two_inboxes_feed_one_library_and_a_reload_changes_the_set(tmp_path: Path) -> None:
    _, cfg_path = make_config(tmp_path, settle_seconds=0.2)
    a, b, c = (tmp_path / n for n in ("bob-phone", "alice-phone", "scanner"))
    edit(cfg_path, f'inbox = "{tmp_path}/inbox"', f'inbox = ["{a}", "{b}"]')
    d = Daemon(tmp_path, cfg_path)
    try:
        d.ready()
        assert d.status().startswith(f"STATUS=watching {a}, {b}:"), d.status()
        cfg = load(str(cfg_path))
        write(a / "DCIM" / "1.jpg", jpeg_bytes(BASE, 1))
        write(b / "2.jpg", jpeg_bytes(BASE, 2))
        wait_for(lambda: "2 filed" in d.status(), 15, "a file from each inbox filed")
        assert len(tree_hashes(cfg.library)) == 2
        info = json.loads(cli(cfg_path, "status", "--json").stdout)
        assert info["inboxes"] == [str(a), str(b)], info["inboxes"]

        edit(cfg_path, f'inbox = ["{a}", "{b}"]', f'inbox = ["{b}", "{c}"]')
        reload(d)
        assert d.status().startswith(f"STATUS=watching {b}, {c}:"), d.status()
        write(c / "3.jpg", jpeg_bytes(BASE, 3))
        write(b / "4.jpg", jpeg_bytes(BASE, 4))
        wait_for(lambda: "4 filed" in d.status(), 15, "files from the new set filed")
        write(a / "5.jpg", jpeg_bytes(BASE, 5))  # no longer an inbox
        assert d.terminate() == 0
        assert (a / "5.jpg").exists() and len(tree_hashes(cfg.library)) == 4
    finally:
        d.close()
