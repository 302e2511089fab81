"""Peers a user could pick instead, each run on the same files, followed by `sync` (they
do not fsync; with the sync they are as durable as the floor at the end):

- ExifTool's own renaming (Debian's libimage-exiftool-perl);
- sortphotos and photosort from PyPI, installed at run time into their own venvs (on
  Debian's python3) under {workdir}/peers, which is kept between runs.

A peer that does not install or run on this Python gets a row that says so and why.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import measure
from .context import Context, CpuWatch, Row, link_tree
from .data import DataSet

EXIFTOOL_ARGS = [
    "-FileName<CreateDate",
    "-FileName<DateTimeOriginal",
    "-d",
    "%Y-%m/%Y-%m-%d %H.%M.%S%%-c.%%e",
    "-r",
]

# photosort 2021.1.4 (the last release for Python < 3.12; 2024.1.0 requires 3.12) calls
# ExifTool.start() and get_metadata(), which PyExifTool 0.5 removed: pinned as its
# users must.
PEERS = {
    "sortphotos": ["sortphotos"],
    "photosort": ["photosort", "PyExifTool<0.5"],
}
PHOTOSORT_SETTLE = 31.0  # photosort skips files changed (mtime or ctime) in the last 30 s


@dataclass
class Installed:
    name: str
    bin: Path | None
    version: str = ""
    problem: str = ""  # why it cannot run, when it cannot


def _last_line(text: str) -> str:
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip() and not ln.startswith(("WARNING: Location", "DEPRECATION"))
    ]
    return lines[-1][:200] if lines else "no message"


def install(ctx: Context, name: str) -> Installed:
    """A venv of Debian's python3 with the peer in it (made once, then reused)."""
    venv = ctx.workdir / "peers" / name
    spec = PEERS[name]
    stamp = venv / ".bench-installed"
    py = "/usr/bin/python3"
    if not (stamp.exists() and stamp.read_text() == repr(spec)):
        ctx.log(f"bench: installing {' '.join(spec)} into {venv}")
        subprocess.run([py, "-m", "venv", "--clear", str(venv)], check=True)
        p = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", *spec],
            capture_output=True,
            text=True,
            check=False,
        )
        if p.returncode != 0:
            return Installed(
                name,
                None,
                problem=f"does not install on Python {_pyver(py)}: {_last_line(p.stderr)}",
            )
        stamp.write_text(repr(spec))
    v = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import importlib.metadata as m; print(m.version({name!r}))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return Installed(name, venv / "bin" / name, v.stdout.strip())


