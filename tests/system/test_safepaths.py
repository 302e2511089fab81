"""An attacker in the inbox, against the real `mediasortd run`: folders swapped for
symlinks under a file the daemon already saw (decoys of the same size and mtime, so they
settle at once), writers that stall or reopen mid-file, and entries that must leave an
inbox on another filesystem. Nothing outside the configured folders is read, moved or
removed; no file is cut into pieces; nothing is lost."""

from __future__ import annotations

import os
import random
import shutil
import stat
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from daemon.config import Config
from daemon.store import db
from tests.helpers import (
    cli,
    holds,
    idle,
    jpeg_bytes,
    make_config,
    sha,
    tree_hashes,
    wait_for,
    write,
)
from tests.system.daemon_harness import Daemon
from tests.system.users import (
    UserDaemon,
    finish,
    go_on,
    half_written,
    release,
    user_jobs,
    user_setup,
    writer,
)

BASE = datetime(2022, 3, 4, 5, 6, 7)


def catalog_ok(cfg: Config) -> None:
    """Every catalog row's file is in the library with its bytes."""
    conn = db.connect(cfg.catalog)
    try:
        rows = conn.execute("SELECT path, sha256 FROM files").fetchall()
    finally:
        conn.close()
    for path, digest in rows:
        assert sha((cfg.library / str(path)).read_bytes()) == digest, path


