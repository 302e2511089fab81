"""Reload, writable paths, the state lock and journald fields under the real systemd
(the shared container and install of conftest.py): `systemctl reload` and SIGHUP keep the
service running with its PID and apply the new config; a bad config keeps the old one and
says so; a folder outside the writable paths refuses the start in one line until
`mediasortd unit-paths --write`; `status` sees the daemon on the container's overlayfs;
removing the lock file lets no second writer in; journalctl queries by SOURCE_NAME,
SHA256, batch and outcome.

Every test puts the shared service's config back (test.toml) and removes its drop-ins."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.system.unitbox import (
    UNIT,
    Box,
    Configured,
    drop,
    library_name,
    make_jpeg,
    set_toml_keys,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

MEDIASORTD = "/opt/mediasortd/bin/mediasortd"
TEST_TOML = "/etc/mediasortd/test.toml"
STATE = "/var/lib/mediasortd/test"


def cli(box: Box, *args: str, check: bool = True) -> Any:
    """The CLI as the service's user, next to the running service."""
    return box.sx(
        "runuser", "-u", "mediasortd", "--", MEDIASORTD, "--config", TEST_TOML, *args, check=check
    )


def main_pid(box: Box) -> int:
    return int(box.prop("MainPID"))


def reload(box: Box) -> None:
    """`systemctl reload`, then wait for the daemon's answer in the journal: the reload job
    ends when ExecReload's kill does (systemd 252 has no Type=notify-reload), not when the
    daemon has read the config."""
    pid = str(main_pid(box))

    def answers() -> int:
        return len(
            [
                e
                for e in box.journal(
                    "MEDIASORTD_EVENT=daemon.reloaded", "MEDIASORTD_EVENT=daemon.reload_failed"
                )
                if e.get("_PID") == pid
            ]
        )

    before = answers()
    box.sx("systemctl", "reload", UNIT)
    wait_for(lambda: answers() > before, 15, "the daemon's answer to the reload")
    wait_for(lambda: not box.prop("StatusText").startswith("reloading"), 10, "READY=1")


@pytest.fixture
def config(service: Configured) -> Iterator[Path]:
    """The service's config file (host path); put back and reloaded after the test."""
    path = service.box.root / TEST_TOML.lstrip("/")
    original = path.read_text()
    yield path
    path.write_text(original)
    box = service.box
    if box.sx("systemctl", "is-active", UNIT, check=False).stdout.strip() == "active":
        reload(box)
        assert "reload failed" not in box.prop("StatusText"), box.prop("StatusText")


def test_reload_keeps_the_pid_and_the_next_file_takes_the_new_layout(
    service: Configured, config: Path
) -> None:
    box, inbox, library = service.box, service.inbox, service.library
    pid = main_pid(box)
    config.write_text(
        set_toml_keys(
            config.read_text(),
            {"ingest": {"layout": "reload/{year}{month}{day}-{hour}{minute}{second}{ext}"}},
        )
    )
    reload(box)
    assert main_pid(box) == pid
    assert box.prop("ActiveState") == "active"
    taken = datetime(2018, 3, 4, 5, 6, 7)
    drop(inbox, {"reload-layout.jpg": make_jpeg(4100, taken)})
    wait_for(
        (library / "reload" / "20180304-050607.jpg").exists,
        20,
        "the next file under the new layout",
    )
    assert main_pid(box) == pid
    reloaded = [
        e for e in box.journal("MEDIASORTD_EVENT=daemon.reloaded") if e.get("_PID") == str(pid)
    ]
    assert reloaded and "layout" in reloaded[-1]["MEDIASORTD_CHANGED"], reloaded


def test_sighup_keeps_it_running(service: Configured, config: Path) -> None:
    box = service.box
    pid = main_pid(box)
    before = len(box.journal("MEDIASORTD_EVENT=daemon.reloaded"))
    box.sx("systemctl", "kill", "-s", "HUP", UNIT)
    wait_for(
        lambda: len(box.journal("MEDIASORTD_EVENT=daemon.reloaded")) > before,
        15,
        "daemon.reloaded in the journal",
    )
    assert box.prop("ActiveState") == "active" and main_pid(box) == pid
    drop(service.inbox, {"after-hup.jpg": make_jpeg(4101, datetime(2018, 3, 5, 1, 2, 3))})
    wait_for(
        (service.library / library_name(datetime(2018, 3, 5, 1, 2, 3))).exists,
        20,
        "a file filed after SIGHUP",
    )


