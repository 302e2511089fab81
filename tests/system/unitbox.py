"""Shared pieces of the unit tests under the real systemd (tests/system/test_unit*.py):
running commands, the container handle, making JPEGs, reading TOML. The fixtures that boot
the one container and install once per session are in conftest.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SDBOX = HERE / "sdbox.sh"
UNIT_FILE = REPO / "packaging" / "systemd" / "mediasortd.service"
UNIT = "mediasortd.service"
INSTALL_DIR = "/var/tmp/mediasortd-install"  # inside the container: its tmpfs overlay
PROBE_DIR = "/opt/mediasortd-probe"  # not /tmp or /var/tmp: PrivateTmp= hides those
TEST_DROPIN = f"/etc/systemd/system/{UNIT}.d/test.conf"
WATCHDOG_SEC = 3
LIBRARY_NAME = re.compile(r"^\d{4}-\d{2}/\d{4}-\d{2}-\d{2} \d{2}\.\d{2}\.\d{2}\.jpg$")


# -- helpers ---------------------------------------------------------------------------------


def run(
    cmd: list[str], *, check: bool = True, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {p.returncode}\n--- stdout\n{p.stdout}--- stderr\n{p.stderr}"
        )
    return p


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_jpeg(n: int, taken: datetime) -> bytes:
    """A small real JPEG with DateTimeOriginal=taken; the content differs for each n."""
    from PIL import Image

    im = Image.new("RGB", (8, 8), (n % 256, (n // 256) % 256, 99))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = taken.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif, quality=90, comment=f"mediasortd test file {n}")
    return buf.getvalue()


def library_name(taken: datetime) -> str:
    return taken.strftime("%Y-%m/%Y-%m-%d %H.%M.%S.jpg")


def files_under(top: Path, skip_dot_dirs: bool = False) -> list[Path]:
    """The files below top (while the daemon works there: entries may vanish meanwhile)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        names = filenames
        if skip_dot_dirs and dirpath == str(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            names = [f for f in filenames if not f.startswith(".")]  # .mediasortd.library
        found += [Path(dirpath, f) for f in names]
    return found


def library_files(library: Path) -> list[Path]:
    """The filed files: everything except the library's own dot entries (.staging,
    .duplicates, ..., the catalog marker .mediasortd.library)."""
    return files_under(library, skip_dot_dirs=True)


def set_toml_keys(text: str, updates: dict[str, dict[str, Any]]) -> str:
    """Set keys in a TOML document's tables, keeping everything else (and its comments)."""
    todo = {s: dict(kv) for s, kv in updates.items()}
    out: list[str] = []
    section = None

    def flush() -> None:
        for k, v in todo.pop(section or "", {}).items():
            out.append(f"{k} = {json.dumps(v)}")

    for line in text.splitlines():
        kept = line
        if m := re.match(r"\s*\[([^\]]+)\]", line):
            flush()
            section = m.group(1).strip()
        elif (m := re.match(r"\s*([A-Za-z_]+)\s*=", line)) and m.group(1) in todo.get(
            section or "", {}
        ):
            kept = f"{m.group(1)} = {json.dumps(todo[section or ''].pop(m.group(1)))}"
        out.append(kept)
    flush()
    for s, kv in todo.items():
        out += ["", f"[{s}]", *(f"{k} = {json.dumps(v)}" for k, v in kv.items())]
    return "\n".join(out) + "\n"


def unit_sandbox_properties(unit_file: Path, overrides: dict[str, str]) -> list[str]:
    """The unit's [Service] settings that shape the sandbox, as `systemd-run -p` values."""
    skip = {
        "ExecStart",
        "ExecReload",
        "Type",
        "TimeoutStartSec",
        "TimeoutStopSec",
        "WatchdogSec",
        "Restart",
        "RestartSec",
        "RestartPreventExitStatus",
        "Environment",
        "ConfigurationDirectory",
        "ConfigurationDirectoryMode",
        *overrides,
    }
    props, section = [], None
    for raw in unit_file.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key = line.split("=", 1)[0]
            if key not in skip:
                props.append(line)
    return props + [f"{k}={v}" for k, v in overrides.items()]


# -- the container ---------------------------------------------------------------------------


@dataclass
class Box:
    name: str
    leader: str
    share: Path
    env: dict[str, str]

    @property
    def root(self) -> Path:
        """The container's / seen from the host (writes land in its tmpfs overlay)."""
        return Path("/proc") / self.leader / "root"

    def sx(
        self, *cmd: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container."""
        return run([str(SDBOX), "exec", *cmd], check=check, timeout=timeout, env=self.env)

    def prop(self, name: str) -> str:
        return self.sx("systemctl", "show", "-p", name, "--value", UNIT).stdout.strip()

    def journal(self, *match: str) -> list[dict[str, Any]]:
        out = self.sx(
            "journalctl", "-u", UNIT, "-o", "json", "--no-pager", *match, check=False
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _report(config: pytest.Config, line: str) -> None:
    """Show a line (timings) in pytest's output, outside output capturing."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[test_unit] {line}")


@dataclass
class Installed:
    box: Box
    install_seconds: float


@dataclass
class Configured:
    box: Box
    inbox: Path  # the same path on the host and in the container
    library: Path


def drop(inbox: Path, files: dict[str, bytes]) -> None:
    """Drop files into the inbox the way a copy does: written, then closed."""
    for name, data in files.items():
        (inbox / name).write_bytes(data)
