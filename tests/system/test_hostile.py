"""Hostile inbox entries through the real `mediasortd import --move`: each is filed,
goes to `rejected` with its reason, or is left alone where moving it is not safe. Never
lost, never a crash, never a blocked worker, never a byte read through a link."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import stat
import subprocess
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from daemon.config import Config
from daemon.store import db
from tests.helpers import (
    check_consistent,
    cli,
    cli_argv,
    jpeg_bytes,
    make_config,
    sha,
    tree_hashes,
    write,
)
from tests.system.users import reachable_dir

WHEN = datetime(2020, 2, 29, 12, 0, 0)


def jobs(cfg: Config) -> dict[bytes, tuple[str, str | None, bytes | None]]:
    conn = db.connect(cfg.catalog)
    try:
        return {
            bytes(s): (o, e, bytes(d) if d else None)
            for s, o, e, d in conn.execute(
                "SELECT source, outcome, error, dest FROM jobs WHERE step = 'done'"
            )
        }
    finally:
        conn.close()


def test_special_entries_are_rejected_without_being_opened(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    inbox = cfg.inbox
    os.mkfifo(inbox / "pipe.jpg")  # opening it for reading would block forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(inbox / "sock.jpg"))
    sock.close()
    photo = write(tmp_path / "elsewhere" / "real.jpg", jpeg_bytes(WHEN, 1))
    os.symlink(photo, inbox / "link-to-photo.jpg")
    os.symlink("/etc/shadow", inbox / "shadow.jpg")
    os.symlink("/nonexistent", inbox / "dangling.jpg")
    (inbox / "folder.jpg").mkdir()
    write(inbox / "folder.jpg" / "inside.jpg", jpeg_bytes(WHEN, 2))
    if os.geteuid() == 0:
        os.mknod(inbox / "null.jpg", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    write(inbox / "empty.jpg", b"")
    r = cli(cfg_path, "import", "--move", str(inbox), timeout=60)
    assert r.returncode == 0, r.stderr
    done = jobs(cfg)
    by_name = {os.path.basename(k).decode(): v for k, v in done.items()}
    for name in (
        "pipe.jpg",
        "sock.jpg",
        "link-to-photo.jpg",
        "shadow.jpg",
        "dangling.jpg",
        "empty.jpg",
    ) + (("null.jpg",) if os.geteuid() == 0 else ()):
        outcome, error, dest = by_name[name]
        assert outcome == "rejected", (name, outcome, error)
        assert dest is not None and os.path.lexists(dest), name
    assert "a symbolic link" in (by_name["shadow.jpg"][1] or "")
    assert "a FIFO" in (by_name["pipe.jpg"][1] or "")
    assert by_name["inside.jpg"][0] == "filed"
    # the links were moved as links: no byte of /etc/shadow or the photo was copied
    assert os.path.islink(cfg.rejected / "shadow.jpg")
    assert os.readlink(cfg.rejected / "shadow.jpg") == "/etc/shadow"
    assert photo.exists() and list(tree_hashes(cfg.library).values()) == [sha(jpeg_bytes(WHEN, 2))]
    shadow = Path("/etc/shadow")
    if shadow.exists():
        secret = sha(shadow.read_bytes())
        for root in (cfg.library, cfg.rejected, cfg.duplicates):
            assert secret not in tree_hashes(root, hidden=True).values()


def test_awkward_names_are_filed(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    names = [
        b"new\nline.jpg",
        b"bad-\xff\xfe-utf8.jpg",
        unicodedata.normalize("NFD", "café.jpg").encode(),
        b"-leading-dash.jpg",
        b"x" * 251 + b".jpg",
        b" spaced .JPG",
        b"$(rm -rf ~).jpg",
    ]
    files = {}
    for i, name in enumerate(names):
        path = os.path.join(os.fsencode(cfg.inbox), name)
        data = jpeg_bytes(datetime(2020, 3, 1, 0, 0, i), 10 + i)
        with open(path, "wb") as f:
            f.write(data)
        files[Path(os.fsdecode(path))] = data
    r = cli(cfg_path, "import", "--move", str(cfg.inbox))
    assert r.returncode == 0, r.stderr
    assert f"{len(names)} filed" in r.stdout
    assert sorted(tree_hashes(cfg.library)) == [
        f"2020-03/2020-03-01 00.00.0{i}.jpg" for i in range(len(names))
    ]
    check_consistent(cfg, files, move=True)
    status = json.loads(cli(cfg_path, "status", "--json").stdout)
    assert status["outcomes"]["filed"] == len(names)


def test_hard_links_in_the_inbox(tmp_path: Path) -> None:
    """Two names for one inode: filed once, the second is a duplicate; the bytes stay
    reachable from the library."""
    cfg, cfg_path = make_config(tmp_path)
    a = write(cfg.inbox / "a.jpg", jpeg_bytes(WHEN, 20))
    os.link(a, cfg.inbox / "b.jpg")
    r = cli(cfg_path, "import", "--move", str(cfg.inbox))
    assert r.returncode == 0 and "1 filed, 1 duplicate" in r.stdout, r.stdout
    assert len(tree_hashes(cfg.library)) == 1


def test_crafted_metadata_never_reaches_a_path(tmp_path: Path) -> None:
    # the camera's own make and model in the layout (issue 13.1), dated by mtime
    cfg, cfg_path = make_config(
        tmp_path,
        undated="mtime",
        layout="{make}/{model}/{year}-{month}/{year}-{month}-{day} {hour}.{minute}.{second}{ext}",
    )
    photo = write(cfg.inbox / "crafted.jpg", jpeg_bytes(None, 30))
    long = "A" * 10_000
    subprocess.run(
        [
            "exiftool",
            "-q",
            "-overwrite_original",
            "-DateTimeOriginal=../../../../etc/passwd",
            "-CreateDate=0000:00:00 00:00:00",
            f"-Make={long}",
            "-Model=../../x",
            "-XMP-dc:Title=..\\..\\x",
            f"-XMP-dc:Description={long}",
            str(photo),
        ],
        check=True,
    )
    os.utime(photo, (1_600_000_000, 1_600_000_000))
    r = cli(cfg_path, "import", "--move", str(cfg.inbox))
    assert r.returncode == 0, r.stderr
    [name] = tree_hashes(cfg.library)
    when = datetime.fromtimestamp(1_600_000_000)
    make, model, rest = name.split("/", 2)
    assert set(make) == {"A"} and len(make) <= 64 and model == "_.._x"
    assert rest == when.strftime("%Y-%m/%Y-%m-%d %H.%M.%S.jpg")  # dated by its mtime
    assert all(p.resolve().is_relative_to(tmp_path.resolve()) for p in tmp_path.rglob("*"))
    assert not (tmp_path.parent / "x").exists() and not Path("/etc/passwd.jpg").exists()


def test_truncated_and_fuzzed_media_never_crash(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    rng = random.Random(99)
    base = jpeg_bytes(WHEN, 40, size=64)
    mp4 = tmp_path / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=32x32:d=0.2",
            "-pix_fmt",
            "yuv420p",
            str(mp4),
        ],
        check=True,
    )
    samples = [base, mp4.read_bytes()]
    files = {}
    for i in range(40):
        data = bytearray(samples[i % 2])
        if i % 4 < 2:
            data = data[: rng.randrange(1, len(data))]  # truncated
        else:
            for _ in range(rng.randrange(1, 50)):  # bit flips
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        data += i.to_bytes(2, "big")
        files[write(cfg.inbox / f"fuzz{i:02d}{'.jpg' if i % 2 == 0 else '.mp4'}", bytes(data))] = (
            bytes(data)
        )
    r = cli(cfg_path, "import", "--move", str(cfg.inbox), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "failed" not in r.stdout
    check_consistent(cfg, files, move=True)


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A folder the user nobody can reach (pytest's tmp_path is private to root)."""
    d = reachable_dir("mediasortd-nobody-", "needs root to run mediasortd as another user")
    yield d
    shutil.rmtree(d)


