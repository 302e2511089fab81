"""A hostile or unlucky inbox under the real unit (installed by install.sh, booted
systemd): a folder swapped for symlinks in a loop with on_duplicate = "delete" (a canary
outside every folder and the library's files must survive, unread); entries that must
leave the inbox for `rejected` across the sandbox's bind mounts (rename(2) gives EXDEV);
a writer of another user, invisible to the daemon, stalling mid-file."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import holds, wait_for
from tests.system.unitbox import (
    UNIT,
    Configured,
    files_under,
    library_files,
    make_jpeg,
    set_toml_keys,
    sha256,
)
from tests.system.users import WRITER, finish, release

pytestmark = [pytest.mark.root]
CONFIG = "/etc/mediasortd/hostile.toml"
SETTLE = 0.5


@pytest.fixture(scope="module")
def hostile(configured: Configured) -> Iterator[Configured]:
    """The shared service with on_duplicate = "delete" (its own config beside test.toml,
    by a drop-in of its own); put back afterwards."""
    box = configured.box
    test_toml = (box.root / "etc/mediasortd/test.toml").read_text()
    (box.root / CONFIG.lstrip("/")).write_text(
        set_toml_keys(
            test_toml,
            {"ingest": {"on_duplicate": "delete", "settle_seconds": SETTLE, "rescan_seconds": 2.0}},
        )
    )
    dropin = box.root / "run/systemd/system" / f"{UNIT}.d" / "zz-hostile.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(
        f"[Service]\nExecStart=\nExecStart=/opt/mediasortd/bin/mediasortd --config {CONFIG} run\n"
    )
    box.sx("systemctl", "daemon-reload")
    box.sx("systemctl", "reset-failed", UNIT, check=False)
    box.sx("systemctl", "restart", UNIT, timeout=60)
    try:
        yield configured
    finally:
        dropin.unlink()
        (box.root / CONFIG.lstrip("/")).unlink()
        box.sx("systemctl", "daemon-reload")
        box.sx("systemctl", "reset-failed", UNIT, check=False)
        box.sx("systemctl", "restart", UNIT, timeout=60)


def says(entry: dict[str, Any], *texts: str) -> bool:
    """A journal entry with each text in some field (whatever the fields are named)."""
    values = [str(v) for v in entry.values()]
    return all(any(t in v for v in values) for t in texts)


def inbox_settled(inbox: Path, names: list[str]) -> bool:
    return not any(os.path.lexists(inbox / n) for n in names)


def test_symlink_swap_loop_under_the_unit(hostile: Configured) -> None:
    box, inbox, library = hostile.box, hostile.inbox, hostile.library
    canary = box.share / "canary"
    canary.mkdir(exist_ok=True)
    for i in range(3):
        (canary / f"c{i}.jpg").write_bytes(make_jpeg(5000 + i, datetime(2018, 1, 2, 3, 4, i)))
    before_canary = {p.name: sha256(p) for p in canary.iterdir()}
    photos = {f"swap-{i}.jpg": make_jpeg(5100 + i, datetime(2018, 2, 3, 4, 5, i)) for i in range(2)}
    for name, data in photos.items():
        (inbox / name).write_bytes(data)
    wait_for(lambda: inbox_settled(inbox, list(photos)), 30, "the photos to be filed")
    before_library = {str(p.relative_to(library)): sha256(p) for p in library_files(library)}
    month = library / "2018-02"
    assert month.is_dir()
    rng = random.Random(1511)
    trash = box.share / "trash"
    trash.mkdir(exist_ok=True)
    end, links, n = time.monotonic() + 15.0, 0, 0
    while time.monotonic() < end:
        n += 1
        target = rng.choice([canary, month])
        d = inbox / "d"
        try:
            d.mkdir()
            for f in target.iterdir():
                if f.is_file() and not f.is_symlink():
                    st = f.stat()
                    (d / f.name).write_bytes(os.urandom(st.st_size))
                    os.utime(d / f.name, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError:
            pass
        time.sleep(rng.uniform(0.1, 0.8))  # the attacker's pace, not a sync point
        try:
            os.rename(d, trash / f"d{n}")
            os.symlink(target, d)
            links += 1
        except OSError:
            continue
        time.sleep(rng.uniform(0.1, 0.8))
        try:
            os.unlink(d)
        except OSError:
            pass
    assert links > 8
    wait_for(
        lambda: not os.path.lexists(inbox / "d") or not (inbox / "d").is_symlink(),
        30,
        "the last link handled",
    )
    assert box.sx("systemctl", "is-active", UNIT, check=False).stdout.strip() == "active"
    after = inbox / "swap-after.jpg"
    after.write_bytes(make_jpeg(5150, datetime(2018, 2, 3, 4, 6, 0)))
    wait_for(lambda: not after.exists(), 15, "the service to still hear the inbox")
    assert {p.name: sha256(p) for p in canary.iterdir()} == before_canary
    now = {str(p.relative_to(library)): sha256(p) for p in library_files(library)}
    for rel, digest in before_library.items():
        assert now.get(rel) == digest, f"library file {rel} lost or changed"
    outside = set(before_canary.values()) | set(before_library.values())
    for p in files_under(library):
        rel = str(p.relative_to(library))
        if not p.is_symlink() and p.is_file() and before_library.get(rel) != sha256(p):
            assert sha256(p) not in outside, f"{p}: read through a symlink"
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(canary, ignore_errors=True)


def test_rejects_leave_the_inbox_across_bind_mounts(hostile: Configured) -> None:
    """Under the sandbox the inbox and the library are separate bind mounts (EXDEV): a
    symlink and a FIFO leave the inbox for `rejected` as they are; an unreadable file
    waits in the inbox and is filed once a chmod makes it readable."""
    box, inbox, library = hostile.box, hostile.inbox, hostile.library
    rejected = library / ".rejected"
    os.symlink("/etc/shadow", inbox / "hostile-link.jpg")
    os.mkfifo(inbox / "hostile-fifo.jpg")
    secret = inbox / "hostile-secret.jpg"
    data = make_jpeg(5200, datetime(2017, 6, 7, 8, 9, 10))
    secret.write_bytes(data)
    secret.chmod(0o600)  # root's: the service's user cannot read it
    os.chown(secret, 0, 0)
    wait_for(
        lambda: inbox_settled(inbox, ["hostile-link.jpg", "hostile-fifo.jpg"]),
        30,
        lambda: (
            f"the link and the FIFO to leave the inbox: {os.listdir(inbox)}; "
            + box.sx("journalctl", "-u", UNIT, "-n", "20", "--no-pager", check=False).stdout
        ),
    )
    assert os.readlink(rejected / "hostile-link.jpg") == "/etc/shadow"
    assert stat.S_ISFIFO(os.lstat(rejected / "hostile-fifo.jpg").st_mode)
    wait_for(
        lambda: any(says(e, "filed once it is readable", "hostile-secret") for e in box.journal()),
        30,
        "the unreadable file to be reported",
    )
    assert secret.exists()
    secret.chmod(0o644)
    wait_for(lambda: not secret.exists(), 30, "the readable file to be filed")
    assert data in [p.read_bytes() for p in library_files(library)]


def test_a_stalled_writer_of_another_user_under_the_unit(hostile: Configured) -> None:
    """A writer of another user (outside the service's sight: another uid, another pid
    namespace) stalls 3 x settle with half a photo written: the service waits (inotify saw
    writes and no close; its read lease cannot be had while the file is open for
    writing), then files the whole."""
    box, inbox, library = hostile.box, hostile.inbox, hostile.library
    gid = inbox.stat().st_gid  # the inbox's group may write there
    data = make_jpeg(5300, datetime(2016, 7, 8, 9, 10, 11)) + os.urandom(200_000)
    path = inbox / "hostile-slow.jpg"
    w = subprocess.Popen(
        [
            "setpriv",
            "--reuid=4242",
            f"--regid={gid}",
            "--clear-groups",
            sys.executable,
            "-c",
            WRITER,
            str(path),
            "2",
            str(len(data)),
            "stall",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert w.stdin is not None and w.stdout is not None
    try:
        w.stdin.write(data)
        w.stdin.flush()
        assert int(w.stdout.readline()) == 0
        stalled = time.monotonic()
        # held by the first check that sees it: inotify's writes without a close (the
        # watcher), else the read lease (the worker)
        wait_for(
            lambda: any(
                says(e, "still open for writing", "hostile-slow")
                or says(e, "not closed since", "hostile-slow")
                for e in box.journal()
            ),
            30,
            lambda: (
                "the service to see the writer: "
                + box.sx("journalctl", "-u", UNIT, "-n", "20", "--no-pager", check=False).stdout
            ),
        )
        holds(
            path.exists, stalled + 3 * SETTLE - time.monotonic(), "the source was taken mid-write"
        )
        assert release(w) == 0
    finally:
        if w.poll() is None:
            w.kill()
            finish(w)
    wait_for(lambda: not path.exists(), 30, "the whole photo to be filed")
    assert hashlib.sha256(data).hexdigest() in [sha256(p) for p in library_files(library)]
    half = hashlib.sha256(data[: -(-len(data) // 2)]).hexdigest()
    assert half not in [
        sha256(p) for p in files_under(library) if p.is_file() and not p.is_symlink()
    ], "half of it was filed"
