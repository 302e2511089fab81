"""The test side of powerfs: mount it in a child process, arm a cut, cut the power, mount
again on what was durable.

A power cut takes everything down at once: the programs using the mount (SIGKILL to their
process groups), then the filesystem server, whose memory is the page cache that the cut
erases; the dead mount is unmounted, and `mount()` starts a new server on the store.

The mount names a loop device as its source (fuseblk), so st_dev is that device's
number and stays the same across cuts, as a disk partition's does across reboots (a
plain FUSE mount gets an anonymous device number, which other mounts on the machine
can take in between). `mount(new_device=True)` changes it on purpose.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

from tests.helpers import ROOT, wait_for

CTL_NAME = ".powerfs"  # powerfs.CTL_NAME, without importing pyfuse3 here


def unavailable() -> str | None:
    """Why powerfs cannot run here, or None."""
    if os.geteuid() != 0:
        return "powerfs needs root (it attaches a loop device and mounts fuseblk)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse (FUSE is not available in this kernel or container)"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (Debian package fuse3)"
    if shutil.which("losetup") is None or not os.path.exists("/dev/loop-control"):
        return "no loop devices (losetup, /dev/loop-control): needed for a stable st_dev"
    if importlib.util.find_spec("pyfuse3") is None:
        return "pyfuse3 is not installed (pip install pyfuse3; needs libfuse3-dev, pkg-config)"
    return None


class PowerFS:
    """One powerfs filesystem: `root/store` (durable state), `root/ctl` (replies, the
    `fired` marker, the server's log) and the mountpoint `root/mnt`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = root / "store"
        self.ctl = root / "ctl"
        self.mnt = root / "mnt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: BinaryIO | None = None
        self.cuts = 0
        self.devs: list[int] = []  # st_dev of each mount
        self.devices: list[str] = []  # loop devices attached (the last one is used)
        self.frozen = False  # frozen by freeze(): no request is answered any more

    # -- mounting -----------------------------------------------------------------------

    def mount(self, timeout: float = 30, *, new_device: bool = False) -> None:
        assert self.proc is None, "already mounted"
        for d in (self.store, self.ctl, self.mnt):
            d.mkdir(parents=True, exist_ok=True)
        if new_device or not self.devices:
            self._attach()
        (self.ctl / "fired").unlink(missing_ok=True)
        self.log = open(self.ctl / "server.log", "ab")  # noqa: SIM115 - the server's, until _reap
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.faults.powerfs",
                "--store",
                str(self.store),
                "--ctl",
                str(self.ctl),
                "--device",
                self.devices[-1],
                str(self.mnt),
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        proc = self.proc
        wait_for(
            lambda: os.path.ismount(self.mnt) or proc.poll() is not None,
            timeout,
            "powerfs to mount",
        )
        if proc.poll() is not None:
            self._reap()
            raise AssertionError(f"powerfs did not start:\n{self.server_log()}")
        self.devs.append(os.stat(self.mnt).st_dev)

    def unmount(self, timeout: float = 30) -> None:
        """A clean unmount (no cut): the server exits by itself."""
        if self.proc is None:
            return
        subprocess.run(["fusermount3", "-u", str(self.mnt)], check=True, capture_output=True)
        try:
            self.proc.wait(timeout)
        finally:
            self._reap()

    def close(self) -> None:
        """Teardown that works whatever state the test left: kill, unmount, detach."""
        if self.proc is not None:
            self._kill_server()
        try:
            self._unmount_dead()
        finally:
            for dev in self.devices:
                subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
            self.devices.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- control ------------------------------------------------------------------------

    def command(self, line: str) -> dict[str, Any]:
        fd = os.open(self.mnt / CTL_NAME, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        reply: dict[str, Any] = json.loads((self.ctl / "reply.json").read_text())
        assert "error" not in reply, reply
        return reply

    def sync(self) -> dict[str, Any]:
        """Make everything durable (like `sync` with a filesystem that honours it)."""
        return self.command("sync")

    def arm(self, n: int, leak: float = 0.0, seed: int = 0) -> dict[str, Any]:
        """Freeze before the n-th next mutating request; leak unsynced changes to the
        durable state with probability `leak` (seeded) meanwhile."""
        return self.command(f"arm {n} {leak} {seed}")

    def freeze(self) -> None:
        """Stop answering now: every request from here on sleeps until the cut."""
        self.command("freeze")
        self.frozen = True

    def stats(self) -> dict[str, Any]:
        return self.command("stats")

    def fired(self) -> str | None:
        """The request the armed cut froze on, once it has."""
        try:
            return (self.ctl / "fired").read_text().strip()
        except FileNotFoundError:
            return None

    # -- the power cut ------------------------------------------------------------------

    def cut(self, *procs: subprocess.Popen[Any], timeout: float = 30) -> None:
        """Cut the power: nothing more reaches the store, `procs` die (with their process
        groups: start them with start_new_session=True), then the server (and its
        memory) does; the mount is gone. `mount()` brings up what was durable."""
        assert self.proc is not None, "not mounted"
        if not self.frozen and not self.fired():
            self.command("freeze")
        for p in procs:
            if p.poll() is None:
                try:  # the whole group (ExifTool too) when p leads one, else p alone
                    if os.getpgid(p.pid) == p.pid:
                        os.killpg(p.pid, signal.SIGKILL)
                    else:
                        p.kill()
                except ProcessLookupError:
                    pass
        # Requests the frozen server holds are not killable: the processes die when the
        # server does (the kernel then aborts the connection).
        self._kill_server()
        for p in procs:
            p.wait(timeout)
        self._unmount_dead(timeout)
        self.cuts += 1

    def server_log(self) -> str:
        try:
            return (self.ctl / "server.log").read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    # -- internals ----------------------------------------------------------------------

    def _kill_server(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._reap()

    def _reap(self) -> None:
        self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def _attach(self) -> None:
        disk = self.root / f"disk-{len(self.devices)}"
        with open(disk, "wb") as f:
            f.truncate(1 << 20)  # never read: fuseblk only claims the device
        out = subprocess.run(
            ["losetup", "--find", "--show", str(disk)], check=True, capture_output=True, text=True
        )
        self.devices.append(out.stdout.strip())

    def _unmount_dead(self, timeout: float = 30) -> None:
        """Unmount a mount whose server is gone, for real (not lazily): a fuseblk
        superblock left behind would be reused by the next mount of the same device.
        Busy until the last process that used it has died."""

        def unmounted() -> bool:
            if not (os.path.ismount(self.mnt) or _dead_mount(self.mnt)):
                return True
            subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True, check=False)
            return False

        wait_for(unmounted, timeout, f"{self.mnt} to unmount")


def _dead_mount(path: Path) -> bool:
    """A FUSE mount whose server died answers ENOTCONN."""
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == 107  # ENOTCONN
    return False
