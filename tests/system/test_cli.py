"""The real `mediasortd` command in a subprocess: import, status, verify, and SIGKILL at
every step and at random moments, each followed by a clean run and the shared check."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from daemon.config import Config
from daemon.model import Step
from tests.helpers import (
    ROOT,
    check_consistent,
    cli,
    jpeg_bytes,
    make_config,
    tree_hashes,
    wait_for,
    write,
)

BASE = datetime(2022, 7, 1, 8, 0, 0)


def mixed(inbox: Path, n: int = 12) -> dict[Path, bytes]:
    files: dict[Path, bytes] = {}
    for i in range(n):
        when = BASE + timedelta(seconds=i // 2)  # pairs share a second
        files[inbox / f"cam/DSC_{i:04d}.JPG"] = jpeg_bytes(when, i)
    files[inbox / "again/DSC_0000.JPG"] = jpeg_bytes(BASE, 0)  # duplicate content
    files[inbox / "readme.txt"] = b"hello"
    files[inbox / "zero.jpg"] = b""
    for p, d in files.items():
        write(p, d)
    return files


def test_import_twice_status_and_verify(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "card"
    files = mixed(src)
    first = cli(cfg_path, "import", str(src))
    assert first.returncode == 0, first.stderr
    assert "imported 15 file(s): 12 filed, 1 duplicate, 2 rejected" in first.stdout
    second = cli(cfg_path, "import", str(src))
    assert second.returncode == 0, second.stderr
    assert "13 duplicate, 2 rejected" in second.stdout and "filed" not in second.stdout
    assert len(tree_hashes(cfg.library)) == 12
    assert "2022-07/2022-07-01 08.00.00.1.jpg" in tree_hashes(cfg.library)
    status = cli(cfg_path, "status", "--json")
    info = json.loads(status.stdout)
    assert info["outcomes"]["filed"] == 12 and info["library_files"] == 12
    assert info["pending_jobs"] == 0
    human = cli(cfg_path, "status")
    assert human.returncode == 0 and "12 files" in human.stdout
    verify = cli(cfg_path, "verify", "--deep", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True
    check_consistent(cfg, files, move=False)


def test_verify_finds_strays_rot_and_missing(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "card"
    mixed(src, 4)
    assert cli(cfg_path, "import", str(src)).returncode == 0
    lib = sorted(p for p in cfg.library.rglob("*.jpg") if ".staging" not in p.parts)
    lib[0].unlink()
    lib[1].write_bytes(lib[1].read_bytes()[:-1] + b"\0")  # same size, other bytes
    write(cfg.library / "2022-07" / "stray.jpg", b"x")
    shallow = cli(cfg_path, "verify")
    assert shallow.returncode == 1
    assert "missing" in shallow.stdout and "stray" in shallow.stdout
    deep = json.loads(cli(cfg_path, "verify", "--deep", "--json").stdout)
    assert {p["kind"] for p in deep["problems"]} == {"missing", "stray", "hash_mismatch"}


def test_import_refuses_a_second_writer(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    from daemon.app.lock import StateLock

    lock = StateLock(cfg)
    try:
        r = cli(cfg_path, "import", str(tmp_path))
        assert r.returncode == 75 and "another mediasortd" in r.stderr
    finally:
        lock.release()


@pytest.mark.parametrize("nth", [1, 7])
@pytest.mark.parametrize(
    "step", [Step.RECORDED, Step.COPIED, Step.DECIDED, Step.PLACED], ids=lambda s: s.value
)
def test_sigkill_at_each_step_then_run_again(tmp_path: Path, step: Step, nth: int) -> None:
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "card"
    files = mixed(src)
    killed = cli(
        cfg_path,
        "import",
        "--move",
        str(src),
        env={"MEDIASORTD_TEST_KILL_AT": f"{step.value}:{nth}"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = cli(cfg_path, "import", "--move", str(src))
    assert again.returncode == 0, again.stderr
    check_consistent(cfg, files, move=True)
    assert len(tree_hashes(cfg.library)) == 12


@pytest.mark.slow
def test_import_move_killed_a_dozen_times_at_random(tmp_path: Path) -> None:
    """`import --move` SIGKILLed 12 times at random moments of its progress, then run to
    the end: nothing lost, nothing twice, every name right."""
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "card"
    files = mixed(src, 200)
    rng = random.Random(1234)
    targets = sorted(rng.sample(range(5, 195), 12))  # kill once this many are in place
    kills = 0
    for target in targets:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daemon",
                "--config",
                str(cfg_path),
                "import",
                "--move",
                str(src),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(
                lambda: proc.poll() is not None or placed(cfg) >= target,  # noqa: B023
                120,
                f"{target} files placed",
            )
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
    final = cli(cfg_path, "import", "--move", str(src))
    assert final.returncode == 0, final.stderr
    assert kills >= 10, "the import finished before it could be killed"
    check_consistent(cfg, files, move=True)
    names = tree_hashes(cfg.library)
    assert len(names) == 200
    expected = {
        f"2022-07/2022-07-01 {(BASE + timedelta(seconds=s)).strftime('%H.%M.%S')}{suffix}.jpg"
        for s in range(100)
        for suffix in ("", ".1")
    }
    assert set(names) == expected


def placed(cfg: Config) -> int:
    """Files in the library's date folders (a cheap count, for pacing kills)."""
    try:
        return sum(
            len(os.listdir(d))
            for d in os.scandir(cfg.library)
            if d.is_dir() and not d.name.startswith(".")
        )
    except OSError:
        return 0


def test_dry_run_predicts_and_changes_nothing(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "card"
    files = mixed(src, 4)
    r = cli(cfg_path, "import", "--dry-run", str(src))
    assert r.returncode == 0, r.stderr
    assert "would import 7 file(s): " in r.stdout
    assert "-> 2022-07/2022-07-01 08.00.00.1.jpg (date from" in r.stdout
    assert "duplicate" in r.stdout and "rejected" in r.stdout
    assert not cfg.catalog.exists() and not cfg.library.exists()
    assert all(p.read_bytes() == d for p, d in files.items())
    assert cli(cfg_path, "import", str(src)).returncode == 0
    again = cli(cfg_path, "import", "--dry-run", str(src))
    assert "would import 7 file(s): 5 duplicate, 2 rejected" in again.stdout