def _pyver(py: str) -> str:
    return subprocess.run(
        [py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def _finish(
    ctx: Context, row: Row, u: measure.Usage, out: Path, log: Path, cpu: CpuWatch, ran_on: str
) -> Row:
    row.take(u, measure.timed_sync())
    row.others_cpu = cpu.others(row.cpu)
    row.files_out = measure.count_files(out)
    if u.rc != 0:
        why = _last_line(log.read_text(errors="replace"))
        row.status = "did not run" if row.files_out == 0 else "failed"
        row.note = (
            f"does not run on {ran_on}: {why}" if row.files_out == 0 else f"exit {u.rc}: {why}"
        )
        row.wall = row.cpu = None
    elif row.files_out == 0:
        why = _last_line(log.read_text(errors="replace"))
        row.status, row.note = "failed", (row.note + f"; filed none: {why}").lstrip("; ")
    elif row.files_out != row.files:
        row.note = (row.note + f"; filed {row.files_out} of {row.files}").lstrip("; ")
    return row


def exiftool(ctx: Context, ds: DataSet) -> Row:
    version = subprocess.run(
        ["exiftool", "-ver"], capture_output=True, text=True, check=False
    ).stdout
    row = Row(
        ds.name,
        "exiftool -o (rename)",
        "peer",
        ds.count,
        ds.bytes,
        note=f"ExifTool {version.strip()}, + sync",
    )
    rundir = ctx.rundir(ds.name, "exiftool")
    out = rundir / "out"
    out.mkdir()
    log = ctx.logs / f"{ds.name}-exiftool.log"
    ctx.fair_start(ds.root)
    cpu = CpuWatch()
    # -FileName with a folder is relative to the working directory (not to -o).
    u = measure.run(["exiftool", "-o", "./", *EXIFTOOL_ARGS, str(ds.root)], cwd=out, log=log)
    _finish(ctx, row, u, out, log, cpu, "this machine")
    ctx.clean(rundir)
    return row


def sortphotos(ctx: Context, ds: DataSet, peer: Installed) -> Row:
    row = Row(
        ds.name,
        f"sortphotos {peer.version}".strip(),
        "peer",
        ds.count,
        ds.bytes,
        note="copy mode (-c), + sync",
    )
    if peer.bin is None:
        row.status, row.note = "did not run", peer.problem
        return row
    rundir = ctx.rundir(ds.name, "sortphotos")
    out = rundir / "out"
    log = ctx.logs / f"{ds.name}-sortphotos.log"
    ctx.fair_start(ds.root)
    cpu = CpuWatch()
    u = measure.run(
        [
            str(peer.bin),
            "-c",
            "-r",
            "-s",
            "--sort",
            "%Y-%m",
            "--rename",
            "%Y-%m-%d %H.%M.%S",
            str(ds.root),
            str(out),
        ],
        log=log,
    )
    _finish(ctx, row, u, out, log, cpu, f"Python {_pyver(str(peer.bin.parent / 'python'))}")
    if row.status == "did not run":
        peer.problem = row.note  # the same on every set: do not run it again
    ctx.clean(rundir)
    return row


class Photosort:
    """photosort moves (renames) its inbox into its library. Its tree is linked at the
    start of a set and run last: it ignores files whose ctime is under 30 s old."""

    def __init__(self, ctx: Context, ds: DataSet, peer: Installed) -> None:
        self.ctx, self.ds, self.peer = ctx, ds, peer
        self.rundir = ctx.rundir(ds.name, "photosort")
        self.src = self.rundir / "src"
        self.out = self.rundir / "out"
        self.out.mkdir()
        if peer.bin is not None:
            link_tree(ds.root, self.src)
        self.cfg = self.rundir / "photosort.yml"
        self.cfg.write_text(
            f"sources:\n  bench:\n    dir: {self.src}\noutput:\n  dir: {self.out}\n"
            "  db_file: .photosort.csv\n  duplicates_dir: .duplicates\n"
            '  dir_pattern: "%(year)04d-%(month)02d"\n'
            '  file_prefix: "%(year)04d-%(month)02d-%(day)02d %(hour)02d.%(minute)02d.'
            '%(second)02d "\n  chmod: "0640"\n'
        )

    def run(self) -> Row:
        ctx, ds, peer = self.ctx, self.ds, self.peer
        row = Row(
            ds.name,
            f"photosort {peer.version}".strip(),
            "peer",
            ds.count,
            ds.bytes,
            note="moves by rename (writes no bytes), + sync; PyExifTool<0.5",
        )
        if peer.bin is None:
            row.status, row.note = "did not run", peer.problem
            ctx.clean(self.rundir)
            return row
        # The one wait that is photosort's rule, not a synchronisation: it skips files
        # whose ctime is under 30 s old, and the other contenders' links and renames of
        # the same inodes (hard links) touch the ctime.
        newest = max(os.lstat(self.src / f.rel).st_ctime for f in ds.files)
        time.sleep(max(0.0, newest + PHOTOSORT_SETTLE - time.time()))
        log = ctx.logs / f"{ds.name}-photosort.log"
        ctx.fair_start(ds.root)
        cpu = CpuWatch()
        u = measure.run([str(peer.bin), "sync", "--config", str(self.cfg)], log=log)
        _finish(
            ctx, row, u, self.out, log, cpu, f"Python {_pyver(str(peer.bin.parent / 'python'))}"
        )
        left = measure.count_files(self.src)
        if left:
            row.note += f"; left {left} in its inbox"
        ctx.clean(self.rundir)
        return row
