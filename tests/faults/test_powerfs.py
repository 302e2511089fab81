"""powerfs itself: what survives a power cut is exactly what was made durable, and the
filesystem does what the daemon and SQLite ask of it."""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.files.dirs import make_dirs
from daemon.files.moves import link_noreplace, rename_noreplace, same_file
from daemon.store import db
from tests.faults.powercut import PowerFS, unavailable
from tests.helpers import ROOT, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[PowerFS]:
    with PowerFS(tmp_path / "powerfs") as f:
        f.mount()
        yield f


def fsync(path: Path, datasync: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        (os.fdatasync if datasync else os.fsync)(fd)
    finally:
        os.close(fd)


def cut(fs: PowerFS) -> None:
    fs.cut()
    fs.mount()


def durable_dir(fs: PowerFS, name: str = "d") -> Path:
    d = fs.mnt / name
    d.mkdir()
    fsync(fs.mnt)
    return d


# -- new files ------------------------------------------------------------------------------


def test_a_file_never_fsynced_is_gone(fs: PowerFS) -> None:
    d = durable_dir(fs)
    (d / "a").write_bytes(b"hello")
    cut(fs)
    assert d.is_dir() and os.listdir(d) == []


def test_fsync_of_a_file_does_not_make_its_entry_durable(fs: PowerFS) -> None:
    d = durable_dir(fs)
    (d / "a").write_bytes(b"hello")
    fsync(d / "a")
    cut(fs)
    assert os.listdir(d) == []


def test_an_entry_synced_before_its_bytes_is_empty(fs: PowerFS) -> None:
    d = durable_dir(fs)
    (d / "a").write_bytes(b"hello")
    fsync(d)
    cut(fs)
    assert (d / "a").read_bytes() == b""


def test_file_and_folder_synced_survive(fs: PowerFS) -> None:
    d = durable_dir(fs)
    (d / "a").write_bytes(b"hello")
    fsync(d / "a")
    fsync(d)
    ino = os.stat(d / "a").st_ino
    cut(fs)
    assert (d / "a").read_bytes() == b"hello" and os.stat(d / "a").st_ino == ino


@pytest.mark.parametrize("datasync", [False, True], ids=["fsync", "fdatasync"])
def test_fdatasync_keeps_bytes_not_mode(fs: PowerFS, datasync: bool) -> None:
    d = durable_dir(fs)
    (d / "a").write_bytes(b"hello")
    fsync(d / "a")
    fsync(d)
    os.chmod(d / "a", 0o604)
    (d / "a").write_bytes(b"bye")
    fsync(d / "a", datasync)
    cut(fs)
    assert (d / "a").read_bytes() == b"bye"
    assert stat.S_IMODE(os.stat(d / "a").st_mode) == (0o644 if datasync else 0o604)


def test_a_new_folder_needs_its_parent_synced(fs: PowerFS) -> None:
    d = durable_dir(fs)
    (d / "sub").mkdir()
    (d / "sub" / "a").write_bytes(b"x")
    fsync(d / "sub" / "a")
    fsync(d / "sub")
    cut(fs)
    assert not (d / "sub").exists()


# -- changes to existing files ---------------------------------------------------------------


def test_unsynced_overwrite_reverts_and_synced_one_stays(fs: PowerFS) -> None:
    d = durable_dir(fs)
    p = d / "a"
    p.write_bytes(b"0123456789" * 1000)
    fsync(p)
    fsync(d)
    with open(p, "r+b") as f:
        f.seek(5000)
        f.write(b"XXXX")
        f.truncate(6000)
    cut(fs)
    assert p.read_bytes() == b"0123456789" * 1000
    fd = os.open(p, os.O_RDWR)
    try:
        os.pwrite(fd, b"abc", 20000)  # a hole, then bytes
        os.ftruncate(fd, 15000)
        os.pwrite(fd, b"tail", 16000)
        os.fdatasync(fd)
        expected = os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)
    cut(fs)
    assert p.read_bytes() == expected and len(expected) == 16004
    assert expected[10000:16000] == bytes(6000)


def test_o_trunc_without_fsync_reverts(fs: PowerFS) -> None:
    d = durable_dir(fs)
    (d / "a").write_bytes(b"keep")
    fsync(d / "a")
    fsync(d)
    (d / "a").write_bytes(b"")  # O_TRUNC
    assert (d / "a").read_bytes() == b""
    cut(fs)
    assert (d / "a").read_bytes() == b"keep"


# -- entries: unlink, rename, link ------------------------------------------------------------


def durable_file(d: Path, name: str, data: bytes) -> Path:
    (d / name).write_bytes(data)
    fsync(d / name)
    fsync(d)
    return d / name


def test_unlink_reverts_without_a_folder_fsync(fs: PowerFS) -> None:
    d = durable_dir(fs)
    durable_file(d, "a", b"a")
    durable_file(d, "b", b"b")
    (d / "a").unlink()
    (d / "b").unlink()
    fsync(d / "..")  # another folder: no help
    cut(fs)
    assert sorted(os.listdir(d)) == ["a", "b"]
    (d / "a").unlink()
    fsync(d)
    cut(fs)
    assert os.listdir(d) == ["b"]