def test_a_bad_config_keeps_it_running_and_is_reported(service: Configured, config: Path) -> None:
    box = service.box
    pid = main_pid(box)
    config.write_text(set_toml_keys(config.read_text(), {"ingest": {"workers": 0}}))
    reload(box)
    status = box.prop("StatusText")
    assert "config reload failed" in status and "ingest.workers" in status, status
    assert box.prop("ActiveState") == "active" and main_pid(box) == pid
    errors = [
        e for e in box.journal("MEDIASORTD_EVENT=daemon.reload_failed") if e.get("_PID") == str(pid)
    ]
    assert errors and errors[-1]["PRIORITY"] == "3", errors
    out = cli(box, "status", check=False)
    assert out.returncode == 78, out.stderr
    # status on the container's overlayfs sees the running daemon, and the failed reload
    assert f"the daemon is running (pid {pid})" in out.stdout, out.stdout
    assert re.search(r"CONFIG .*reload failed.*ingest\.workers", out.stdout), out.stdout
    drop(service.inbox, {"bad-config.jpg": make_jpeg(4102, datetime(2018, 3, 6, 1, 2, 3))})
    wait_for(
        (service.library / library_name(datetime(2018, 3, 6, 1, 2, 3))).exists,
        20,
        "a file filed on the previous config",
    )


def test_status_sees_the_daemon_on_overlayfs_and_the_lock_file_cannot_be_removed(
    service: Configured,
) -> None:
    box = service.box
    fs = box.sx("stat", "-f", "-c", "%T", STATE).stdout.strip()
    assert fs == "overlayfs", fs  # where /proc/locks gave a device number status missed
    pid = main_pid(box)
    info = json.loads(cli(box, "status", "--json").stdout)
    assert info["now"]["writer"] == {"pid": pid, "command": "run"}, (fs, info["now"])
    box.sx("rm", f"{STATE}/lock")
    src = "/var/tmp/second-writer"
    box.sx("mkdir", "-p", src)
    (box.root / src.lstrip("/") / "twice.jpg").write_bytes(
        make_jpeg(4103, datetime(2018, 3, 7, 1, 2, 3))
    )
    box.sx("chown", "-R", "mediasortd", src)
    second = cli(box, "import", src, check=False)
    assert second.returncode == 75 and "another mediasortd" in second.stderr, second.stderr
    run = box.sx(
        "runuser",
        "-u",
        "mediasortd",
        "--",
        MEDIASORTD,
        "--config",
        TEST_TOML,
        "run",
        check=False,
        timeout=60,
    )
    assert run.returncode == 75, run.stderr
    wait_for(
        lambda: (
            json.loads(cli(box, "status", "--json").stdout)["now"]["writer"]
            == {"pid": pid, "command": "run"}
        ),
        10,
        "the lock file made again",
    )
    assert any(
        e.get("_PID") == str(pid) for e in box.journal("MEDIASORTD_EVENT=daemon.lock_remade")
    ), fs
    assert not (service.library / library_name(datetime(2018, 3, 7, 1, 2, 3))).exists()
    box.sx("rm", "-rf", src)


def test_journal_queries_by_name_hash_batch_and_outcome(service: Configured) -> None:
    box = service.box
    taken = datetime(2018, 3, 8, 1, 2, 3)
    drop(service.inbox, {"IMG_QUERY.jpg": make_jpeg(4104, taken), "notes-query.txt": b"hi\n"})

    def by(*match: str) -> list[dict[str, Any]]:
        return [e for e in box.journal(*match) if e.get("MEDIASORTD_EVENT") == "ingest.finished"]

    story = wait_for(lambda: by("SOURCE_NAME=IMG_QUERY.jpg"), 20, "the story by SOURCE_NAME")
    entry = story[-1]
    assert entry["MEDIASORTD_OUTCOME"] == "filed" and "JOB_ID" not in entry, entry
    assert by(f"SHA256={entry['SHA256']}")
    assert entry in by(f"MEDIASORTD_BATCH={entry['MEDIASORTD_BATCH']}")
    rejected = wait_for(
        lambda: by("MEDIASORTD_OUTCOME=rejected", "SOURCE_NAME=notes-query.txt"),
        20,
        "the reject by outcome",
    )
    assert rejected[-1]["PRIORITY"] == "4", rejected
    # systemd's own JOB_ID field is left to systemd's job messages
    assert not [
        e for e in box.journal("JOB_ID=" + entry["MEDIASORTD_JOB_ID"]) if e.get("MEDIASORTD_EVENT")
    ]


