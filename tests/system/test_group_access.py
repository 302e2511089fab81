"""The catalog's group, outside systemd: the real `mediasortd` run as three real uids
(setpriv): the service's user, a member of its group, a stranger; and root in between.
(Under the unit and with named users: tests/system/test_unit_install.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import cli_argv, jpeg_bytes, write

SERVICE, MEMBER, STRANGER = 64301, 64302, 64303  # uids no one uses; the group is SERVICE's
WHEN = datetime(2023, 3, 4, 5, 6, 7)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
    ),
]


def as_uid(
    uid: int, cfg: Path, *args: str, groups: tuple[int, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`mediasortd` as `uid` (primary group: itself), with these supplementary groups."""
    ids = ["--reuid", str(uid), "--regid", str(uid)]
    ids += ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(
        ["setpriv", *ids, "--", *cli_argv(cfg, *args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",
        env={**os.environ, "HOME": "/"},
    )


@pytest.fixture
def home() -> Iterator[Path]:
    """Folders like install.sh makes them, outside /tmp/pytest-of-root (0700)."""
    top = Path(tempfile.mkdtemp(prefix="mediasortd-group-"))
    top.chmod(0o755)
    for name, mode in (("inbox", 0o2770), ("library", 0o2750), ("state", 0o750)):
        (top / name).mkdir()
        os.chown(top / name, SERVICE, SERVICE)
        (top / name).chmod(mode)
    (top / "src").mkdir(mode=0o755)
    (top / "config.toml").write_text(
        f'[paths]\ninbox = "{top}/inbox"\nlibrary = "{top}/library"\n'
        f'state_dir = "{top}/state"\n[logging]\nformat = "json"\n'
    )
    try:
        yield top
    finally:
        shutil.rmtree(top)


def test_members_read_the_catalog_strangers_do_not_root_leaves_nothing_behind(home: Path) -> None:
    cfg = home / "config.toml"
    old = os.umask(0o027)  # the unit's UMask=
    try:
        for i in range(3):
            write(home / "src" / f"{i}.jpg", jpeg_bytes(WHEN.replace(month=3 + i), i))
            (home / "src" / f"{i}.jpg").chmod(0o644)
    finally:
        os.umask(old)
    r = as_uid(SERVICE, cfg, "import", str(home / "src" / "0.jpg"))
    assert r.returncode == 0, r.stderr
    for f in ("catalog.db", "catalog.db-wal", "catalog.db-shm"):
        st = os.stat(home / "state" / f)
        assert (st.st_uid, st.st_mode & 0o777) == (SERVICE, 0o640), (f, oct(st.st_mode))
    lock = os.stat(home / "state" / "lock")
    assert lock.st_uid == SERVICE and lock.st_mode & 0o040 and not lock.st_mode & 0o022

    status = as_uid(MEMBER, cfg, "status", "--json", groups=(SERVICE,))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["outcomes"]["filed"] == 1
    found = as_uid(MEMBER, cfg, "find", "2023-03", groups=(SERVICE,))
    assert found.returncode == 0 and "2023-03-04 05.06.07.jpg" in found.stdout, found
    assert as_uid(MEMBER, cfg, "history", groups=(SERVICE,)).returncode == 0
    denied = as_uid(STRANGER, cfg, "status")
    assert denied.returncode != 0 and "catalog" in denied.stderr, denied

    # root imports into a new month folder, then the service's user goes on there
    r = subprocess.run(
        cli_argv(cfg, "import", str(home / "src" / "1.jpg")),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    rooted = [
        str(p)
        for p in [
            home / "state",
            home / "library",
            *(home / "state").rglob("*"),
            *(home / "library").rglob("*"),
        ]
        if p.lstat().st_uid == 0 or p.lstat().st_gid == 0
    ]
    assert not rooted, rooted
    assert (home / "library" / "2023-04").stat().st_mode & 0o2000, "the setgid bit was lost"
    r = as_uid(SERVICE, cfg, "import", str(home / "src" / "2.jpg"))
    assert r.returncode == 0, r.stderr
    status = as_uid(MEMBER, cfg, "status", "--json", groups=(SERVICE,))
    assert json.loads(status.stdout)["outcomes"]["filed"] == 3, status.stdout
