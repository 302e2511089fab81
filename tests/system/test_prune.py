"""Inbox folders after their files are filed, with the real `mediasortd run`: a dropped
folder (a card dump) goes, a synced folder (a sync tool's marker in it or above it) and
everything below it stays, and `prune_folders = false` keeps every folder."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from daemon import config
from daemon.inbox.scan import in_synced_folder
from tests.helpers import jpeg_bytes, make_config, tree_hashes, wait_for, write
from tests.system.daemon_harness import Daemon

BASE = datetime(2022, 8, 9, 10, 11, 12)


Start = Callable[..., tuple[config.Config, Daemon]]  # start(prune=True)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    daemons: list[Daemon] = []

    def go(prune: bool = True) -> tuple[config.Config, Daemon]:
        _, path = make_config(tmp_path, settle_seconds=0.3)
        if not prune:
            path.write_text(
                path.read_text().replace("[ingest]\n", "[ingest]\nprune_folders = false\n")
            )
        d = Daemon(tmp_path, path)
        daemons.append(d)
        d.ready()
        return config.load(str(path)), d

    yield go
    for d in daemons:
        d.close()


def filed(cfg: config.Config, n: int) -> Callable[[], bool]:
    return lambda: len(tree_hashes(cfg.library)) == n


def age(*folders: Path) -> None:
    """Make folders look long untouched, so the quiet time no longer holds them."""
    past = time.time() - 3600
    for f in folders:
        os.utime(f, (past, past))


def test_in_synced_folder(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "bob" / "DCIM" / "Camera").mkdir(parents=True)
    (inbox / "card" / "DCIM").mkdir(parents=True)
    (inbox / "bob" / ".stfolder").mkdir()
    b = os.fsencode
    assert in_synced_folder(b(inbox), b(inbox / "bob" / "DCIM" / "Camera"))
    assert not in_synced_folder(b(inbox), b(inbox / "card" / "DCIM"))
    (inbox / ".nomedia").write_bytes(b"")  # the whole inbox is synced
    assert in_synced_folder(b(inbox), b(inbox / "card" / "DCIM"))
    (inbox / ".nomedia").unlink()
    (inbox / "card" / ".stignore").write_text("")
    assert in_synced_folder(b(inbox), b(inbox / "card" / "DCIM"))
    # a marker outside the inbox says nothing about it
    (inbox / "card" / ".stignore").unlink()
    (tmp_path / ".stfolder").mkdir()
    assert not in_synced_folder(b(inbox), b(inbox / "card" / "DCIM"))


def test_dropped_folders_go_synced_folders_stay(start: Start) -> None:
    cfg, _ = start()
    inbox = cfg.inbox
    # Bob's phone syncs into inbox/bob-phone (Syncthing's marker), Carol's into inbox/carol
    # (Android's .nomedia in a sub-folder); both are filed and emptied first.
    (inbox / "bob-phone" / ".stfolder").mkdir(parents=True)
    write(inbox / "bob-phone" / "DCIM" / "Camera" / "b.jpg", jpeg_bytes(BASE, 1))
    write(inbox / "carol" / "Pictures" / ".nomedia", b"")
    write(
        inbox / "carol" / "Pictures" / "Shots" / "c.jpg", jpeg_bytes(BASE + timedelta(seconds=1), 2)
    )
    wait_for(filed(cfg, 2), 20, "bob's and carol's photos filed")
    wait_for(
        lambda: (
            not list((inbox / "bob-phone" / "DCIM" / "Camera").iterdir())
            and not list((inbox / "carol" / "Pictures" / "Shots").iterdir())
        ),
        10,
        "their folders emptied",
    )
    age(
        inbox / "bob-phone" / "DCIM" / "Camera",
        inbox / "bob-phone" / "DCIM",
        inbox / "carol" / "Pictures" / "Shots",
    )
    # Then a card dump: once it is gone, the daemon has judged the folders above too.
    write(inbox / "card" / "DCIM" / "100APPLE" / "d.jpg", jpeg_bytes(BASE + timedelta(2), 3))
    wait_for(filed(cfg, 3), 20, "the card's photo filed")
    wait_for(lambda: not (inbox / "card").exists(), 10, "the card's folders removed")
    assert (inbox / "bob-phone" / "DCIM" / "Camera").is_dir()
    assert (inbox / "carol" / "Pictures" / "Shots").is_dir()
    assert (inbox / "bob-phone" / ".stfolder").is_dir()
    assert (inbox / "carol" / "Pictures" / ".nomedia").is_file()


def test_prune_folders_false_keeps_every_folder(start: Start) -> None:
    cfg, _ = start(prune=False)
    assert cfg.prune_folders is False
    inbox = cfg.inbox
    write(inbox / "card" / "DCIM" / "100APPLE" / "a.jpg", jpeg_bytes(BASE, 11))
    wait_for(filed(cfg, 1), 20, "the card's photo filed")
    wait_for(
        lambda: not list((inbox / "card" / "DCIM" / "100APPLE").iterdir()), 10, "the folder emptied"
    )
    age(inbox / "card" / "DCIM" / "100APPLE", inbox / "card" / "DCIM", inbox / "card")
    # another file filed: the daemon went round its loop (where it prunes) since
    write(inbox / "b.jpg", jpeg_bytes(BASE + timedelta(seconds=5), 12))
    wait_for(filed(cfg, 2), 20, "the second photo filed")
    wait_for(lambda: not (inbox / "b.jpg").exists(), 10, "the second photo gone from the inbox")
    assert (inbox / "card" / "DCIM" / "100APPLE").is_dir()
