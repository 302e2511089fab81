"""Durable file primitives on real filesystems: large copies through the writer thread,
a filesystem that fills up in the middle of one, and no-overwrite placement."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import fsops
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
    expected = big_file(src, (fsops.PIPELINE_BYTES * 3) + 12345)  # through the writer thread
    fd = os.open(src, os.O_RDONLY)
    try:
        sha, size = fsops.copy_and_hash(fd, os.fsencode(tmp_path / "dst"), 0o640)
    finally:
        os.close(fd)
    assert (sha, size) == (expected, src.stat().st_size)
    assert fsops.hash_file(os.fsencode(tmp_path / "dst")) == (sha, size)


def test_filesystem_full_in_the_middle_of_a_large_copy(tmp_path: Path, tiny_fs: Path) -> None:
    src = tmp_path / "src"
    big_file(src, 20 << 20)  # larger than the filesystem
    fd = os.open(src, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            fsops.copy_and_hash(fd, os.fsencode(tiny_fs / "dst"), 0o640)
    finally:
        os.close(fd)
    assert e.value.errno == errno.ENOSPC


def test_link_and_rename_never_overwrite(tmp_path: Path) -> None:
    a, b, c = (os.fsencode(tmp_path / n) for n in ("a", "b", "c"))
    Path(os.fsdecode(a)).write_bytes(b"a")
    Path(os.fsdecode(b)).write_bytes(b"b")
    assert fsops.link_noreplace(a, b) is False and Path(os.fsdecode(b)).read_bytes() == b"b"
    assert fsops.rename_noreplace(a, b) is False and Path(os.fsdecode(a)).exists()
    assert fsops.rename_noreplace(a, c) is True and Path(os.fsdecode(c)).read_bytes() == b"a"
