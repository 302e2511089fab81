"""Timing a child process: wall time, CPU seconds (its own and its waited descendants',
from wait4), peak RSS (the child's VmHWM, and the sampled sum over its process tree),
and fair starting conditions (sync, drop the page cache, or read the source once)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Usage:
    wall: float = 0.0
    cpu: float = 0.0  # user + system seconds, the child and the descendants it waited for
    maxrss_mb: float = 0.0  # the child's own peak RSS (VmHWM, sampled until it exits)
    tree_rss_mb: float = 0.0  # the largest sampled sum of RSS over its live tree
    rc: int | None = None
    notes: list[str] = field(default_factory=list)


def drop_caches() -> bool:
    """sync, then drop the page, dentry and inode caches; False when not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def fsync_probe(directory: Path, n: int = 100) -> dict[str, float]:
    """Latency of fsync after a 4 KiB write, in ms (p50, p90): how busy the disk is now."""
    path = directory / ".fsync-probe"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    times = []
    try:
        for i in range(n):
            os.pwrite(fd, b"x" * 4096, i * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {"p50_ms": round(times[n // 2], 2), "p90_ms": round(times[n * 9 // 10], 2)}


def preread(root: Path) -> None:
    """Read every file under root once (into the page cache), like vmtouch -t."""
    buf = bytearray(1 << 20)
    for top, _, files in os.walk(root):
        for name in files:
            try:
                with open(os.path.join(top, name), "rb", buffering=0) as f:
                    while f.readinto(buf):
                        pass
            except OSError:
                continue


def _stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, cpu seconds incl. waited children, rss KiB) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    # fields[0] is state; ppid=1, utime=11, stime=12, cutime=13, cstime=14, rss=21
    ppid = int(fields[1])
    cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK
    return ppid, cpu, int(fields[21]) * PAGE_KB


def tree(root: int) -> dict[int, tuple[float, int]]:
    """{pid: (cpu s, rss KiB)} for `root` and every live descendant."""
    info: dict[int, tuple[int, float, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                info[int(name)] = st
    out: dict[int, tuple[float, int]] = {}
    if root not in info:
        return out
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in info.items():
        children.setdefault(ppid, []).append(pid)
    stack = [root]
    while stack:
        pid = stack.pop()
        out[pid] = info[pid][1:]
        stack.extend(children.get(pid, []))
    return out


def tree_cpu(root: int) -> float:
    return sum(cpu for cpu, _ in tree(root).values())


def hwm_mb(pid: int) -> float:
    """VmHWM (peak RSS) of one live process, in MB (10^6 bytes)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return 0.0


class TreeSampler:
    """Samples, in a thread, the root process's VmHWM (its own peak RSS; wait4's
    ru_maxrss would also count the forking parent's pages) every 0.1 s, and the summed
    RSS of its whole process tree every 0.5 s."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak_kb = 0
        self.hwm = 0.0
        self.stop_ = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stop_.is_set():
            self.hwm = max(self.hwm, hwm_mb(self.root))
            if n % 5 == 0:
                t = tree(self.root)
                self.peak_kb = max(self.peak_kb, sum(rss for _, rss in t.values()))
            n += 1
            self.stop_.wait(0.1)

    def stop(self) -> tuple[float, float]:
        """(peak RSS of the root, peak summed RSS of the tree), in MB."""
        self.stop_.set()
        self.thread.join()
        return self.hwm, max(self.hwm, self.peak_kb * 1024 / 1e6)


def run(
    argv: Sequence[str] | str,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    shell: bool = False,
    timeout: float = 3600,
) -> Usage:
    """Run a command to completion and measure it (stdout and stderr go to `log`)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=out, shell=shell, stdin=subprocess.DEVNULL
        )
        sampler = TreeSampler(p.pid)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        hwm, tree_mb = sampler.stop()
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    return Usage(
        wall=wall,
        cpu=ru.ru_utime + ru.ru_stime,
        maxrss_mb=hwm,
        tree_rss_mb=tree_mb,
        rc=p.returncode,
    )


def timed_sync() -> float:
    t0 = time.perf_counter()
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - t0


def count_files(root: Path, hidden: bool = False) -> int:
    """Regular files under root (hidden names and folders skipped unless `hidden`)."""
    n = 0
    stack = [str(root)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    if not hidden and e.name.startswith("."):
                        continue
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        n += 1
        except FileNotFoundError:
            continue
    return n


def wait_for(pred, timeout: float, every: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll `pred` until truthy or `timeout` passes; returns its last value."""
    end = time.perf_counter() + timeout
    while True:
        v = pred()
        if v or time.perf_counter() > end:
            return v
        time.sleep(every)
