"""A terminal that talks (issue 13.4): the real `mediasortd` on a pseudo-terminal (python's
pty module), and the same commands off a terminal, where the structured logs stay."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from tests.helpers import ROOT, cli, jpeg_bytes, make_config, write
from tests.system.terminal import on_terminal, terminal_config

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def lines(text: str) -> list[str]:
    """What a person sees: each line as last drawn (a progress line redrawn with \\r)."""
    return [
        ANSI.sub(
            "", line.split("\r")[-1] or (line.split("\r")[-2] if "\r" in line else "")
        ).rstrip()
        for line in text.replace("\r\n", "\n").split("\n")
    ]


def files(src: Path, n: int) -> None:
    for i in range(n):
        write(src / f"IMG_{i:03d}.jpg", jpeg_bytes(datetime(2020, 1, 1, 10, 0, i % 60), i))
    write(src / "notes.txt", b"not a photo\n")
    write(src / "empty.jpg", b"")


def test_import_on_a_terminal_shows_a_bar_short_lines_and_a_table(tmp_path: Path) -> None:
    cfg_path = terminal_config(tmp_path)
    files(tmp_path / "src", 40)
    rc, out = on_terminal(cfg_path, "import", str(tmp_path / "src"))
    assert rc == 0, out
    seen = lines(out)
    # no structured log lines, no per-file lines for filed files
    assert "ingest.finished" not in out and '"event"' not in out
    assert not re.search(r"\d\d:\d\d:\d\d filed", out)
    assert "import.started" not in out
    # the bar: files, bytes, rate; its last state shows everything done
    bar = [s for s in out.split("\r") if s.startswith("[")]
    assert bar, out
    assert re.search(r"\] 42/42 files, [\d.]+ KiB/[\d.]+ KiB, [\d.]+ (KiB|MiB|B)/s", bar[-1])
    assert any(re.search(r"\d+s left|\dm\d\ds left", b) for b in bar) or len(bar) < 3
    # warnings as short lines with a local time, above the bar
    rejected = [s for s in seen if "rejected  " in s and "notes.txt" in s]
    assert rejected and re.match(r"\d\d:\d\d:\d\d rejected  /", rejected[0]), seen
    assert len(rejected[0].replace(str(tmp_path), "")) < 100  # one short line
    # the summary table
    assert "imported 42 file(s): 40 filed, 2 rejected" in out
    table = "\n".join(seen)
    assert re.search(r"filed\s+40\s+into " + re.escape(str(tmp_path / "library")), table)
    assert re.search(r"rejected\s+2\s+.*an empty file \(1\)", table)
    assert re.search(r"failed\s+0", table) and re.search(r"duplicates\s+0", table)
    assert len(out.splitlines()) < 30  # not a line per file


def test_verbose_quiet_and_off_a_terminal(tmp_path: Path) -> None:
    cfg_path = terminal_config(tmp_path)
    files(tmp_path / "src", 5)
    rc, out = on_terminal(cfg_path, "import", "-v", str(tmp_path / "src"))
    assert rc == 0
    per_file = [s for s in lines(out) if re.match(r"\d\d:\d\d:\d\d filed\s+/", s)]
    assert len(per_file) == 5 and all(" -> 2020-01/" in s for s in per_file), out
    files(tmp_path / "src2", 0)
    write(tmp_path / "src2" / "other.txt", b"x")
    rc, out = on_terminal(cfg_path, "import", "-q", str(tmp_path / "src2"))
    assert rc == 0
    assert [s for s in lines(out) if s] == ["imported 3 file(s): 3 rejected"], out
    # off a terminal (a pipe): the structured logs as before, one JSON line per file
    write(tmp_path / "src3" / "new.jpg", jpeg_bytes(datetime(2021, 1, 1), 99))
    piped = cli(cfg_path, "import", str(tmp_path / "src3"))
    assert piped.returncode == 0
    events = [json.loads(line)["event"] for line in piped.stderr.splitlines()]
    assert events == ["import.started", "ingest.finished", "import.finished"]
    assert piped.stdout == "imported 1 file(s): 1 filed\n"


def test_adopt_on_a_terminal_has_no_spurious_import(tmp_path: Path) -> None:
    cfg_path = terminal_config(tmp_path)
    for i in range(3):
        write(
            tmp_path / "library" / "2020-01" / f"old{i}.jpg",
            jpeg_bytes(datetime(2020, 1, 1, 9, 0, i), 50 + i),
        )
    rc, out = on_terminal(cfg_path, "adopt", str(tmp_path / "library"))
    assert rc == 0, out
    assert "import.started" not in out and "0/0" not in out, out
    assert "3/3 files" in out and "adopted: 3 catalogued" in out


def test_find_shows_an_mtime_date_as_a_date(tmp_path: Path) -> None:
    _cfg, cfg_path = make_config(tmp_path, undated="mtime")
    old = write(tmp_path / "src" / "old.jpg", jpeg_bytes(None, 7))
    stamp = datetime(2009, 8, 7, 6, 5, 4).timestamp()
    os.utime(old, (stamp, stamp))
    assert cli(cfg_path, "import", str(old.parent)).returncode == 0
    found = cli(cfg_path, "find", "old.jpg").stdout
    assert "from mtime = '2009-08-07 06:05:04'" in found, found


def test_help_describes_run_status_and_verify() -> None:
    for command, words in (
        ("run", "watch the"),
        ("status", "dashboard"),
        ("verify", "Check the catalog"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "daemon", command, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        body = out.split("\n\n", 1)[1]  # after the usage lines
        assert words in body and not body.startswith("options:"), out
