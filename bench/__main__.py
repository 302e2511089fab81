"""`python -m bench` (`./dev bench`): make the data, run every contender side by side on
the same files, print one table and write it as JSON. `--help` lists the flags."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from . import data, floor, measure, ours, peers, report
from .context import ROOT, Context, Row, snapshot

SETS = ("photos", "small", "videos", "trickle", "catalog")
CONTENDERS = (
    "floor",
    "sha256sum",
    "hashlib",
    "import",
    "daemon",
    "exiftool",
    "sortphotos",
    "photosort",
    "startup",
    "status",
)
MiB = 1 << 20


def size(text: str) -> int:
    """Bytes, with an optional K, M or G suffix (powers of 1024): 50K, 2M, 1G."""
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="mediasortd's benchmark: the floor (cp -r + sync, sha256sum), our "
        "import and daemon, and the peers (ExifTool, sortphotos, photosort), side by side "
        "on the same generated files. Prints one table and writes it as JSON.",
        epilog="NAMEs for --only: sets "
        + ", ".join(SETS)
        + "; contenders "
        + ", ".join(CONTENDERS)
        + ". Sets and contenders combine: --only photos,import,floor."
        "\nRun as root to drop the page cache before each timing (else it says so).",
    )
    a = p.add_argument
    a("--photos", type=int, default=2000, metavar="N", help="dated JPEGs (default 2000)")
    a("--photo-size", type=size, default=2 * MiB, metavar="BYTES", help="default 2M")
    a("--small", type=int, default=20000, metavar="N", help="small JPEGs (default 20000)")
    a("--small-size", type=size, default=50 * 1024, metavar="BYTES", help="default 50K")
    a("--videos", type=int, default=4, metavar="N", help="MP4 videos (default 4)")
    a("--video-size", type=size, default=1 << 30, metavar="BYTES", help="default 1G")
    a(
        "--catalog-rows",
        type=int,
        default=1_000_000,
        metavar="N",
        help="rows of the catalog for start-up and status timing (default 1000000)",
    )
    a(
        "--trickle",
        type=int,
        default=200,
        metavar="N",
        help="files dropped one by one for the latency test (default 200)",
    )
    a("--trickle-rate", type=float, default=20.0, metavar="PER_S", help="default 20/s")
    a(
        "--settle",
        type=float,
        default=2.0,
        metavar="S",
        help="the daemon's settle_seconds (default 2.0, the shipped default)",
    )
    a(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="ingest.workers for ours (default: the config default)",
    )
    a("--only", default="", metavar="NAME,...", help="run only these sets and/or contenders")
    a(
        "--workdir",
        type=Path,
        default=Path("/var/tmp/mediasortd-bench"),
        metavar="DIR",
        help="data and runs (default /var/tmp/mediasortd-bench; keep it off tmpfs)",
    )
    a(
        "--json",
        type=Path,
        default=ROOT / "bench" / "results" / "latest.json",
        metavar="PATH",
        help="where to write the results (default bench/results/latest.json)",
    )
    a(
        "--rev",
        metavar="REV",
        default=None,
        help="benchmark the daemon/ of this git revision (exported under the work dir) "
        "instead of the work tree as it is",
    )
    a("--keep", action="store_true", help="keep the generated data (reused by the next run)")
    a(
        "--cache",
        choices=("warm", "cold"),
        default="warm",
        help="warm (default): each contender's source is in the page cache, as files just "
        "dropped into an inbox are; cold: sync and drop the caches before each timing (root)",
    )
    a("--no-drop-caches", action="store_true", help="never drop the page cache")
    a(
        "--smoke",
        action="store_true",
        help="a few files per set, seconds: checks the "
        "harness runs (no PyPI installs, no cache drops); overrides the sizes",
    )
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in SETS + CONTENDERS]
    if unknown:
        p.error(f"--only: unknown name(s) {', '.join(unknown)}")
    args.sets = [s for s in SETS if s in names] or list(SETS)
    args.contenders = [c for c in CONTENDERS if c in names] or list(CONTENDERS)
    if args.smoke:
        args.photos, args.photo_size, args.small, args.small_size = 4, 256 * 1024, 20, 20 * 1024
        args.videos, args.video_size, args.catalog_rows = 1, 4 * MiB, 2000
        args.trickle, args.trickle_rate, args.settle = 4, 20.0, 0.2
        args.no_drop_caches = True
        args.contenders = [c for c in args.contenders if c not in ("sortphotos", "photosort")]
    return args


CACHE_NOTE = {
    "warm": "cache: warm: before each timing, sync, then the contender's source read once "
    "into the page cache (start-up and status: first run after dropping caches = "
    "cold, then warm runs)",
    "cold": "cache: cold: sync; echo 3 > /proc/sys/vm/drop_caches before each timing",
}


def meta(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    def sh(*cmd: str) -> str:
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, cwd=ROOT, check=False
            ).stdout.strip()
        except OSError:
            return ""

    return {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "exiftool": sh("exiftool", "-ver"),
        "code": (
            f"{args.rev} = {ctx.rev_sha[:12]} (snapshot {ctx.src})"
            if args.rev
            else "work tree at "
            + sh("git", "rev-parse", "--short", "HEAD")
            + (
                " + uncommitted changes in daemon/"
                if sh("git", "status", "--porcelain", "--", "daemon")
                else ""
            )
        ),
        "workdir": str(ctx.workdir),
        "disk": sh("df", "-hT", str(ctx.workdir)).splitlines()[-1:],
        "uptime_before": sh("uptime"),
        "fsync_4k_before": measure.fsync_probe(ctx.workdir),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    ctx = Context(
        workdir=args.workdir.resolve(),
        settle=args.settle,
        workers=args.workers,
        cache=args.cache,
        drop=not args.no_drop_caches,
        smoke=args.smoke,
        log=log,
    )
    for d in (ctx.workdir, ctx.runs, ctx.logs):
        d.mkdir(parents=True, exist_ok=True)
    if args.rev:
        ctx.src, ctx.rev_sha = snapshot(args.rev, ctx.workdir)
        sys.path.insert(0, str(ctx.src))  # the catalog's schema and status() of that commit
        log(f"bench: mediasortd from {args.rev} = {ctx.rev_sha[:12]}, in {ctx.src}")
    info = meta(args, ctx)
    rows: list[Row] = []
    want = set(args.contenders)

    def add(row: Row) -> None:
        rows.append(row)
        log(
            f"bench: {row.dataset:8} {row.contender:28} {row.status:11} "
            f"wall {row.wall if row.wall is None else round(row.wall, 3)} s  {row.note}"
        )

    def attempt(fn: Any, *a: Any) -> None:
        """One contender; a crash of the harness around it becomes a failed row."""
        try:
            out = fn(*a)
            for r in out if isinstance(out, list) else [out]:
                add(r)
        except Exception as e:  # noqa: BLE001 - report it in the table and go on
            traceback.print_exc()
            add(
                Row(
                    a[1].name if len(a) > 1 and hasattr(a[1], "name") else "?",
                    getattr(fn, "__name__", "?"),
                    "ours",
                    status="failed",
                    note=f"harness error: {type(e).__name__}: {e}",
                )
            )

    datadir = ctx.workdir / "data"
    made: dict[str, data.DataSet] = {}

    def dataset(name: str) -> data.DataSet:
        if name not in made:
            if name == "photos":
                made[name] = data.make_jpegs(
                    datadir / "photos",
                    "photos",
                    args.photos,
                    args.photo_size,
                    data.PHOTO_EPOCH,
                    3607,
                    log,
                )
            elif name == "small":
                made[name] = data.make_jpegs(
                    datadir / "small",
                    "small",
                    args.small,
                    args.small_size,
                    data.SMALL_EPOCH,
                    1201,
                    log,
                )
            else:
                made[name] = data.make_videos(datadir / "videos", args.videos, args.video_size, log)
            log(
                f"bench: {name}: {made[name].count:,} files, {made[name].bytes / 1e6:,.1f} MB;"
                f" ExifTool reads the first as {data.check_exiftool_reads(made[name])}"
            )
        return made[name]

    installed: dict[str, peers.Installed] = {}
    for name in ("sortphotos", "photosort"):
        if name in want and set(args.sets) & {"photos", "small", "videos"}:
            installed[name] = peers.install(ctx, name)

    for name in ("photos", "small", "videos"):
        if name not in args.sets or not want & set(CONTENDERS[:8]):
            continue
        ds = dataset(name)
        ps = peers.Photosort(ctx, ds, installed["photosort"]) if "photosort" in want else None
        for key, fn in (
            ("floor", floor.cp_sync),
            ("sha256sum", floor.sha256sum),
            ("hashlib", floor.hashlib_read),
            ("import", ours.import_copy),
            ("daemon", ours.daemon_burst),
            ("exiftool", peers.exiftool),
        ):
            if key in want:
                attempt(fn, ctx, ds)
        if "sortphotos" in want:
            attempt(peers.sortphotos, ctx, ds, installed["sortphotos"])
        if ps is not None:
            attempt(lambda c, d, ps=ps: ps.run(), ctx, ds)

    if "trickle" in args.sets and "daemon" in want:
        attempt(
            lambda c, d: ours.daemon_trickle(c, d, args.trickle, args.trickle_rate),
            ctx,
            dataset("photos"),
        )

    if "catalog" in args.sets and want & {"startup", "status"}:
        state = datadir / "catalog" / "state"
        try:
            data.make_catalog(state, args.catalog_rows, log)
            waiting = made.get("small") or (
                dataset("small") if "small" in args.sets and "startup" in want else None
            )
            if "startup" in want:
                attempt(lambda c, d: ours.startup(c, state, args.catalog_rows, waiting), ctx, None)
            if "status" in want:
                attempt(lambda c, d: ours.status(c, state, args.catalog_rows), ctx, None)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            add(Row("catalog", "make catalog", "ours", status="failed", note=str(e)))

    checks = report.judge(rows, args.settle)
    info["uptime_after"] = subprocess.run(
        ["uptime"], capture_output=True, text=True, check=False
    ).stdout.strip()
    info["caches_dropped"] = ctx.caches_dropped
    info["waited_after_removals_s"] = round(ctx.waited)
    info["fsync_4k_after"] = measure.fsync_probe(ctx.workdir)
    text = report.table(rows)
    print(text)
    print("\nnotes:\n" + report.notes(rows))
    print(f"\nload: before {info['uptime_before']}\n      after  {info['uptime_after']}")
    print(
        f"fsync of a 4 KiB write (ms): before {info['fsync_4k_before']}, after "
        f"{info['fsync_4k_after']}"
    )
    print(f"code: {info['code']}")
    if ctx.waited:
        print(
            f"waits: {ctx.waited:.0f} s in all before timings that followed a removal "
            "(ext4 without a journal: see bench/README.md)"
        )
    print(CACHE_NOTE[args.cache])
    if ctx.caches_dropped is False:
        print("page cache: could NOT be dropped (not root?): cold timings are not cold")
    elif ctx.caches_dropped is None:
        print("page cache: never dropped (--no-drop-caches / --smoke)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "meta": info,
                "rows": [r.as_dict() for r in rows],
                "targets": checks,
                "table": text,
                "markdown": report.table(rows, markdown=True),
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nwritten: {args.json}")
    if not args.keep:
        for d in (datadir, ctx.runs, *ctx.workdir.glob("src-*")):
            ctx.remove(d)
    failed = [r for r in rows if r.kind == "ours" and r.status != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