def swap_loop(inbox: Path, targets: list[Path], seconds: float, seed: int) -> dict[str, int]:
    """For `seconds`: a real folder `inbox/d` holding decoys (the names, sizes and mtimes
    of the files in a target folder), swapped for a symlink to that folder once the
    daemon may have seen them, and back. Returns how often each was done."""
    rng = random.Random(seed)
    trash = inbox.parent / "trash"
    trash.mkdir(exist_ok=True)
    done = {"decoys": 0, "links": 0}
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        target = rng.choice(targets)
        n += 1
        d = inbox / "d"
        try:  # the daemon prunes emptied folders and rejects symlinks: it may race us
            d.mkdir()
            for f in target.iterdir():
                if f.is_file():
                    st = f.stat()
                    decoy = d / f.name
                    decoy.write_bytes(os.urandom(st.st_size))
                    os.utime(decoy, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError:
            pass
        done["decoys"] += 1
        time.sleep(rng.uniform(0.05, 0.6))  # the attacker's own pace, not a sync point
        try:
            os.rename(d, trash / f"d{n}")  # whatever the daemon left of the decoys
        except OSError:
            pass
        try:
            os.symlink(target, d)
        except OSError:
            continue
        done["links"] += 1
        time.sleep(rng.uniform(0.05, 0.6))
        try:
            os.unlink(d)
        except OSError:
            pass
    return done


def test_symlink_swapped_folders_never_reach_outside(
    tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    """A folder under the inbox swapped for a symlink to a canary folder outside every
    configured folder and to a library folder, with on_duplicate = "delete", for ~12 s:
    the canaries and the library's files survive, and no byte of them is read (no copy of
    a canary anywhere under the library, rejected or quarantine)."""
    cfg, cfg_path = make_config(tmp_path, on_duplicate="delete")
    canary = tmp_path / "canary"
    for i in range(3):
        write(canary / f"c{i}.jpg", jpeg_bytes(BASE + timedelta(minutes=i), 100 + i))
    d = start_daemon(cfg_path)
    photos = {
        write(cfg.inbox / f"p{i}.jpg", jpeg_bytes(BASE + timedelta(hours=i), i)): None
        for i in range(3)
    }
    wait_for(lambda: not any(p.exists() for p in photos) and idle(cfg), 30, "photos filed")
    before_library = tree_hashes(cfg.library)
    month = next(p.parent for p in cfg.library.rglob("*.jpg") if ".staging" not in str(p))
    before_canary = tree_hashes(canary)
    counts = swap_loop(cfg.inbox, [canary, month], 12.0, seed=15)
    assert counts["links"] > 10
    wait_for(lambda: idle(cfg), 30, "the daemon to finish")
    after_photo = write(cfg.inbox / "after.jpg", jpeg_bytes(BASE - timedelta(days=9), 99))
    wait_for(lambda: not after_photo.exists(), 15, "the daemon to still hear the inbox")
    assert d.terminate() == 0
    assert tree_hashes(canary) == before_canary, "a canary outside the folders was touched"
    after = tree_hashes(cfg.library)
    for rel, digest in before_library.items():
        assert after.get(rel) == digest, f"library file {rel} lost or changed"
    catalog_ok(cfg)
    outside_bytes = set(before_canary.values()) | set(before_library.values())
    for folder in (cfg.library, cfg.rejected, cfg.duplicates):
        for rel, digest in tree_hashes(folder, hidden=True).items():
            if folder == cfg.library and before_library.get(rel) == digest:
                continue
            assert digest not in outside_bytes, f"{folder / rel}: read through a symlink"
    shutil.rmtree(tmp_path / "trash", ignore_errors=True)


# -- the daemon as an unprivileged user (as under the unit), other users' writers ---------


def test_a_stalled_writer_of_another_user_is_waited_for(shared_dir: Path) -> None:
    """Another user's writer (invisible to the daemon's /proc look) stalls 3 x settle
    with half of the photo written: nothing is filed and the source stays while it has
    the file open (inotify or the read lease says so; `status` says why it waits); once it closes,
    the whole photo is filed and the source removed."""
    cfg, cfg_path = user_setup(shared_dir, inbox_tmpfs=False, settle_seconds=0.5)
    data = jpeg_bytes(BASE, 7, size=96)
    d = UserDaemon(shared_dir, cfg_path)
    try:
        d.ready()
        path = cfg.inbox / "slow.jpg"
        w, stalled = half_written(path, data)
        # held back by the first check that sees it: inotify's writes without a close
        # (the watcher), else the read lease (the worker); `status` says why
        wait_for(
            lambda: any(
                why in cli(cfg_path, "status").stdout
                for why in ("still open for writing", "not closed since")
            ),
            30,
            "the daemon to see the writer",
        )
        holds(
            lambda: path.exists() and not list(cfg.library.glob("20*/*")),  # the stall
            stalled + 3 * 0.5 - time.monotonic(),
            "filed mid-write",
        )
        assert release(w) == 0
        wait_for(
            lambda: not path.exists() and idle(cfg),
            30,
            lambda: f"the photo to be filed: {user_jobs(cfg)}\n{d.text()[-3000:]}",
        )
        filed = list(cfg.library.glob("20*/*"))
        assert [p.read_bytes() for p in filed] == [data]
    finally:
        d.close()


def test_a_writer_that_reopens_between_chunks_is_not_cut(shared_dir: Path) -> None:
    """Another user's writer that closes and reopens the file between chunks (quicker
    than settle, with room for a loaded machine): the photo is filed once, whole; no
    piece of it is filed."""
    cfg, cfg_path = user_setup(shared_dir, inbox_tmpfs=False, settle_seconds=1.0)
    photos = {i: jpeg_bytes(BASE + timedelta(seconds=i), 20 + i, size=64) for i in range(3)}
    d = UserDaemon(shared_dir, cfg_path)
    try:
        d.ready()
        writers = [writer(cfg.inbox / f"r{i}.jpg", data, 8, "reopen") for i, data in photos.items()]
        for _ in range(7):
            for w in writers:
                go_on(w)
            time.sleep(0.15)  # the writers' own pace between chunks, not a sync point
        for w in writers:
            assert finish(w) == 0
        wait_for(lambda: not list(cfg.inbox.glob("*.jpg")) and idle(cfg), 30, "all filed")
        filed = sorted(p.read_bytes() for p in cfg.library.glob("20*/*"))
        assert filed == sorted(photos.values())
    finally:
        d.close()


def test_entries_leave_an_inbox_on_another_filesystem(shared_dir: Path) -> None:
    """Inbox on a tmpfs, library on the disk (rename(2) gives EXDEV, as under the unit's
    bind mounts): a symlink (recreated as a symlink), a FIFO and a socket go to rejected;
    a duplicate to quarantine; an unreadable file waits in the inbox and is filed once a
    chmod makes it readable; a device node is left in place, reported once and never
    retried, over several rescans."""
    import socket

    cfg, cfg_path = user_setup(shared_dir, inbox_tmpfs=True, settle_seconds=0.2, rescan_seconds=1.0)
    photo, secret = jpeg_bytes(BASE, 30), jpeg_bytes(BASE + timedelta(days=1), 31)
    d = UserDaemon(shared_dir, cfg_path)
    try:
        d.ready()
        write(cfg.inbox / "first.jpg", photo)
        wait_for(lambda: not (cfg.inbox / "first.jpg").exists() and idle(cfg), 30, "filed")
        write(cfg.inbox / "again.jpg", photo)
        os.symlink("/etc/passwd", cfg.inbox / "link.jpg")
        os.mkfifo(cfg.inbox / "pipe.jpg")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(cfg.inbox / "sock.jpg"))
        sock.close()
        os.mknod(cfg.inbox / "null.jpg", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        write(cfg.inbox / "secret.jpg", secret).chmod(0o600)  # root's: nobody cannot read
        gone = ["again.jpg", "link.jpg", "pipe.jpg", "sock.jpg"]
        wait_for(
            lambda: not any(os.path.lexists(cfg.inbox / n) for n in gone) and idle(cfg),
            30,
            lambda: f"{os.listdir(cfg.inbox)} {user_jobs(cfg)}",
        )
        assert os.readlink(cfg.rejected / "link.jpg") == "/etc/passwd"
        assert stat.S_ISFIFO(os.lstat(cfg.rejected / "pipe.jpg").st_mode)
        assert stat.S_ISSOCK(os.lstat(cfg.rejected / "sock.jpg").st_mode)
        assert (cfg.duplicates / "again.jpg").read_bytes() == photo
        assert sorted(os.listdir(cfg.inbox)) == ["null.jpg", "secret.jpg"]
        scans = d.text().count("watcher.scanned")
        wait_for(lambda: d.text().count("watcher.scanned") >= scans + 3, 30, "3 rescans")
        jobs = user_jobs(cfg)
        [null] = [j for j in jobs if j[0].endswith(b"/null.jpg")]
        assert null[1] == "rejected" and "left in place" in (null[2] or ""), null
        [waiting] = [j for j in jobs if j[0].endswith(b"/secret.jpg")]
        assert "filed once it is readable" in (waiting[2] or ""), waiting
        (cfg.inbox / "secret.jpg").chmod(0o644)
        wait_for(
            lambda: not (cfg.inbox / "secret.jpg").exists() and idle(cfg),
            30,
            "the readable file to be filed",
        )
        assert secret in [p.read_bytes() for p in cfg.library.glob("20*/*")]
        assert os.listdir(cfg.inbox) == ["null.jpg"]
        assert [j[0] for j in user_jobs(cfg)].count(null[0]) == 1, "the device was retried"
    finally:
        d.close()


def deep_photo(top: Path, fill: str, data: bytes) -> int:
    """`data` as deep.jpg 22 folders of 203 bytes below `top` (past PATH_MAX, so made
    through folder descriptors): the deepest folder's descriptor (the caller closes it)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(22):
        name = f"d{i:02d}" + fill * 200
        os.mkdir(name, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    out = os.open("deep.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(out, data)
    os.close(out)
    return fd


def test_a_path_longer_than_path_max_is_filed(
    tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    """A photo 22 folders of 203 bytes deep (past PATH_MAX: no path-based call can reach
    it) is found, filed and removed through folder descriptors."""
    cfg, cfg_path = make_config(tmp_path, rescan_seconds=1.0)
    d = start_daemon(cfg_path)
    data = jpeg_bytes(BASE, 44)
    fd = deep_photo(cfg.inbox, "x", data)
    try:
        wait_for(
            lambda: [p.read_bytes() for p in cfg.library.glob("20*/*")] == [data],
            30,
            "the deep photo to be filed",
        )
        wait_for(
            lambda: "deep.jpg" not in os.listdir(fd) and idle(cfg), 30, "its source to be removed"
        )
    finally:
        os.close(fd)
    assert d.terminate() == 0
    shutil.rmtree(cfg.inbox)


def test_import_move_of_a_tree_past_path_max(tmp_path: Path) -> None:
    """`import --move` of a folder whose photo lies past PATH_MAX: found (the walk goes
    through folder descriptors), filed, and its source removed."""
    cfg, cfg_path = make_config(tmp_path)
    data = jpeg_bytes(BASE, 45)
    top = tmp_path / "card"
    top.mkdir()
    fd = deep_photo(top, "y", data)
    try:
        r = cli(cfg_path, "import", "--move", str(top))
        assert r.returncode == 0, r.stdout + r.stderr
        assert [p.read_bytes() for p in cfg.library.glob("20*/*")] == [data]
        assert "deep.jpg" not in os.listdir(fd)
    finally:
        os.close(fd)
    shutil.rmtree(top)
