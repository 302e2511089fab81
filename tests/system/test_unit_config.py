"""Configs an admin gets wrong, under the real unit: the service fails once with exit 78
and one line in the journal naming the key; systemd does not restart it in a loop, and
nothing is touched in the folders it would have worked in."""

from __future__ import annotations

import pytest

from tests.helpers import wait_for
from tests.system.unitbox import UNIT, Configured

BAD = {
    "latin-1": b'[paths]\ninbox = "/srv/media/b\xe9b\xe9"\nlibrary = "/srv/media/library"\n',
    "state in inbox": b'[paths]\ninbox = "{inbox}"\nlibrary = "{library}"\n'
    b'state_dir = "{inbox}/.state"\n',
    "quarantine in inbox": b'[paths]\ninbox = "{inbox}"\nlibrary = "{library}"\n'
    b'duplicates = "{inbox}/dups"\n',
    "zero workers": b'[paths]\ninbox = "{inbox}"\nlibrary = "{library}"\n[ingest]\nworkers = 0\n',
    "metrics over a photo": b'[paths]\ninbox = "{inbox}"\nlibrary = "{library}"\n'
    b'[metrics]\ntextfile = "{library}/photo.prom"\n',
}
WHY = {
    "latin-1": "not UTF-8",
    "state in inbox": "paths.state_dir:",
    "quarantine in inbox": "paths.duplicates:",
    "zero workers": "ingest.workers:",
    "metrics over a photo": "metrics.textfile:",
}


@pytest.mark.root
@pytest.mark.slow
def test_bad_configs_fail_once_with_78_and_touch_nothing(configured: Configured) -> None:
    box = configured.box
    bad = box.root / "etc/mediasortd/bad.toml"
    dropin = box.root / "run/systemd/system" / f"{UNIT}.d" / "zz-bad-config.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(
        "[Service]\nExecStart=\nExecStart=/opt/mediasortd/bin/mediasortd "
        "--config /etc/mediasortd/bad.toml run\n"
    )
    inbox_before = sorted(p.name for p in configured.inbox.iterdir())
    try:
        box.sx("systemctl", "stop", UNIT)
        box.sx("systemctl", "daemon-reload")
        for name, text in BAD.items():
            bad.write_bytes(
                text.replace(b"{inbox}", bytes(configured.inbox)).replace(
                    b"{library}", bytes(configured.library)
                )
            )
            cursor = (
                box.sx("journalctl", "-n0", "--show-cursor", "--no-pager", check=False)
                .stdout.strip()
                .rpartition("cursor: ")[2]
            )
            assert box.sx("systemctl", "start", UNIT, check=False).returncode != 0, name
            wait_for(lambda: box.prop("ActiveState") == "failed", 10, f"{name}: failed")
            assert box.prop("ExecMainStatus") == "78", name
            assert box.prop("NRestarts") == "0", name
            lines = [e.get("MESSAGE", "") for e in box.journal(f"--after-cursor={cursor}")]
            said = [m for m in lines if isinstance(m, str) and "bad.toml" in m]
            assert said and WHY[name] in said[0], (name, lines)
            assert not any("Traceback" in str(m) for m in lines), (name, lines)
            assert sorted(p.name for p in configured.inbox.iterdir()) == inbox_before, name
            assert not (configured.library / "photo.prom").exists()
            box.sx("systemctl", "reset-failed", UNIT, check=False)
    finally:
        dropin.unlink()
        bad.unlink(missing_ok=True)
        box.sx("systemctl", "daemon-reload")
        box.sx("systemctl", "reset-failed", UNIT, check=False)
