"""The real unit under the real systemd: packaging/systemd/mediasortd.service, installed by
packaging/install.sh into a systemd-nspawn container that tests/system/sdbox.sh boots.

One container per session. On the host we build a wheelhouse from this checkout (pip's
cache makes rebuilds fast) and copy it, with packaging/ and config.example.toml, into the
container's tmpfs overlay through /proc/<leader>/root: the checkout may be anywhere (under
/root, which the unit's ProtectHome= hides, or under /tmp, which the container does not
share), and the container has no network. Inside, `install.sh --wheelhouse` installs as on
a real machine, and test_installed_defaults_work runs the result as installed. The other
tests use an inbox and library in sdbox's shared folder (a bind mount, so files the host
writes there cause inotify events inside): a drop-in (test.conf) runs the unit with
/etc/mediasortd/test.toml, makes those folders writable, and shortens the watchdog and
the restart delay.

Nothing here sleeps to synchronise: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.system.unitbox import (
    HERE,
    INSTALL_DIR,
    LIBRARY_NAME,
    PROBE_DIR,
    TEST_DROPIN,
    UNIT,
    UNIT_FILE,
    WATCHDOG_SEC,
    Configured,
    Installed,
    _report,
    drop,
    files_under,
    library_files,
    library_name,
    make_jpeg,
    run,
    sha256,
    unit_sandbox_properties,
)

# -- tests -----------------------------------------------------------------------------------


def test_security_exposure_is_at_most_2() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    out = run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT_FILE)]
    ).stdout
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert m, out
    assert float(m.group(1)) <= 2.0, out


@pytest.mark.root
@pytest.mark.slow
def test_sandbox_allows_what_the_daemon_does(installed: Installed) -> None:
    """sandbox_probe.py, run with the unit's sandboxing, does every kind of system call the
    daemon makes (SQLite WAL, inotify, ExifTool, fsync, link, renameat2, fadvise...)."""
    box = installed.box
    probe_dir = box.root / PROBE_DIR.lstrip("/")
    probe_dir.mkdir(exist_ok=True)
    shutil.copy2(HERE / "sandbox_probe.py", probe_dir / "sandbox_probe.py")
    (probe_dir / "sample.jpg").write_bytes(make_jpeg(1, datetime(2021, 3, 4, 5, 6, 7)))
    inbox, library = box.share / "probe-inbox", box.share / "probe-library"
    uid = int(box.sx("id", "-u", "mediasortd").stdout)
    for d in (inbox, library):
        d.mkdir(exist_ok=True)
        os.chown(d, uid, uid)
    props = unit_sandbox_properties(
        UNIT_FILE, {"ReadWritePaths": f"{inbox} {library}", "StateDirectory": "mediasortd-probe"}
    )
    p = box.sx(
        "systemd-run",
        "--wait",
        "--pipe",
        "--quiet",
        "-p",
        "Type=notify",
        *(a for prop in props for a in ("-p", prop)),
        "/opt/mediasortd/bin/python",
        f"{PROBE_DIR}/sandbox_probe.py",
        str(inbox),
        str(library),
        "/var/lib/mediasortd-probe",
        f"{PROBE_DIR}/sample.jpg",
        check=False,
        timeout=60,
    )
    assert p.returncode == 0, f"probe failed under the unit's sandbox:\n{p.stdout}{p.stderr}"
    assert "FAIL" not in p.stdout


@pytest.mark.root
@pytest.mark.slow
def test_installed_defaults_work(installed: Installed) -> None:
    """As install.sh leaves it (config, /srv/media folders, unit without drop-ins), the
    service starts, files a photo, and stops cleanly."""
    box = installed.box
    dropin = box.root / TEST_DROPIN.lstrip("/")
    aside = dropin.with_name("test.conf.off")
    verify = box.sx("systemd-analyze", "verify", f"/etc/systemd/system/{UNIT}")
    assert not (verify.stdout + verify.stderr).strip(), verify.stdout + verify.stderr
    box.sx("systemctl", "stop", UNIT)
    if dropin.exists():
        dropin.rename(aside)
    try:
        box.sx("systemctl", "daemon-reload")
        box.sx("systemctl", "reset-failed", UNIT, check=False)
        start = box.sx("systemctl", "start", UNIT, check=False, timeout=60)
        status = box.sx("systemctl", "status", UNIT, "--no-pager", "-n", "20", check=False).stdout
        assert start.returncode == 0, f"{start.stderr}\n{status}"
        assert box.prop("StatusText").startswith("watching /srv/media/inbox: "), status

        taken = datetime(2018, 2, 3, 4, 5, 6)
        data = make_jpeg(7, taken)
        source = box.root / "srv/media/inbox/defaults.jpg"  # through the container's mounts
        source.write_bytes(data)
        filed = box.root / "srv/media/library" / library_name(taken)
        wait_for(filed.exists, 20, lambda: f"{filed} (library: {files_under(filed.parents[1])})")
        assert sha256(filed) == hashlib.sha256(data).hexdigest()
        wait_for(lambda: not source.exists(), 10, f"{source} to leave the inbox")
        state = box.root / "var/lib/mediasortd"
        assert (state / "catalog.db").is_file()
        assert (state.stat().st_uid, state.stat().st_mode & 0o7777) == (
            int(box.sx("id", "-u", "mediasortd").stdout),
            0o750,
        )
        box.sx("systemctl", "stop", UNIT, timeout=60)
        assert (box.prop("Result"), box.prop("ExecMainStatus")) == ("success", "0")
    finally:
        box.sx("systemctl", "stop", UNIT, check=False)
        if aside.exists():
            aside.rename(dropin)
        box.sx("systemctl", "daemon-reload")


@pytest.mark.root
@pytest.mark.slow
def test_start_returns_after_ready_with_status(configured: Configured) -> None:
    box = configured.box
    box.sx("systemctl", "stop", UNIT)
    start = box.sx("systemctl", "start", UNIT, check=False, timeout=60)
    # Type=notify: `start` returns once READY=1 arrived, so it is "active", not "activating".
    state = box.sx("systemctl", "is-active", UNIT, check=False).stdout.strip()
    status = box.sx("systemctl", "status", UNIT, "--no-pager", "-n", "20", check=False).stdout
    assert (start.returncode, state) == (0, "active"), f"{start.stderr}\n{status}"
    assert f'Status: "watching {configured.inbox}: ' in status, status
    text = box.prop("StatusText")
    assert re.fullmatch(
        rf"watching {re.escape(str(configured.inbox))}: [\d,]+ queued, [\d,]+ filed, "
        r"[\d,]+ duplicates, [\d,]+ rejected, [\d,]+ failed",
        text,
    ), text
    assert box.prop("NotifyAccess") == "main"


@pytest.mark.root
@pytest.mark.slow
def test_watchdog_timestamp_advances(service: Configured) -> None:
    box = service.box
    assert box.prop("WatchdogUSec") == f"{WATCHDOG_SEC}s"
    first = int(box.prop("WatchdogTimestampMonotonic"))
    wait_for(
        lambda: int(box.prop("WatchdogTimestampMonotonic")) > first,
        WATCHDOG_SEC + 2,
        "a WATCHDOG=1 ping (WatchdogTimestampMonotonic to advance)",
    )


@pytest.mark.root
@pytest.mark.slow
def test_dropped_files_are_filed_and_logged(service: Configured) -> None:
    box, inbox, library = service.box, service.inbox, service.library
    taken = [datetime(2019, 5, 17, 10, 30, s) for s in (1, 2, 3)]
    files = {f"filing-{i}.jpg": make_jpeg(1000 + i, t) for i, t in enumerate(taken)}
    drop(inbox, files)
    want = {
        library_name(t): hashlib.sha256(data).hexdigest() for t, data in zip(taken, files.values())
    }
    wait_for(
        lambda: all((library / n).exists() for n in want),
        30,
        lambda: (
            f"{sorted(want)} in the library; it has "
            f"{[str(p.relative_to(library)) for p in files_under(library)][:20]}, the inbox "
            f"{[p.name for p in files_under(inbox)]}"
        ),
    )
    wait_for(lambda: not any((inbox / n).exists() for n in files), 10, "an empty inbox")
    for name, digest in want.items():
        assert LIBRARY_NAME.match(name)
        assert sha256(library / name) == digest, name

    # The story of one file, from journald (which ingests asynchronously: poll).
    name, digest = next(iter(want.items()))
    fields = (
        "MEDIASORTD_EVENT",
        "MEDIASORTD_SOURCE",
        "SOURCE_NAME",
        "MEDIASORTD_DEST",
        "SHA256",
        "MEDIASORTD_JOB_ID",
        "MEDIASORTD_OUTCOME",
        "MEDIASORTD_BATCH",
    )

    def finished() -> list[dict[str, Any]]:
        return [
            e
            for e in box.journal()
            if e.get("MEDIASORTD_EVENT") == "ingest.finished" and e.get("SHA256") == digest
        ]

    entries = wait_for(finished, 10, f"an ingest.finished journal entry with SHA256={digest}")
    entry = entries[-1]
    missing = [f for f in fields if not entry.get(f)]
    assert not missing, f"missing fields {missing} in {json.dumps(entry, indent=1)}"
    assert entry["MEDIASORTD_DEST"] == str(library / name), entry
    assert entry["MEDIASORTD_SOURCE"] == str(inbox / "filing-0.jpg"), entry
    assert entry["SOURCE_NAME"] == "filing-0.jpg", entry
    assert entry["SYSLOG_IDENTIFIER"] == "mediasortd", entry
    assert "JOB_ID" not in entry, "JOB_ID is systemd's own field"
    story = box.journal(f"SHA256={digest}")
    assert story and all(e.get("SHA256") == digest for e in story), story
    assert "ingest.finished" in [e.get("MEDIASORTD_EVENT") for e in story], story


@pytest.mark.root
@pytest.mark.slow
def test_sigkill_mid_batch_restarts_and_replays(
    service: Configured, pytestconfig: pytest.Config
) -> None:
    box, inbox, library = service.box, service.inbox, service.library
    n = 200
    start = datetime(2020, 1, 1, 8, 0, 0)
    files = {f"batch-{i:03d}.jpg": make_jpeg(i, start + timedelta(seconds=i)) for i in range(n)}
    digests = {hashlib.sha256(d).hexdigest() for d in files.values()}
    assert len(digests) == n
    restarts, pid = int(box.prop("NRestarts")), box.prop("MainPID")
    before = len(library_files(library))

    t0 = time.monotonic()
    drop(inbox, files)
    wait_for(lambda: len(library_files(library)) > before, 30, "the first file of the batch filed")
    box.sx("systemctl", "kill", "-s", "KILL", UNIT)
    filed_at_kill = len(library_files(library)) - before
    assert filed_at_kill < n, (
        f"all {n} files were filed before the SIGKILL: the kill did not hit a busy batch"
    )

    wait_for(lambda: int(box.prop("NRestarts")) > restarts, 20, "an automatic restart")
    wait_for(
        lambda: box.prop("ActiveState") == "active" and box.prop("MainPID") not in ("0", pid),
        30,
        "the restarted service to be active with a new MainPID",
    )

    def done() -> bool:
        return not files_under(inbox) and len(library_files(library)) - before >= n

    wait_for(
        done,
        60,
        lambda: (
            f"all {n} files filed (the inbox has {len(files_under(inbox))}, "
            f"the library {len(library_files(library)) - before} of them)"
        ),
    )
    new_pid = box.prop("MainPID")
    replays = wait_for(
        lambda: [
            e
            for e in box.journal()
            if e.get("MEDIASORTD_EVENT") == "replay.started" and e.get("_PID") == new_pid
        ],
        10,
        f"a replay.started journal entry from the restarted daemon (pid {new_pid})",
    )
    _report(
        pytestconfig,
        f"SIGKILL after {filed_at_kill}/{n} files; the restarted daemon replayed "
        f"{replays[0].get('JOBS', '?')} jobs; all filed after {time.monotonic() - t0:.1f} s",
    )
    got: dict[str, list[str]] = {}
    for p in library_files(library):
        got.setdefault(sha256(p), []).append(str(p.relative_to(library)))
    assert not [h for h in digests if h not in got], "files lost"
    twice = {h: got[h] for h in digests if len(got[h]) > 1}
    assert not twice, f"filed more than once: {twice}"
    assert not files_under(library / ".staging"), files_under(library / ".staging")
    elsewhere = [
        p
        for p in files_under(library / ".duplicates") + files_under(library / ".rejected")
        if sha256(p) in digests
    ]
    assert not elsewhere, f"batch files quarantined after the crash: {elsewhere}"


@pytest.mark.root
@pytest.mark.slow
def test_status_json_agrees_with_the_library(service: Configured) -> None:
    """`mediasortd status --json`, as an admin runs it (root) next to the service."""
    box, library = service.box, service.library

    def status() -> dict[str, Any]:
        out = box.sx(
            "/opt/mediasortd/bin/mediasortd",
            "--config",
            "/etc/mediasortd/test.toml",
            "status",
            "--json",
        ).stdout
        return dict(json.loads(out))

    info = wait_for(
        lambda: (
            (st := status())["pending_jobs"] == 0
            and st["library_files"] == len(library_files(library))
            and st
        ),
        20,
        lambda: f"status --json to agree with {len(library_files(library))} files: {status()}",
    )
    assert info["library"] == str(library)
    assert info["outcomes"]["filed"] >= info["library_files"], info


@pytest.mark.root
@pytest.mark.slow
def test_config_error_exits_78_and_is_not_restarted(configured: Configured) -> None:
    box = configured.box
    bad = box.root / "etc/mediasortd/bad.toml"
    bad.write_text("[paths]\ninbox = 'relative/path'\n")
    # Drop-ins apply in the order of their names: after test.conf, which sets ExecStart= too.
    dropin = box.root / "run/systemd/system" / f"{UNIT}.d" / "zz-bad-config.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(
        "[Service]\nExecStart=\nExecStart=/opt/mediasortd/bin/mediasortd "
        "--config /etc/mediasortd/bad.toml run\n"
    )
    try:
        box.sx("systemctl", "stop", UNIT)
        box.sx("systemctl", "daemon-reload")
        assert box.sx("systemctl", "start", UNIT, check=False).returncode != 0
        # "failed", not "activating (auto-restart)": RestartPreventExitStatus=78 held.
        wait_for(lambda: box.prop("ActiveState") == "failed", 10, "the unit to fail")
        assert box.prop("ExecMainStatus") == "78"
        assert box.prop("NRestarts") == "0"  # counts automatic restarts since `start`
    finally:
        dropin.unlink()
        bad.unlink()
        box.sx("systemctl", "daemon-reload")
        box.sx("systemctl", "reset-failed", UNIT, check=False)


@pytest.mark.root
@pytest.mark.slow
def test_stop_is_clean(service: Configured) -> None:
    box = service.box
    box.sx("systemctl", "stop", UNIT, timeout=60)
    assert box.prop("ActiveState") == "inactive"
    assert (box.prop("Result"), box.prop("ExecMainCode"), box.prop("ExecMainStatus")) == (
        "success",
        "1",
        "0",
    )


@pytest.mark.root
@pytest.mark.slow
def test_install_again_without_systemd_keeps_config(installed: Installed) -> None:
    """install.sh is idempotent, and works where systemd is not PID 1 (an image build, a
    chroot, this CI VM): an empty /run/systemd in a private mount namespace looks like that."""
    box = installed.box
    config = box.root / "etc/mediasortd/config.toml"
    before = config.read_text()
    out = box.sx(
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t tmpfs none /run/systemd && exec "$@"',
        "sh",
        f"{INSTALL_DIR}/src/packaging/install.sh",
        "--no-apt",
        "--wheelhouse",
        f"{INSTALL_DIR}/wheelhouse",
        timeout=300,
    )
    assert "keeping the existing /etc/mediasortd/config.toml" in out.stderr, out.stderr
    assert "skipped `systemctl daemon-reload`" in out.stderr, out.stderr
    assert config.read_text() == before
    assert (box.root / "etc/systemd/system" / UNIT).read_text() == UNIT_FILE.read_text()