def test_an_inbox_outside_the_writable_paths_refuses_to_start_until_unit_paths(
    service: Configured,
) -> None:
    """The config names an inbox the unit's sandbox keeps read-only: the start fails with
    78 and one line naming it; `mediasortd unit-paths --write` makes it work."""
    box = service.box
    elsewhere = box.share / "elsewhere-inbox"
    config = box.root / "etc/mediasortd/elsewhere.toml"
    config.write_text(
        set_toml_keys(
            (box.root / TEST_TOML.lstrip("/")).read_text(), {"paths": {"inbox": str(elsewhere)}}
        )
    )
    dropins = box.root / "run/systemd/system" / f"{UNIT}.d"
    dropins.mkdir(parents=True, exist_ok=True)
    start = dropins / "zz-elsewhere.conf"
    paths = dropins / "zz-paths.conf"
    start.write_text(
        "[Service]\nExecStart=\nExecStart=/opt/mediasortd/bin/mediasortd "
        "--config /etc/mediasortd/elsewhere.toml run\n"
    )
    uid = int(box.sx("id", "-u", "mediasortd").stdout)
    try:
        box.sx("systemctl", "daemon-reload")
        # 1. not there, and not writable: exit 78, not 226/NAMESPACE, and not restarted
        assert box.sx("systemctl", "restart", UNIT, check=False).returncode != 0
        wait_for(lambda: box.prop("ActiveState") == "failed", 15, "the unit to fail")
        assert box.prop("ExecMainStatus") == "78"
        lines = [
            e["MESSAGE"]
            for e in box.journal("-n", "30")
            if str(elsewhere) in str(e.get("MESSAGE", ""))
        ]
        assert any("ReadWritePaths=" in m and "unit-paths" in m for m in lines), lines
        # 2. it exists now, still outside the writable paths: the same
        elsewhere.mkdir()
        os.chown(elsewhere, uid, uid)
        box.sx("systemctl", "reset-failed", UNIT)
        assert box.sx("systemctl", "start", UNIT, check=False).returncode != 0
        assert box.prop("ExecMainStatus") == "78"
        # 3. the drop-in from the config: it starts and files from there
        out = box.sx(
            MEDIASORTD,
            "--config",
            "/etc/mediasortd/elsewhere.toml",
            "unit-paths",
            "--write",
            str(paths).replace(str(box.root), "", 1),
        )
        assert "wrote" in out.stdout, out.stdout
        assert f"-{elsewhere}" in paths.read_text()
        box.sx("systemctl", "daemon-reload")
        box.sx("systemctl", "reset-failed", UNIT)
        box.sx("systemctl", "start", UNIT, timeout=60)
        taken = datetime(2018, 3, 9, 1, 2, 3)
        drop(elsewhere, {"from-elsewhere.jpg": make_jpeg(4105, taken)})
        wait_for(
            lambda: (
                (service.library / library_name(taken)).exists()
                and not (elsewhere / "from-elsewhere.jpg").exists()
            ),
            20,
            "the file filed from the inbox outside, and removed from it",
        )
    finally:
        start.unlink(missing_ok=True)
        paths.unlink(missing_ok=True)
        config.unlink(missing_ok=True)
        box.sx("systemctl", "stop", UNIT, check=False)
        box.sx("systemctl", "daemon-reload")
        box.sx("systemctl", "reset-failed", UNIT, check=False)
        box.sx("systemctl", "start", UNIT, check=False, timeout=60)
        for p in elsewhere.glob("*") if elsewhere.exists() else []:
            p.unlink()
        if elsewhere.exists():
            elsewhere.rmdir()


def test_a_source_left_in_place_is_a_warning_and_a_status_problem(service: Configured) -> None:
    """A file the service can read but not remove (a root-owned folder in the inbox): it
    is filed, and the source left behind is a warning and its own line in `status`."""
    box = service.box
    folder = service.inbox / "root-owned"
    folder.mkdir()
    taken = datetime(2018, 3, 10, 1, 2, 3)
    try:
        (folder / "stuck.jpg").write_bytes(make_jpeg(4106, taken))
        folder.chmod(0o755)  # root's: the service's user cannot remove entries here
        wait_for((service.library / library_name(taken)).exists, 20, "stuck.jpg filed")
        entries = wait_for(
            lambda: [
                e
                for e in box.journal("SOURCE_NAME=stuck.jpg")
                if e.get("MEDIASORTD_EVENT") == "ingest.finished"
            ],
            10,
            "its journal entry",
        )
        assert entries[-1]["PRIORITY"] == "4", entries[-1]
        assert "left in place" in entries[-1]["MEDIASORTD_ERROR"], entries[-1]
        out = cli(box, "status").stdout
        assert re.search(r"LEFT +1 file\(s\) filed but left in the inbox: cannot remove", out), out
        assert (folder / "stuck.jpg").exists()
    finally:
        for p in folder.glob("*"):
            p.unlink()
        folder.rmdir()


