"""What every contender shares: the run's settings and paths (Context) and one result
row of the table (Row)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import measure

ROOT = Path(__file__).resolve().parents[1]
RECENTLY_DELETED_S = 62  # fs/ext4/ialloc.c: RECENTCY_MIN 60 s (+ a margin); blocks synced
REMOVED_STAMP = ".last-removal"  # in the work dir: when clean() last removed something


def ext4_without_journal(path: Path) -> bool:
    """Is `path` on an ext4 filesystem that has no journal (/sys/fs/ext4/DEV/journal_task
    says <none>)?"""
    best, dev, where = "", "", str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            mount, fstype, source = fields[4], fields[sep + 1], fields[sep + 2]
            if where.startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
                best, dev = mount, os.path.basename(source) if fstype == "ext4" else ""
    try:
        return (
            dev != "" and Path(f"/sys/fs/ext4/{dev}/journal_task").read_text().strip() == "<none>"
        )
    except OSError:
        return False


@dataclass
class Context:
    workdir: Path
    settle: float = 2.0
    workers: int | None = None  # None: the config default (4)
    cache: str = "warm"  # warm: sources in the page cache; cold: caches dropped
    drop: bool = True  # may drop the page cache (cold timings, start-up, status)
    smoke: bool = False
    python: str = sys.executable
    src: Path = ROOT  # where `python -m daemon` runs from: the work tree, or a --rev snapshot
    rev_sha: str = ""  # the commit of that snapshot
    caches_dropped: bool | None = None  # what drop_caches() last managed
    log: Any = print
    quiet_until: float = 0.0  # monotonic time before which no timing starts (see clean)
    waited: float = 0.0  # seconds spent waiting for that, in all
    # outputs are set aside instead of removed (and removed by empty_trash): a series of
    # runs then pays ext4's wait after removals once, not before every timing
    defer_clean: bool = False
    trash_files: int = 0
    load1_at_start: float = 0.0  # the 1-min load average when the last timing started

    def __post_init__(self) -> None:
        """An earlier run's removals count too (a run in pieces is several processes)."""
        try:
            removed = float((self.workdir / REMOVED_STAMP).read_text())
        except (OSError, ValueError):
            return
        self.quiet_until = time.monotonic() + RECENTLY_DELETED_S - (time.time() - removed)

    @property
    def runs(self) -> Path:
        return self.workdir / "runs"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def rundir(self, dataset: str, contender: str) -> Path:
        d = self.runs / f"{dataset}-{contender}"
        self.clean(d)
        d.mkdir(parents=True)
        return d

    def clean(self, path: Path) -> None:
        """Remove a contender's output and let the disk settle (ext4 `discard`).

        On ext4 without a journal (this machine's root filesystem), creating a file
        skips every free inode of its group that was freed less than 60 s ago, reading
        each one's inode block (fs/ext4/ialloc.c, recently_deleted): right after the
        removal of 20,000 files every new file costs thousands of such look-ups, so
        whoever ran after a removal paid for it and whoever ran first did not. The next
        timing therefore starts only once that window has passed (fair_start)."""
        if not path.exists():
            return
        if self.defer_clean:
            trash = self.workdir / "trash"
            trash.mkdir(exist_ok=True)
            self.trash_files += measure.count_files(path, hidden=True)
            path.rename(trash / f"{path.name}-{time.monotonic_ns()}")
            return
        self.remove(path)

    def remove(self, path: Path) -> None:
        """Remove a tree now, and note when (see clean)."""
        if not path.exists():
            return
        shutil.rmtree(path, ignore_errors=True)
        os.sync()
        if ext4_without_journal(self.workdir):
            self.quiet_until = time.monotonic() + RECENTLY_DELETED_S
            with contextlib.suppress(OSError):
                (self.workdir / REMOVED_STAMP).write_text(str(time.time()))

    def empty_trash(self) -> None:
        """Remove what clean() set aside (the next timing then waits as after clean)."""
        trash = self.workdir / "trash"
        if trash.exists():
            self.remove(trash)
        self.trash_files = 0

    def fair_start(self, source: Path | None = None, *, creates: bool = True) -> None:
        """Before each timing: nothing dirty, and the same cache state for everyone.

        warm (default): `source` wholly in the page cache, as files just dropped into an
        inbox are (what is timed is then the work and the durable write, not the read of
        a cold disk); cold: sync and drop the page, dentry and inode caches. Waits first
        until what clean() removed no longer counts as recently deleted (when the timed
        command `creates` files: readers have nothing to wait for)."""
        if (wait := self.quiet_until - time.monotonic()) > 0 and creates and not self.smoke:
            self.log(
                f"bench: waiting {wait:.0f} s: inodes freed by the last clean-up are "
                "skipped by ext4 (no journal) for 60 s when it allocates new ones"
            )
            time.sleep(wait)
            self.waited += wait
        self.load1_at_start = os.getloadavg()[0]
        if (self.cache == "cold" or source is None) and self.drop:
            self.caches_dropped = measure.drop_caches()
            return
        os.sync()
        if source is not None and self.cache == "warm":
            measure.preread(source)

    def config(
        self, rundir: Path, *, state_dir: Path | None = None, inbox: Path | None = None
    ) -> Path:
        """A mediasortd config under `rundir` (same TOML shape as tests/helpers.make_config),
        with the shipped defaults except what the benchmark flags set."""
        lines = [
            "[paths]",
            f'inbox = "{inbox or rundir / "inbox"}"',
            f'library = "{rundir / "library"}"',
            f'state_dir = "{state_dir or rundir / "state"}"',
            "[ingest]",
            f"settle_seconds = {self.settle}",
        ]
        if self.workers is not None:
            lines.append(f"workers = {self.workers}")
        lines += ["[logging]", 'format = "json"', 'level = "info"']
        path = rundir / "config.toml"
        path.write_text("\n".join(lines) + "\n")
        (inbox or rundir / "inbox").mkdir(parents=True, exist_ok=True)
        return path

    def mediasortd(self, cfg: Path, *args: str) -> list[str]:
        """The real command line; run it with cwd=self.src (its `daemon` package wins)."""
        return [self.python, "-m", "daemon", "--config", str(cfg), *args]


