"""Durable file primitives on real filesystems: large copies through the writer thread,
a filesystem that fills up in the middle of one, and no-overwrite placement."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.files.copy import PIPELINE_BYTES, copy_and_hash, hash_file
from daemon.files.moves import link_noreplace, move_noreplace, rename_noreplace
from tests.helpers import small_tmpfs


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "tiny", "12m") as mnt:
        yield mnt


def big_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_large_copy_is_exact(tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = big_file(src, (PIPELINE_BYTES * 3) + 12345)  # through the writer thread
    fd = os.open(src, os.O_RDONLY)
    try:
        sha, size, _ = copy_and_hash(fd, os.fsencode(tmp_path / "dst"), 0o640)
    finally:
        os.close(fd)
    assert (sha, size) == (expected, src.stat().st_size)
    assert hash_file(os.fsencode(tmp_path / "dst")) == (sha, size)


def test_filesystem_full_in_the_middle_of_a_large_copy(tmp_path: Path, tiny_fs: Path) -> None:
    src = tmp_path / "src"
    big_file(src, 20 << 20)  # larger than the filesystem
    fd = os.open(src, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            copy_and_hash(fd, os.fsencode(tiny_fs / "dst"), 0o640)
    finally:
        os.close(fd)
    assert e.value.errno == errno.ENOSPC


def test_link_and_rename_never_overwrite(tmp_path: Path) -> None:
    a, b, c = (os.fsencode(tmp_path / n) for n in ("a", "b", "c"))
    Path(os.fsdecode(a)).write_bytes(b"a")
    Path(os.fsdecode(b)).write_bytes(b"b")
    assert link_noreplace(a, b) is False and Path(os.fsdecode(b)).read_bytes() == b"b"
    assert rename_noreplace(a, b) is False and Path(os.fsdecode(a)).exists()
    assert rename_noreplace(a, c) is True and Path(os.fsdecode(c)).read_bytes() == b"a"


@pytest.mark.parametrize("size", [0, 100, 50 << 10, PIPELINE_BYTES + 4321])
def test_copy_hands_back_the_head_it_copied(tmp_path: Path, size: int) -> None:
    src = tmp_path / "src"
    expected = big_file(src, size)
    fd = os.open(src, os.O_RDONLY)
    try:
        got = copy_and_hash(
            fd, os.fsencode(tmp_path / "dst"), 0o640, head=lambda first: bytes(first[:4096])
        )
        plain = copy_and_hash(fd, os.fsencode(tmp_path / "dst2"), 0o640)
    finally:
        os.close(fd)
    assert (got.sha256, got.size) == (expected, size)
    assert got.head == src.read_bytes()[:4096]
    assert plain.head == b""


def test_copy_keeps_a_hole_at_the_end(tmp_path: Path) -> None:
    src = tmp_path / "src"
    with open(src, "wb") as f:
        f.write(b"x" * 8192)
        f.truncate(64 << 20)  # the last 64 MiB minus 8 KiB are a hole
    fd = os.open(src, os.O_RDONLY)
    try:
        got = copy_and_hash(fd, os.fsencode(tmp_path / "dst"), 0o640)
    finally:
        os.close(fd)
    dst = tmp_path / "dst"
    assert dst.stat().st_size == 64 << 20 and got.size == 64 << 20
    assert dst.stat().st_blocks * 512 < 1 << 20  # the hole stayed a hole
    assert hash_file(os.fsencode(dst)) == (got.sha256, got.size)


def test_move_noreplace_across_filesystems(tmp_path: Path, tiny_fs: Path) -> None:
    """moves.move_noreplace from a tmpfs to the disk: a regular file (non-UTF-8 name)
    copied with its bytes, mode and mtime, a symlink recreated as a symlink, a FIFO and a
    socket recreated; the sources gone; an existing name never replaced."""
    import socket
    import stat

    dst = tmp_path / "dst"
    dst.mkdir()
    name = b"caf\xe9.jpg"
    src_file = os.path.join(os.fsencode(tiny_fs), name)
    with open(src_file, "wb") as f:
        f.write(b"photo bytes" * 1000)
    os.chmod(src_file, 0o640)
    os.utime(src_file, ns=(1_500_000_000_000_000_000, 1_600_000_000_123_456_789))
    os.symlink("../elsewhere/target", tiny_fs / "link")
    os.mkfifo(tiny_fs / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tiny_fs / "sock"))
    sock.close()
    moved = os.path.join(os.fsencode(dst), name)
    assert move_noreplace(src_file, moved)
    assert not os.path.lexists(src_file)
    st = os.stat(moved)
    assert Path(os.fsdecode(moved)).read_bytes() == b"photo bytes" * 1000
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o640, 1_600_000_000_123_456_789)
    assert move_noreplace(os.fsencode(tiny_fs / "link"), os.fsencode(dst / "link"))
    assert os.readlink(dst / "link") == "../elsewhere/target"
    for kind, test in (("fifo", stat.S_ISFIFO), ("sock", stat.S_ISSOCK)):
        assert move_noreplace(os.fsencode(tiny_fs / kind), os.fsencode(dst / kind))
        assert test(os.lstat(dst / kind).st_mode) and not (tiny_fs / kind).exists()
    (tiny_fs / "again").write_bytes(b"other")
    assert not move_noreplace(os.fsencode(tiny_fs / "again"), moved)
    assert (tiny_fs / "again").read_bytes() == b"other"
    assert Path(os.fsdecode(moved)).read_bytes() == b"photo bytes" * 1000
    assert sorted(os.listdir(os.fsencode(dst))) == sorted([name, b"link", b"fifo", b"sock"])


def test_move_noreplace_on_one_filesystem(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    assert not move_noreplace(os.fsencode(tmp_path / "a"), os.fsencode(tmp_path / "b"))
    assert move_noreplace(os.fsencode(tmp_path / "a"), os.fsencode(tmp_path / "c"))
    assert (tmp_path / "c").read_bytes() == b"a" and (tmp_path / "b").read_bytes() == b"b"
