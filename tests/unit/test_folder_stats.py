"""paths.FolderStats: the lstat pass keeps one folder open for a run of paths, resolved
beneath the inbox exactly as stat_beneath does (no link followed on the way)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from daemon.files.paths import FolderStats, stat_beneath


def test_same_answers_as_stat_beneath_and_links_refused(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "a").mkdir(parents=True)
    (inbox / "b").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    for d in (inbox / "a", inbox / "b", outside):
        (d / "x.jpg").write_bytes(d.name.encode())
    (inbox / "link").symlink_to(outside)
    root = os.fsencode(inbox)
    folders = FolderStats()
    try:
        for rel in ("a/x.jpg", "a/x.jpg", "b/x.jpg", "a/x.jpg"):
            path = os.fsencode(inbox / rel)
            assert folders.stat(root, path) == stat_beneath(root, path)
        with pytest.raises(OSError) as e:  # a link on the way, after a run of a/
            folders.stat(root, os.fsencode(inbox / "link" / "x.jpg"))
        assert e.value.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV)
        assert folders.fd == -1  # nothing kept from the refused one
        # the folder swapped for a link between two runs: resolved again, refused
        os.rename(inbox / "b", tmp_path / "b-away")
        (inbox / "b").symlink_to(outside)
        folders.stat(root, os.fsencode(inbox / "a" / "x.jpg"))
        with pytest.raises(OSError):
            folders.stat(root, os.fsencode(inbox / "b" / "x.jpg"))
    finally:
        folders.close()
    assert folders.fd == -1