def test_two_inboxes_under_the_unit(service: Configured, config: Path) -> None:
    """inbox = [a, b]: a reload to an inbox outside the writable paths keeps the old set
    and says why; with `unit-paths --write` and a restart both are watched and shown."""
    box = service.box
    second = box.share / "inbox-2"
    second.mkdir(exist_ok=True)
    uid = int(box.sx("id", "-u", "mediasortd").stdout)
    os.chown(second, uid, uid)
    paths = box.root / "run/systemd/system" / f"{UNIT}.d" / "zz-paths.conf"
    paths.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        set_toml_keys(config.read_text(), {"paths": {"inbox": [str(service.inbox), str(second)]}})
    )
    try:
        reload(box)
        status = box.prop("StatusText")
        assert "config reload failed" in status and f"{second}: the inbox" in status, status
        box.sx(
            MEDIASORTD,
            "--config",
            TEST_TOML,
            "unit-paths",
            "--write",
            str(paths).replace(str(box.root), "", 1),
        )
        box.sx("systemctl", "daemon-reload")
        box.sx("systemctl", "restart", UNIT, timeout=60)
        assert box.prop("StatusText").startswith(f"watching {service.inbox}, {second}:")
        taken = datetime(2018, 3, 11, 1, 2, 3)
        drop(second, {"second.jpg": make_jpeg(4107, taken)})
        wait_for(
            (service.library / library_name(taken)).exists, 20, "a file from the second inbox filed"
        )
        info = json.loads(cli(box, "status", "--json").stdout)
        assert info["inboxes"] == [str(service.inbox), str(second)], info["inboxes"]
    finally:
        config.write_text(
            set_toml_keys(config.read_text(), {"paths": {"inbox": str(service.inbox)}})
        )
        paths.unlink(missing_ok=True)
        box.sx("systemctl", "daemon-reload")
        box.sx("systemctl", "restart", UNIT, timeout=60)
        for p in second.glob("*"):
            p.unlink()
        second.rmdir()


def test_a_missing_folder_is_named_not_226_namespace(service: Configured) -> None:
    """The unit's ReadWritePaths= entries have a `-` prefix: a folder that does not exist
    does not fail the start with 226/NAMESPACE; the self-check names it (exit 78)."""
    box = service.box
    unit = (box.root / "etc/systemd/system" / UNIT).read_text()
    assert "\nReadWritePaths=-/srv/media/inbox -/srv/media/library\n" in unit
    missing = "/srv/media/missing-inbox"
    config = box.root / "etc/mediasortd/missing.toml"
    config.write_text(
        set_toml_keys(
            (box.root / TEST_TOML.lstrip("/")).read_text(),
            {"paths": {"inbox": missing, "state_dir": "/var/lib/mediasortd/missing"}},
        )
    )
    dropin = box.root / "run/systemd/system" / f"{UNIT}.d" / "zz-missing.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(
        "[Service]\nExecStart=\nExecStart=/opt/mediasortd/bin/mediasortd "
        "--config /etc/mediasortd/missing.toml run\n"
        f"ReadWritePaths=\nReadWritePaths=-{missing} -{service.library}\n"
    )
    try:
        box.sx("systemctl", "stop", UNIT)
        box.sx("systemctl", "daemon-reload")
        assert box.sx("systemctl", "start", UNIT, check=False).returncode != 0
        wait_for(lambda: box.prop("ActiveState") == "failed", 15, "the unit to fail")
        assert box.prop("ExecMainStatus") == "78", box.prop("ExecMainStatus")
        lines = [
            e["MESSAGE"]
            for e in box.journal("-n", "30")
            if f"{missing}: the inbox" in str(e.get("MESSAGE", ""))
        ]
        assert lines and "cannot be created" in lines[-1], lines
    finally:
        dropin.unlink(missing_ok=True)
        config.unlink(missing_ok=True)
        box.sx("systemctl", "daemon-reload")
        box.sx("systemctl", "reset-failed", UNIT, check=False)
        box.sx("systemctl", "start", UNIT, check=False, timeout=60)