def test_rename_across_folders(fs: PowerFS) -> None:
    src, dst = durable_dir(fs, "src"), durable_dir(fs, "dst")
    f = durable_file(src, "a", b"data")
    os.rename(f, dst / "b")
    cut(fs)  # neither folder synced: as before
    assert os.listdir(src) == ["a"] and os.listdir(dst) == []
    os.rename(f, dst / "b")
    fsync(dst)
    cut(fs)  # only the new name is durable: both names, one inode
    assert (src / "a").read_bytes() == (dst / "b").read_bytes() == b"data"
    assert os.stat(src / "a").st_ino == os.stat(dst / "b").st_ino
    assert os.stat(dst / "b").st_nlink == 2
    (dst / "b").unlink()
    fsync(dst)
    os.rename(f, dst / "b")
    fsync(src)
    cut(fs)  # only the removal is durable: the file is lost (why the order matters)
    assert os.listdir(src) == [] and os.listdir(dst) == []


def test_rename_within_a_folder_and_over_a_file(fs: PowerFS) -> None:
    d = durable_dir(fs)
    durable_file(d, "a", b"new")
    durable_file(d, "b", b"old")
    os.rename(d / "a", d / "b")
    assert (d / "b").read_bytes() == b"new" and not (d / "a").exists()
    cut(fs)
    assert (d / "a").read_bytes() == b"new" and (d / "b").read_bytes() == b"old"
    os.replace(d / "a", d / "b")
    fsync(d)
    cut(fs)
    assert os.listdir(d) == ["b"] and (d / "b").read_bytes() == b"new"


def test_rename_noreplace_and_the_daemons_primitives(fs: PowerFS) -> None:
    d = durable_dir(fs)
    a, b = durable_file(d, "a", b"a"), durable_file(d, "b", b"b")
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.renameat2(-100, bytes(a), -100, bytes(b), 1)  # RENAME_NOREPLACE
    assert rc == -1 and ctypes.get_errno() == errno.EEXIST
    assert rename_noreplace(bytes(a), bytes(d / "c")) is True
    assert not rename_noreplace(bytes(d / "c"), bytes(b))
    assert link_noreplace(bytes(b), bytes(d / "b2")) is True
    assert not link_noreplace(bytes(b), bytes(d / "c"))
    assert same_file(bytes(b), bytes(d / "b2"))
    rc = libc.renameat2(-100, bytes(d / "c"), -100, bytes(b), 2)  # RENAME_EXCHANGE
    assert rc == 0 and (d / "b").read_bytes() == b"a" and (d / "c").read_bytes() == b"b"
    e = durable_dir(fs, "e")
    make_dirs(bytes(e / "x" / "y"), 0o750)
    cut(fs)  # make_dirs fsyncs each parent; the renames and links were never synced
    assert sorted(os.listdir(d)) == ["a", "b"] and (e / "x" / "y").is_dir()


def test_make_dirs_makes_a_folder_it_finds_durable_before_use(fs: PowerFS) -> None:
    """A folder someone else made (another worker before its parent fsync, a process
    killed there) is durable once make_dirs returns: a file linked into it and its
    folder fsynced survive the cut (the old make_dirs returned at once: both lost)."""
    d = durable_dir(fs)
    a = durable_file(d, "a", b"photo")
    (fs.mnt / "m").mkdir()  # its entry never fsynced
    make_dirs(bytes(fs.mnt / "m"), 0o750)
    os.link(a, fs.mnt / "m" / "a")
    fsync(fs.mnt / "m")
    cut(fs)
    assert (fs.mnt / "m" / "a").read_bytes() == b"photo"


def test_hard_links_share_an_inode_and_need_their_folder_synced(fs: PowerFS) -> None:
    d = durable_dir(fs)
    a = durable_file(d, "a", b"photo")
    os.link(a, d / "l1")
    assert os.stat(a).st_ino == os.stat(d / "l1").st_ino and os.stat(a).st_nlink == 2
    cut(fs)
    assert os.listdir(d) == ["a"] and os.stat(a).st_nlink == 1
    os.link(a, d / "l1")
    fsync(d)
    a.unlink()
    cut(fs)
    assert sorted(os.listdir(d)) == ["a", "l1"] and os.stat(a).st_nlink == 2


# -- everything else the daemon and SQLite use ----------------------------------------------