def snapshot(rev: str, workdir: Path) -> tuple[Path, str]:
    """The project's files at git revision `rev`, exported under workdir (once per
    commit): benchmark a commit while others edit the work tree."""
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dest = workdir / f"src-{sha[:12]}"
    if not (dest / "daemon" / "__main__.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(
            ["git", "archive", "--format=tar", sha], cwd=ROOT, stdout=subprocess.PIPE
        )
        subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise RuntimeError(f"git archive {sha} failed")
    return dest, sha


def link_tree(src: Path, dst: Path) -> None:
    """A fresh tree of hard links to the data set: the same bytes on disk, new names
    (daemon and photosort move their sources away; the master stays)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)


@dataclass
class Row:
    dataset: str
    contender: str
    kind: str  # floor | reference | ours | peer
    files: int = 0
    bytes: int = 0
    status: str = "ok"  # ok | failed | did not run | skipped
    wall: float | None = None  # seconds, including the final sync where there is one
    sync_s: float | None = None  # the part of `wall` spent in the final `sync`
    cpu: float | None = None
    maxrss_mb: float | None = None  # the contender's largest single process
    tree_rss_mb: float | None = None  # sum over its process tree (ExifTool children...)
    files_out: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    ratio: float | None = None  # wall / floor wall (same set, same run)
    met: str = ""  # "yes" / "no: why" / "" when no target applies
    note: str = ""
    load1: float = field(default_factory=lambda: os.getloadavg()[0])
    others_cpu: float | None = None  # CPU seconds other processes used meanwhile
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def files_per_s(self) -> float | None:
        return self.files / self.wall if self.wall and self.files else None

    @property
    def mb_per_s(self) -> float | None:
        return self.bytes / 1e6 / self.wall if self.wall and self.bytes else None

    @property
    def cpu_per_gb(self) -> float | None:
        return self.cpu / (self.bytes / 1e9) if self.cpu is not None and self.bytes else None

    def take(self, u: measure.Usage, sync_s: float = 0.0) -> Row:
        self.wall = u.wall + sync_s
        self.sync_s = sync_s or None
        self.cpu = u.cpu
        self.maxrss_mb = u.maxrss_mb
        self.tree_rss_mb = u.tree_rss_mb
        if u.rc not in (0, None):
            self.status = "failed"
            self.note = (self.note + f"; exit status {u.rc}").lstrip("; ")
        return self

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(files_per_s=self.files_per_s, mb_per_s=self.mb_per_s, cpu_s_per_gb=self.cpu_per_gb)
        return d


class CpuWatch:
    """System-wide busy CPU seconds over an interval (/proc/stat), to tell how much the
    other tenants of the machine used while a contender ran."""

    def __init__(self) -> None:
        self.t0 = self._busy()

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
        idle = parts[3] + parts[4]  # idle + iowait
        return (sum(parts[:8]) - idle) / measure.CLK_TCK

    def others(self, own_cpu: float | None) -> float:
        return round(self._busy() - self.t0 - (own_cpu or 0.0), 2)


def now() -> float:
    return time.perf_counter()
