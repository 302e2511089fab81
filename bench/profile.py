"""Where `mediasortd import` spends its time: py-spy samples every thread (waits
included) and the samples of the worker threads are summed by what they were doing.

    .venv/bin/python -m bench.profile --set photos   # or small, videos; --count, --workers
    (needs py-spy: .venv/bin/pip install py-spy; strace for --syscalls)

Writes {out}/{set}.raw (collapsed stacks, for flamegraph.pl or speedscope) and prints
a table: category, share of the worker threads' time, worker-ms per file.
"""

from __future__ import annotations

import argparse
import collections
import linecache
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import data
from .context import ROOT, Context, snapshot

# First match from the leaf upwards wins: (category, function name, text on that line).
RULES: list[tuple[str, str, str]] = [
    ("fsync: staged copy", "copy_and_hash", "os.fsync"),
    ("fsync: folder", "fsync_dir", ""),
    ("read+write (copy)", "copy_and_hash", "os.readv"),
    ("read+write (copy)", "copy_and_hash", "os.preadv"),
    ("read+write (copy)", "copy_and_hash", "os.write"),
    ("read+write (copy)", "copy_and_hash", "os.pwrite"),
    ("sha256", "copy_and_hash", "h.update"),
    ("fadvise", "copy_and_hash", "posix_fadvise"),
    ("SQLite COMMIT (fsync of the WAL)", "transaction", "COMMIT"),
    ("SQLite BEGIN IMMEDIATE (lock wait)", "transaction", "BEGIN"),
    ("ExifTool round trip", "exchange", ""),
    ("ExifTool round trip", "read", "exchange"),
    ("logging (structlog)", "", "structlog"),
    ("SQL statements", "", "conn.execute"),
    ("link/rename/unlink/mkdir", "", "os.link"),
    ("link/rename/unlink/mkdir", "", "os.unlink"),
    ("link/rename/unlink/mkdir", "make_dirs", ""),
    ("waiting for work (queue)", "_next", ""),
]
SRC = [ROOT]  # where the profiled daemon/ sources are (for the text of a sampled line)
FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:]+):(?P<line>\d+)\)$")


def categorize(stack: list[str]) -> str:
    for frame in reversed(stack):
        m = FRAME.match(frame.strip())
        if not m:
            continue
        func, file, line = m["func"].rsplit(".", 1)[-1], m["file"], int(m["line"])
        text = linecache.getline(str(SRC[0] / file) if not file.startswith("/") else file, line)
        if "structlog" in file:
            return "logging (structlog)"
        for cat, f, needle in RULES:
            if (not f or f == func) and (not needle or needle in text):
                return cat
    return "other Python (steps, journal rows, paths)"


def summarize(raw: Path, files: int, rate: int) -> str:
    """Sum the worker threads' samples by category."""
    per: collections.Counter[str] = collections.Counter()
    threads: set[str] = set()
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        stack = stack_text.split(";")
        if not any(f.startswith("Pool._worker (") for f in stack):
            continue  # the main thread only waits for the pool
        threads.add(stack[0])
        per[categorize(stack)] += int(count)
    total = sum(per.values()) or 1
    out = [f"{'category':42} {'share':>6} {'worker-ms/file':>15}"]
    for cat, n in per.most_common():
        out.append(f"{cat:42} {n / total:6.1%} {n / rate * 1000 / files:15.2f}")
    out.append(
        f"{'all ' + str(len(threads)) + ' worker threads':42} {1:6.0%} "
        f"{total / rate * 1000 / files:15.2f}"
    )
    return "\n".join(out)


def subset(ds: data.DataSet, n: int, root: Path) -> data.DataSet:
    """The first n files of a set, as hard links in a tree of their own."""
    for f in ds.files[:n]:
        if not (root / f.rel).exists():
            (root / f.rel).parent.mkdir(parents=True, exist_ok=True)
            (root / f.rel).hardlink_to(ds.root / f.rel)
    return data.DataSet(ds.name, root, ds.files[:n])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--set", choices=("photos", "small", "videos"), default="photos")
    p.add_argument("--count", type=int, default=None, help="files (default: as the bench)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument(
        "--cpu",
        action="store_true",
        help="sample only threads on a CPU (where the CPU time goes), not waits",
    )
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp/mediasortd-bench"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profile")
    p.add_argument("--rev", default=None, help="profile this git revision (a snapshot)")
    p.add_argument(
        "--syscalls",
        action="store_true",
        help="also count fsync/fdatasync/link/rename per file with strace",
    )
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        p.error("py-spy not found: .venv/bin/pip install py-spy")
    ctx = Context(workdir=args.workdir, workers=args.workers)
    if args.rev:
        ctx.src, ctx.rev_sha = snapshot(args.rev, args.workdir)
        SRC[0] = ctx.src
    if args.set == "photos":  # the bench's own sets (reused when it ran with --keep)
        ds = data.make_jpegs(
            args.workdir / "data" / "photos", "photos", 2000, 2 << 20, data.PHOTO_EPOCH, 3607
        )
    elif args.set == "small":
        ds = data.make_jpegs(
            args.workdir / "data" / "small", "small", 20000, 50 << 10, data.SMALL_EPOCH, 1201
        )
    else:
        ds = data.make_videos(args.workdir / "data" / "videos", 4, 1 << 30)
    if args.count and args.count < ds.count:
        ds = subset(ds, args.count, args.workdir / "data" / f"{ds.name}-first-{args.count}")
    args.out.mkdir(parents=True, exist_ok=True)
    rundir = ctx.rundir(ds.name, "profile")
    cfg = ctx.config(rundir)
    ctx.fair_start(ds.root)
    raw = args.out / f"{ds.name}.raw"
    t0 = time.perf_counter()
    subprocess.run(
        [
            spy,
            "record",
            *([] if args.cpu else ["--idle"]),
            "--threads",
            "--rate",
            str(args.rate),
            "--format",
            "raw",
            "-o",
            str(raw),
            "--",
            *ctx.mediasortd(cfg, "import", str(ds.root)),
        ],
        cwd=ctx.src,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t0
    print(
        f"{ds.name}: {ds.count:,} files, import under py-spy {wall:.1f} s "
        f"({ds.count / wall:,.0f} files/s; py-spy slows it somewhat)\n"
    )
    print(summarize(raw, ds.count, args.rate))
    ctx.clean(rundir)
    if args.syscalls and shutil.which("strace"):
        rundir = ctx.rundir(ds.name, "strace")
        cfg = ctx.config(rundir)
        n = min(ds.count, 200)
        sub = subset(ds, n, ctx.workdir / "data" / f"{ds.name}-first-{n}").root
        out = rundir / "strace.txt"
        subprocess.run(
            [
                "strace",
                "-f",
                "-c",
                "-o",
                str(out),
                "-e",
                (
                    "trace=fsync,fdatasync,link,linkat,rename,renameat2,unlink,openat,"
                    "pwrite64,write,read,readv,fadvise64"
                ),
                *ctx.mediasortd(cfg, "import", str(sub)),
            ],
            cwd=ctx.src,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print(f"\nsystem calls for {n} files (strace -f -c; per file = calls / {n}):")
        for line in out.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
                print(f"  {parts[-1]:12} {int(parts[3]):7} calls  {int(parts[3]) / n:6.2f}/file")
        ctx.clean(rundir)
    print(f"\ncollapsed stacks (flamegraph.pl / speedscope input): {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
