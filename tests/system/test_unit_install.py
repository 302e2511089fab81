"""install.sh and the service's users and groups under the real systemd (the session's
container and install: tests/system/conftest.py).

- a member of the `mediasortd` group (a real second user, through runuser) drops a file and
  runs find/status/history, the daemon running and stopped; a user outside the group
  cannot read the catalog;
- root's import and undo on the service's catalog leave nothing the service cannot use;
- install.sh: --help, online without an index fails fast with the hint, an upgrade swaps
  the program and restarts the running service, --uninstall keeps the data and a
  reinstall picks it up again with the same user ids; bash completion is installed.

Every test leaves the service installed and configured as it found it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.system.unitbox import (
    INSTALL_DIR,
    REPO,
    TEST_DROPIN,
    UNIT,
    Box,
    Configured,
    files_under,
    library_name,
    make_jpeg,
    sha256,
)

CLI = "/usr/local/bin/mediasortd"
TEST_CONFIG = "/etc/mediasortd/test.toml"
TEST_STATE = "/var/lib/mediasortd/test"
MEMBER, OUTSIDER = "household", "stranger"
INSTALL = (f"{INSTALL_DIR}/src/packaging/install.sh", "--no-apt")
WHEELHOUSE = ("--wheelhouse", f"{INSTALL_DIR}/wheelhouse")


def cli(
    box: Box,
    *args: str,
    user: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    cmd = (CLI, "--config", TEST_CONFIG, *args)
    if user is not None:
        cmd = ("runuser", "-u", user, "--", *cmd)
    return box.sx(*cmd, check=check, timeout=60)


def ensure_user(box: Box, name: str, *groups: str) -> None:
    if box.sx("id", name, check=False).returncode != 0:
        box.sx("useradd", "--no-create-home", "--shell", "/bin/sh", name)
    if groups:
        box.sx("usermod", "-aG", ",".join(groups), name)


def uid_of(box: Box, name: str) -> int:
    return int(box.sx("id", "-u", name).stdout)


def owned_by_root(*tops: Path) -> list[str]:
    found = []
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in [".", *dirnames, *filenames]:
                p = Path(dirpath, name)
                if os.lstat(p).st_uid == 0 or os.lstat(p).st_gid == 0:
                    found.append(str(p))
    return found


def in_box(box: Box, path: str) -> Path:
    """A path inside the container, seen from the host (its overlay)."""
    return box.root / path.lstrip("/")


def ensure_active(box: Box) -> None:
    if box.sx("systemctl", "is-active", UNIT, check=False).stdout.strip() != "active":
        box.sx("systemctl", "reset-failed", UNIT, check=False)
        box.sx("systemctl", "start", UNIT, timeout=60)


# -- users and groups ------------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.slow
def test_group_member_drops_files_and_reads_without_root(service: Configured) -> None:
    box, inbox, library = service.box, service.inbox, service.library
    ensure_user(box, MEMBER, "mediasortd")
    ensure_user(box, OUTSIDER)
    taken = datetime(2017, 4, 5, 6, 7, 8)
    data = make_jpeg(4242, taken)
    src = in_box(box, "/var/tmp/household.jpg")
    src.write_bytes(data)
    src.chmod(0o644)
    # The member copies it in as themself (their umask, their uid), like a Samba share would.
    box.sx("runuser", "-u", MEMBER, "--", "cp", "/var/tmp/household.jpg", f"{inbox}/household.jpg")
    filed = library / library_name(taken)
    wait_for(filed.exists, 30, lambda: f"{filed} (inbox: {files_under(inbox)})")
    wait_for(lambda: not (inbox / "household.jpg").exists(), 10, "the inbox to be emptied")
    assert sha256(filed) == hashlib.sha256(data).hexdigest()

    def reads(user: str) -> None:
        found = cli(box, "find", "--json", taken.strftime("%Y-%m-%d"), user=user)
        assert library_name(taken) in found.stdout, found.stdout
        st = json.loads(cli(box, "status", "--json", user=user).stdout)
        assert st["library"] == str(library) and st["outcomes"]["filed"] >= 1, st
        hist = cli(box, "history", "--limit", "5", user=user)
        assert "household.jpg" in hist.stdout, hist.stdout
        got = box.sx("runuser", "-u", user, "--", "sha256sum", str(filed)).stdout.split()[0]
        assert got == hashlib.sha256(data).hexdigest()

    reads(MEMBER)  # while the daemon runs (its connections hold the WAL)
    state = in_box(box, TEST_STATE)
    service_uid = uid_of(box, "mediasortd")
    for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm", "lock"):  # UMask=0027
        st = os.stat(state / name)
        assert (st.st_uid, st.st_mode & 0o777) == (service_uid, 0o640), (name, oct(st.st_mode))
    denied = cli(box, "status", user=OUTSIDER, check=False)
    assert denied.returncode != 0 and "catalog" in denied.stderr, denied.stdout + denied.stderr

    box.sx("systemctl", "stop", UNIT, timeout=60)
    try:
        reads(MEMBER)  # the daemon stopped: the -wal and -shm stay for readers
    finally:
        ensure_active(box)


@pytest.mark.root
@pytest.mark.slow
def test_root_import_and_undo_then_the_service_files_on(service: Configured) -> None:
    """An admin's import and undo as root, on the service's catalog and library: every
    file and folder they make is the service's, and the service files into them after."""
    box, inbox, library = service.box, service.inbox, service.library
    month = datetime(2016, 7, 1, 9, 0, 0)
    shots = {
        f"root-{i}.jpg": (month.replace(day=1 + i), make_jpeg(7100 + i, month.replace(day=1 + i)))
        for i in range(3)
    }
    src = in_box(box, "/var/tmp/root-import")
    src.mkdir(exist_ok=True)
    for name, (_, data) in shots.items():
        (src / name).write_bytes(data)
    box.sx("systemctl", "stop", UNIT, timeout=60)
    try:
        first = cli(box, "import", "/var/tmp/root-import/root-0.jpg")
        batch = re.search(r"import-\d{8}T\d{6}Z-\d+", first.stdout + first.stderr)
        assert batch, first.stdout + first.stderr
        assert (library / library_name(shots["root-0.jpg"][0])).exists()
        cli(box, "undo", batch.group(0))
        assert not (library / library_name(shots["root-0.jpg"][0])).exists()
        cli(box, "import", "/var/tmp/root-import/root-1.jpg")  # a month folder made by root
        assert (library / library_name(shots["root-1.jpg"][0])).exists()
    finally:
        ensure_active(box)
    taken, data = shots["root-2.jpg"]
    (inbox / "root-2.jpg").write_bytes(data)
    filed = library / library_name(taken)
    wait_for(
        filed.exists,
        30,
        lambda: f"{filed}; the journal says {[e.get('MESSAGE') for e in box.journal()[-5:]]}",
    )
    assert sha256(filed) == hashlib.sha256(data).hexdigest()
    wait_for(lambda: not (inbox / "root-2.jpg").exists(), 10, "the inbox to be emptied")
    leftovers = owned_by_root(
        in_box(box, TEST_STATE), library / taken.strftime("%Y-%m"), library / ".staging"
    )
    assert not leftovers, f"root-owned files the service may not be able to use: {leftovers}"
    assert box.prop("ActiveState") == "active"


