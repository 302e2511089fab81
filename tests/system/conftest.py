"""The one systemd container and the one install shared by every unit test
(tests/system/test_unit*.py): booted once per session by sdbox.sh, mediasortd installed by
packaging/install.sh from a wheelhouse of this checkout, then pointed at shared folders.
The container is only booted when a test asks for one of these fixtures. And the folder
the tests with the daemon as another user share with a writer (tests/system/users.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.unitbox import (
    INSTALL_DIR,
    REPO,
    SDBOX,
    TEST_DROPIN,
    UNIT,
    WATCHDOG_SEC,
    Box,
    Configured,
    Installed,
    _report,
    run,
    set_toml_keys,
)
from tests.system.users import reachable_dir


@pytest.fixture(scope="session")
def box(pytestconfig: pytest.Config) -> Iterator[Box]:
    if os.geteuid() != 0:
        pytest.skip("needs root: boots a systemd container with systemd-nspawn")
    name = "mediasortd-test-" + os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    env = {**os.environ, "SDBOX_NAME": name, "SDBOX_SKIP_APT": "1"}
    env.pop("SDBOX_STATE", None)
    env.pop("SDBOX_SHARE", None)
    check = run([str(SDBOX), "check"], check=False, env=env)
    if check.returncode != 0:
        pytest.skip(
            "this machine cannot boot a systemd container: "
            + "; ".join((check.stdout + check.stderr).split("\n")).strip("; ")
        )
    state = Path("/var/lib/sdbox") / name
    if state.exists():  # left by a session that was killed: start from a fresh container
        run([str(SDBOX), "down"], env=env, timeout=120)
    t0 = time.monotonic()
    try:
        leader = run([str(SDBOX), "up"], env=env, timeout=120).stdout.strip()
        share = Path(run([str(SDBOX), "share"], env=env).stdout.strip())
        _report(pytestconfig, f"container {name} booted in {time.monotonic() - t0:.2f} s")
        yield Box(name, leader, share, env)
    finally:
        t1 = time.monotonic()
        down = run([str(SDBOX), "down"], check=False, env=env, timeout=120)
        _report(pytestconfig, f"container {name} down in {time.monotonic() - t1:.2f} s")
        leftovers = [
            str(p)
            for p in (
                state,
                Path("/run/systemd/machines") / name,
                Path("/sys/fs/cgroup/systemd") / f"sdbox-{name}",
                Path("/sys/fs/cgroup/unified") / f"sdbox-{name}",
                Path("/sys/fs/cgroup") / f"sdbox-{name}",
            )
            if p.exists()
        ]
        with open("/proc/self/mountinfo") as f:
            leftovers += [line.split()[4] for line in f if f"/sdbox/{name}" in line]
        assert down.returncode == 0 and not leftovers, (
            f"teardown left {leftovers}; sdbox down: {down.stdout}{down.stderr}"
        )


@pytest.fixture(scope="session")
def installed(
    box: Box, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Installed:
    """mediasortd installed by packaging/install.sh, with its defaults, and enabled."""
    t0 = time.monotonic()
    wheelhouse = tmp_path_factory.mktemp("wheelhouse")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--disable-pip-version-check",
            "-w",
            str(wheelhouse),
            str(REPO),
        ],
        timeout=600,
    )
    t1 = time.monotonic()

    dest = box.root / INSTALL_DIR.lstrip("/")
    shutil.copytree(wheelhouse, dest / "wheelhouse")
    shutil.copytree(REPO / "packaging", dest / "src" / "packaging")
    for name in ("config.example.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / "src" / name)
    out = box.sx(
        f"{INSTALL_DIR}/src/packaging/install.sh",
        "--no-apt",
        "--wheelhouse",
        f"{INSTALL_DIR}/wheelhouse",
        timeout=300,
    )
    assert "systemctl enable --now mediasortd" in out.stdout, out.stdout + out.stderr
    t2 = time.monotonic()
    # Enabled, as install.sh tells people to do: an enabled unit is not garbage-collected
    # when it stops, so `systemctl show` still has its Result and exit status.
    box.sx("systemctl", "enable", "--quiet", UNIT)
    _report(
        pytestconfig,
        f"wheelhouse built in {t1 - t0:.2f} s, install.sh in the container took {t2 - t1:.2f} s",
    )
    return Installed(box, t2 - t1)


@pytest.fixture(scope="session")
def configured(installed: Installed) -> Configured:
    """The service pointed at the shared inbox and library by a drop-in (test.conf): its
    own config (the installed one with other [paths] and a short settle time), a short
    watchdog and restart delay, no start rate limit."""
    box = installed.box
    uid = int(box.sx("id", "-u", "mediasortd").stdout)
    inbox, library = box.share / "inbox", box.share / "library"
    for path, mode in ((inbox, 0o2770), (library, 0o2750)):
        path.mkdir(exist_ok=True)
        os.chown(path, uid, uid)
        path.chmod(mode)
    installed_config = (box.root / "etc/mediasortd/config.toml").read_text()
    (box.root / "etc/mediasortd/test.toml").write_text(
        set_toml_keys(
            installed_config,
            {
                # Its own catalog: test_installed_defaults_work files into another library.
                "paths": {
                    "inbox": str(inbox),
                    "library": str(library),
                    "state_dir": "/var/lib/mediasortd/test",
                },
                "ingest": {"settle_seconds": 0.5},
            },
        )
    )
    dropin = box.root / TEST_DROPIN.lstrip("/")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(f"""\
# Written by tests/system/test_unit.py
[Unit]
StartLimitIntervalSec=0

[Service]
ExecStart=
ExecStart=/opt/mediasortd/bin/mediasortd --config /etc/mediasortd/test.toml run
ReadWritePaths=
ReadWritePaths={inbox} {library}
WatchdogSec={WATCHDOG_SEC}s
TimeoutStartSec=30s
TimeoutStopSec=30s
RestartSec=100ms
""")
    box.sx("systemctl", "daemon-reload")
    return Configured(box, inbox, library)


@pytest.fixture
def service(configured: Configured) -> Configured:
    """The configured service, started if it is not running."""
    box = configured.box
    assert (box.root / TEST_DROPIN.lstrip("/")).exists(), "the test drop-in is gone"
    if box.sx("systemctl", "is-active", UNIT, check=False).stdout.strip() != "active":
        box.sx("systemctl", "reset-failed", UNIT, check=False)
        start = box.sx("systemctl", "start", UNIT, check=False, timeout=60)
        assert start.returncode == 0, (
            f"systemctl start failed: {start.stderr}\n"
            + box.sx("systemctl", "status", UNIT, "--no-pager", "-n", "30", check=False).stdout
        )
    return configured


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder both users can reach (pytest's tmp_path is private to root)."""
    d = reachable_dir(
        "mediasortd-safepaths-", "needs root to run the daemon and a writer as two other users"
    )
    yield d
    subprocess.run(["umount", "-l", str(d / "inbox")], check=False, capture_output=True)
    shutil.rmtree(d, ignore_errors=True)