def test_posix_surface(fs: PowerFS) -> None:
    d = durable_dir(fs)
    fd = os.open(d / "x", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o640)
    try:
        with pytest.raises(FileExistsError):
            os.open(d / "x", os.O_CREAT | os.O_EXCL | os.O_RDWR)
        os.pwrite(fd, b"hello world", 0)
        assert os.pread(fd, 5, 6) == b"world"
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.fchmod(fd, 0o600)
        st = os.fstat(fd)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 11
    finally:
        os.close(fd)
    os.utime(d / "x", ns=(1_000_000_000, 2_000_000_000))
    assert os.stat(d / "x").st_mtime_ns == 2_000_000_000
    os.symlink("x", d / "s")
    assert os.readlink(d / "s") == "x" and stat.S_ISLNK(os.lstat(d / "s").st_mode)
    with pytest.raises(OSError) as e:
        os.open(d / "s", os.O_RDONLY | os.O_NOFOLLOW)
    assert e.value.errno == errno.ELOOP
    os.mkfifo(d / "fifo")
    assert stat.S_ISFIFO(os.lstat(d / "fifo").st_mode)
    (d / "sub").mkdir()
    (d / "sub" / "f").write_bytes(b"")
    with pytest.raises(OSError) as e:
        (d / "sub").rmdir()
    assert e.value.errno == errno.ENOTEMPTY
    (d / "sub" / "f").unlink()
    (d / "sub").rmdir()
    assert os.statvfs(d).f_bavail > 0
    assert sorted(os.listdir(d)) == ["fifo", "s", "x"]
    assert ".powerfs" not in os.listdir(fs.mnt)  # the control file is hidden


def test_an_unlinked_open_file_stays_readable(fs: PowerFS) -> None:
    d = durable_dir(fs)
    with open(d / "a", "w+b") as f:
        f.write(b"still here")
        f.flush()
        (d / "a").unlink()
        f.seek(0)
        assert f.read() == b"still here"
        os.fsync(f.fileno())
    assert os.listdir(d) == []


def test_leak_one_persists_everything_unsynced(fs: PowerFS) -> None:
    d = durable_dir(fs)
    fs.command("leak 1.0")
    (d / "a").write_bytes(b"leaked")
    os.rename(d / "a", d / "b")
    cut(fs)
    assert os.listdir(d) == ["b"] and (d / "b").read_bytes() == b"leaked"


def test_an_armed_cut_freezes_before_the_nth_change(fs: PowerFS) -> None:
    d = durable_dir(fs)
    fs.arm(3)
    code = (
        "import os, sys\n"
        "d = sys.argv[1]\n"
        "os.mkdir(d + '/one')\n"  # 1
        "fd = os.open(d, os.O_RDONLY); os.fsync(fd)\n"  # 2
        "os.mkdir(d + '/two')\n"  # 3: frozen before it
        "print('not reached', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(d)],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(fs.fired, 30, "the cut to fire")
        assert proc.poll() is None  # blocked in mkdir
        assert fs.fired() == "op 3: mkdir"
    finally:
        fs.cut(proc)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
    assert out == b""
    fs.mount()
    assert os.listdir(d) == ["one"]


# -- SQLite, the way the daemon opens it ---------------------------------------------------

SQLITE_WRITER = """
import sys
from pathlib import Path
from daemon.store import db
conn = db.connect(Path(sys.argv[1]))
conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, pad TEXT)")
for n in range(1, 400):
    with db.transaction(conn):
        conn.execute("INSERT INTO t VALUES (?, ?)", (n, "x" * (n % 700)))
    print(n, flush=True)
conn.close()
print("closed", flush=True)
"""


def ended_or_fired(proc: subprocess.Popen[bytes], fs: PowerFS) -> bool:
    return proc.poll() is not None or fs.fired() is not None


@pytest.mark.slow
def test_sqlite_wal_keeps_every_committed_transaction(fs: PowerFS) -> None:
    """The catalog's own settings (WAL, synchronous=FULL) on powerfs: each cut keeps
    every transaction whose COMMIT returned, and the database is never corrupt."""
    state = durable_dir(fs, "state")
    catalog = state / "catalog.db"
    writer = fs.root / "writer.py"
    writer.write_text(SQLITE_WRITER)
    total = None
    for i, frac in enumerate([None, 0.07, 0.31, 0.52, 0.77, 0.95]):
        if frac is not None:
            assert total is not None
            fs.arm(max(1, int(total * frac)), leak=0.3 * (i % 2), seed=i)
        before = fs.stats()["ops"]
        out = fs.root / f"out-{i}.txt"
        with open(out, "wb") as o:
            proc = subprocess.Popen(
                [sys.executable, str(writer), str(catalog)],
                cwd=ROOT,
                stdout=o,
                start_new_session=True,
            )
            try:
                wait_for(functools.partial(ended_or_fired, proc, fs), 60, "writer or cut")
            except BaseException:
                fs.cut(proc)
                raise
            if frac is None:
                assert proc.wait() == 0
                total = fs.stats()["ops"] - before
            fs.cut(proc)
        lines = out.read_text().split()
        committed = max((int(x) for x in lines if x.isdigit()), default=0)
        fs.mount()
        conn = db.connect(catalog)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            rows = conn.execute("SELECT n FROM t ORDER BY n").fetchall()
            conn.execute("DELETE FROM t")
        finally:
            conn.close()
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
        assert len(rows) >= committed, f"cut {i}: {committed} committed, {len(rows)} kept"
    assert fs.cuts == 6