# -- install.sh ------------------------------------------------------------------------------


def test_install_help_exits_0() -> None:
    p = subprocess.run(
        ["bash", str(REPO / "packaging/install.sh"), "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0, p.stderr
    for word in ("--wheelhouse", "--uninstall", "--purge", "/usr/local/bin/mediasortd"):
        assert word in p.stdout, p.stdout
    bad = subprocess.run(
        ["bash", str(REPO / "packaging/install.sh"), "--bogus"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "unknown argument: --bogus" in bad.stderr


@pytest.mark.root
@pytest.mark.slow
def test_online_install_without_an_index_fails_fast(service: Configured) -> None:
    """The container has no network: install.sh must say so at once, point to
    --wheelhouse, and leave the installed program alone."""
    box = service.box
    before = os.readlink(in_box(box, "/opt/mediasortd"))
    releases = sorted(os.listdir(in_box(box, "/opt/mediasortd.d")))
    t0 = time.monotonic()
    p = box.sx(*INSTALL, check=False, timeout=120)
    took = time.monotonic() - t0
    assert p.returncode != 0, p.stdout + p.stderr
    assert "cannot be reached" in p.stderr and "--wheelhouse" in p.stderr, p.stderr
    assert took < 20, f"took {took:.1f} s"
    assert os.readlink(in_box(box, "/opt/mediasortd")) == before
    assert sorted(os.listdir(in_box(box, "/opt/mediasortd.d"))) == releases
    assert box.prop("ActiveState") == "active"


@pytest.mark.root
@pytest.mark.slow
def test_upgrade_swaps_the_program_and_restarts_the_service(service: Configured) -> None:
    box, inbox, library = service.box, service.inbox, service.library
    old_release = os.readlink(in_box(box, "/opt/mediasortd"))
    old_pid = box.prop("MainPID")
    out = box.sx(*INSTALL, *WHEELHOUSE, timeout=300)
    assert "restarted the running service" in out.stderr, out.stderr
    assert "usermod -aG mediasortd" in out.stdout, out.stdout
    new_release = os.readlink(in_box(box, "/opt/mediasortd"))
    assert new_release != old_release and new_release.startswith("/opt/mediasortd.d/")
    assert not in_box(box, old_release).exists(), "the old release was not removed"
    wait_for(
        lambda: box.prop("ActiveState") == "active" and box.prop("MainPID") not in ("0", old_pid),
        30,
        "the service to run again with a new pid",
    )
    # on PATH, and the shell completes its subcommands
    assert box.sx("mediasortd", "--version").stdout.startswith("mediasortd ")
    offered = box.sx(
        "bash",
        "--norc",
        "-c",
        "source /usr/share/bash-completion/completions/"
        "mediasortd; COMP_WORDS=(mediasortd ''); COMP_CWORD=1; _mediasortd; "
        "printf '%s\\n' \"${COMPREPLY[@]}\"",
    ).stdout.split()
    assert {"run", "import", "status", "find", "history", "undo", "verify", "adopt"} <= set(
        offered
    ), offered
    taken = datetime(2015, 3, 3, 3, 3, 3)
    data = make_jpeg(3303, taken)
    (inbox / "after-upgrade.jpg").write_bytes(data)
    wait_for((library / library_name(taken)).exists, 30, "a file filed after the upgrade")


@pytest.mark.root
@pytest.mark.slow
def test_uninstall_keeps_the_data_and_a_reinstall_picks_it_up(configured: Configured) -> None:
    box = configured.box
    was_active = box.prop("ActiveState") == "active"
    uid, gid = uid_of(box, "mediasortd"), int(box.sx("id", "-g", "mediasortd").stdout)
    kept = [
        in_box(box, p)
        for p in (
            "/etc/mediasortd/config.toml",
            TEST_CONFIG,
            f"{TEST_STATE}/catalog.db",
            TEST_DROPIN,
        )
    ]
    gone = [
        in_box(box, p)
        for p in (
            "/opt/mediasortd",
            "/opt/mediasortd.d",
            "/usr/local/bin/mediasortd",
            "/usr/share/bash-completion/completions/mediasortd",
            f"/etc/systemd/system/{UNIT}",
            "/usr/lib/sysusers.d/mediasortd.conf",
        )
    ]
    assert all(p.exists() or p.is_symlink() for p in kept + gone)
    try:
        out = box.sx(*INSTALL, "--uninstall", timeout=120)
        catalog = hashlib.sha256(kept[2].read_bytes()).hexdigest()
        assert "kept:" in out.stderr, out.stderr
        assert [p for p in gone if p.exists() or p.is_symlink()] == []
        assert all(p.exists() for p in kept)
        assert box.sx("id", "mediasortd", check=False).returncode != 0
        assert box.sx("getent", "group", "mediasortd", check=False).returncode != 0
        assert box.sx("systemctl", "is-enabled", UNIT, check=False).returncode != 0
    finally:
        out = box.sx(*INSTALL, *WHEELHOUSE, timeout=300)
        box.sx("systemctl", "enable", "--quiet", UNIT)
    assert "reusing the ids" in out.stderr, out.stderr
    assert (uid_of(box, "mediasortd"), int(box.sx("id", "-g", "mediasortd").stdout)) == (uid, gid)
    assert hashlib.sha256(kept[2].read_bytes()).hexdigest() == catalog
    ensure_active(box)
    status = json.loads(cli(box, "status", "--json").stdout)
    assert status["outcomes"], status
    if not was_active:
        box.sx("systemctl", "stop", UNIT, timeout=60)