def test_unreadable_file_as_a_normal_user(nobody_dir: Path) -> None:
    """Mode 000: the daemon's user cannot read it; it is moved to rejected as it is."""
    tmp_path = nobody_dir
    cfg, cfg_path = make_config(tmp_path)
    secret = write(cfg.inbox / "secret.jpg", jpeg_bytes(WHEN, 50))
    secret.chmod(0o000)
    write(cfg.inbox / "fine.jpg", jpeg_bytes(WHEN, 51))
    for p in [tmp_path, *tmp_path.rglob("*")]:
        os.chown(p, 65534, 65534, follow_symlinks=False)
    os.chown(secret, 0, 0)
    r = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            *cli_argv(cfg_path),
            "import",
            "--move",
            str(cfg.inbox),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 filed, 1 rejected" in r.stdout
    assert (cfg.rejected / "secret.jpg").exists()
    done = jobs(cfg)
    assert "Permission denied" in (done[os.fsencode(secret)][1] or "")


@pytest.mark.slow
def test_ten_gib_sparse_file_in_constant_memory(tmp_path: Path) -> None:
    """10 GiB (sparse) through the real import: hashed in full, copied as holes, and the
    process's peak RSS stays small."""
    cfg, cfg_path = make_config(tmp_path)
    big = cfg.inbox / "huge.bin"
    with open(big, "wb") as f:
        f.write(b"sparse test " * 100)
        f.truncate(10 << 30)
    out_path = tmp_path / "out.txt"
    with open(out_path, "w") as out_file:
        proc = subprocess.Popen(
            [*cli_argv(cfg_path), "import", "--move", str(cfg.inbox)],
            stdout=out_file,
            stderr=subprocess.DEVNULL,
        )
        peak = 0
        while proc.poll() is None:  # VmHWM: this process's own peak (not its parent's)
            peak = max(peak, vm_hwm_kib(proc.pid))
    out = out_path.read_text()
    assert proc.returncode == 0, out
    assert "1 rejected" in out  # not a photo or video
    placed = cfg.rejected / "huge.bin"
    assert placed.stat().st_size == 10 << 30
    assert placed.stat().st_blocks * 512 < 1 << 20, "the copy is not sparse"
    assert 0 < peak < 150_000, f"peak RSS {peak} KiB"


def vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def test_library_folder_unwritable_then_writable_again(nobody_dir: Path) -> None:
    """As a normal user: the library refuses new folders; the import reports the files
    as failed (exit 1) and leaves every source as it was; once writable, all is filed."""
    cfg, cfg_path = make_config(nobody_dir)
    files = {
        write(
            cfg.inbox / f"u{i}.jpg", jpeg_bytes(datetime(2021, 1, 1, 0, 0, i), 60 + i)
        ): jpeg_bytes(datetime(2021, 1, 1, 0, 0, i), 60 + i)
        for i in range(3)
    }
    cfg.library.mkdir()
    cfg.staging.mkdir(mode=0o700)
    for p in [nobody_dir, *nobody_dir.rglob("*")]:
        os.chown(p, 65534, 65534)
    cfg.library.chmod(0o555)  # staging exists, but no new folder can be made for a date
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # the five attempts each file is given, without the real backoff's 15 s between them
    r = subprocess.run(
        [*user, *cli_argv(cfg_path, "import", "--move", str(cfg.inbox), backoff=0.01)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "3 failed" in r.stdout
    assert all("(gave up after 5 attempts)" in (e or "") for _, e, _ in jobs(cfg).values())
    assert all(p.read_bytes() == d for p, d in files.items()), "a source was touched"
    assert os.listdir(cfg.staging) == []
    cfg.library.chmod(0o750)
    r = subprocess.run(
        [*user, *cli_argv(cfg_path, "import", "--move", str(cfg.inbox))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0 and "3 filed" in r.stdout, r.stdout + r.stderr
    check_consistent(cfg, files, move=True)
