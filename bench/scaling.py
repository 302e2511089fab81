"""`python -m bench.scaling`: how our cost grows with the work. Import and daemon burst
of N small files for several N, in four shapes, into an empty catalog and into one of a
million rows; `find`, `history` and `status` on catalogs of several sizes. Prints one
table with files/s, the 1-min load beside each figure, and the slope between sizes (the
exponent k of time ~ N^k: 1.0 is linear; above ~1.15 is a defect to look at).

Runs in pieces: `--only`, `--sizes`, `--shapes`, `--catalogs` choose the cells; results
go to JSON (`--json`) so that pieces run at different times can be read together. See
bench/README.md, "Scaling".
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import statistics
import sys
import traceback
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from . import data, measure, ours
from .__main__ import size
from .context import ROOT, Context, Row, snapshot

SHAPES = {  # name: (seconds between captures, files per folder: None = N / 1,000 folders)
    "distinct": (1, data.FILES_PER_FOLDER),  # each its own second, DCIM folders of 1,000
    "shared": (0, data.FILES_PER_FOLDER),  # all captured in the same second
    "onefolder": (1, 0),  # each its own second, all in one folder
    "spread": (1, None),  # each its own second, over 1,000 folders
}
RUNS = ("import", "daemon")
QUERIES = ("find", "history", "status")
EPOCH = datetime(2011, 3, 4, 5, 6, 7)
CATALOG_EPOCH = datetime(2000, 1, 1)  # data.make_catalog: row i captured i * 613 s later
TRASH_LIMIT = 250_000  # files set aside before they are removed (and ext4 waited for)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument

    def ints(text: str) -> list[int]:
        return [int(float(x)) for x in text.split(",") if x]

    a(
        "--sizes",
        type=ints,
        default=[1000, 10000, 100000],
        metavar="N,...",
        help="files per run (default 1000,10000,100000)",
    )
    a(
        "--shapes",
        default=",".join(SHAPES),
        metavar="NAME,...",
        help="distinct, shared (one capture second), onefolder, spread (1,000 folders)",
    )
    a(
        "--catalogs",
        type=ints,
        default=[0, 1_000_000],
        metavar="ROWS,...",
        help="catalog rows already there when import and burst run (default 0,1000000)",
    )
    a(
        "--query-catalogs",
        type=ints,
        default=[10_000, 1_000_000],
        metavar="ROWS,...",
        help="catalog sizes for find/history/status (default 10000,1000000)",
    )
    a("--only", default="", metavar="NAME,...", help="of " + ", ".join(RUNS + QUERIES))
    a("--file-size", type=size, default=8 * 1024, metavar="BYTES", help="default 8K")
    a("--settle", type=float, default=2.0, metavar="S", help="daemon settle_seconds")
    a("--workers", type=int, default=None, metavar="N")
    a("--workdir", type=Path, default=Path("/var/tmp/mediasortd-scaling"), metavar="DIR")
    a(
        "--json",
        type=Path,
        default=ROOT / "bench" / "results" / "scaling.json",
        metavar="PATH",
        help="results; rows already in it are kept unless --fresh",
    )
    a("--fresh", action="store_true", help="start a new JSON instead of adding to it")
    a(
        "--rev",
        metavar="REV",
        default=None,
        help="run the daemon/ of this git revision (exported under the work dir)",
    )
    a("--keep", action="store_true", help="keep the generated data and catalogs")
    a("--smoke", action="store_true", help="tiny sizes: checks the harness (seconds)")
    args = p.parse_args(argv)
    args.shapes = [s for s in args.shapes.split(",") if s]
    if bad := [s for s in args.shapes if s not in SHAPES]:
        p.error(f"--shapes: unknown {', '.join(bad)}")
    names = [n for n in args.only.split(",") if n]
    if bad := [n for n in names if n not in RUNS + QUERIES]:
        p.error(f"--only: unknown {', '.join(bad)}")
    args.want = set(names or RUNS + QUERIES)
    if args.smoke:
        args.sizes, args.catalogs, args.query_catalogs = [20, 60], [0, 500], [200, 600]
        args.settle = 0.2
    return args


def dataset(ctx: Context, shape: str, n: int, file_size: int) -> data.DataSet:
    step, per_folder = SHAPES[shape]
    per = per_folder or (n if per_folder == 0 else max(1, math.ceil(n / 1000)))
    name = f"{shape}-{n}"
    return data.make_jpegs(
        ctx.workdir / "data" / name, name, n, file_size, EPOCH, step, ctx.log, per_folder=per
    )


def catalog(ctx: Context, rows: int) -> Path:
    return data.make_catalog(ctx.workdir / "data" / f"catalog-{rows}" / "state", rows, ctx.log)


def cli_row(ctx: Context, state: Path, rows: int, label: str, *args: str) -> Row:
    """A read-only command as a user runs it (a new process) on a catalog of `rows`:
    one warm-up, then the median of 5."""
    rundir = ctx.rundir(f"q{rows}", label.replace(" ", "_").replace("*", "")[:40])
    cfg = ctx.config(rundir, state_dir=state)
    row = Row(f"catalog {rows:,}", label, "ours", note=f"{rows:,} rows; warm median of 5")
    ctx.fair_start(creates=False)
    walls = []
    for i in range(6):
        u = measure.run(ctx.mediasortd(cfg, *args), cwd=ctx.src)
        if u.rc not in (0, 1):  # find: 1 = something not found (still an answer)
            raise RuntimeError(f"mediasortd {' '.join(args)} exited {u.rc}")
        if i:
            walls.append(u.wall)
    row.wall = statistics.median(walls)
    row.load1 = ctx.load1_at_start
    row.extra.update(rows=rows, runs=walls, args=list(args))
    ctx.clean(rundir)
    return row


def queries(ctx: Context, rows: int, want: set[str]) -> list[Row]:
    state = catalog(ctx, rows).parent
    mid = rows // 2
    t = CATALOG_EPOCH + timedelta(seconds=mid * 613)
    sha = hashlib.sha256(b"catalog-%d" % mid).hexdigest()
    out = []
    if "find" in want:
        out += [
            cli_row(ctx, state, rows, "find MONTH (limit 50)", "find", f"{t:%Y-%m}"),
            cli_row(ctx, state, rows, "find NAME*", "find", f"IMG_{mid:07d}"[:-1] + "*"),
            cli_row(ctx, state, rows, "find SHA-PREFIX", "find", sha[:8]),
            cli_row(
                ctx,
                state,
                rows,
                "find MONTH --limit 0 --json",
                "find",
                "--limit",
                "0",
                "--json",
                f"{t:%Y-%m}",
            ),
        ]
    if "history" in want:
        out += [
            cli_row(ctx, state, rows, "history (newest 100)", "history"),
            cli_row(ctx, state, rows, "history --outcome failed", "history", "--outcome", "failed"),
        ]
    if "status" in want:
        out.append(cli_row(ctx, state, rows, "status", "status"))
    return out


def run_one(ctx: Context, kind: str, shape: str, n: int, rows: int, file_size: int) -> Row:
    ds = dataset(ctx, shape, n, file_size)
    if ctx.trash_files + n > TRASH_LIMIT:
        ctx.empty_trash()
    cat = catalog(ctx, rows) if rows else None
    fn = ours.import_copy if kind == "import" else ours.daemon_burst
    row = fn(ctx, ds, cat)
    row.dataset = shape
    row.load1 = ctx.load1_at_start
    row.extra.update(shape=shape, n=n, catalog_rows=rows, kind=kind, load1_after=os.getloadavg()[0])
    return row


def slopes(rows: list[dict[str, Any]]) -> None:
    """Each run's exponent against the next smaller size of the same series:
    log(wall ratio) / log(size ratio)."""
    series: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        e = r.get("extra", {})
        if r.get("status") != "ok" or not r.get("wall"):
            continue
        key = (
            (e.get("kind"), e.get("shape"), e.get("catalog_rows"), r["contender"], r.get("code"))
            if "n" in e
            else ("query", r["contender"], r.get("code"))
        )
        series.setdefault(key, []).append(r)
    for items in series.values():
        by = sorted(items, key=lambda r: r["extra"].get("n") or r["extra"].get("rows") or 0)
        prev = None
        for r in by:
            size_ = r["extra"].get("n") or r["extra"].get("rows")
            r["slope"] = None
            if prev is not None and size_ and size_ != prev[0]:
                r["slope"] = math.log(r["wall"] / prev[1]) / math.log(size_ / prev[0])
            prev = (size_, r["wall"])


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    head = [
        "contender",
        "shape",
        "catalog rows",
        "files",
        "wall s",
        "files/s",
        "slope",
        "load1",
        "CPU s",
        "when",
        "code",
    ]
    body = []
    order = {k: i for i, k in enumerate(("import", "daemon"))}
    for r in sorted(
        rows,
        key=lambda r: (
            r.get("code", ""),
            order.get(r["extra"].get("kind"), 9),
            r["contender"],
            r["extra"].get("shape", ""),
            r["extra"].get("catalog_rows", 0),
            r["extra"].get("rows", 0),
            r["files"],
        ),
    ):
        e = r["extra"]
        wall: float = r.get("wall") or 0.0
        ok = r.get("status") == "ok" and wall
        body.append(
            [
                r["contender"],
                e.get("shape", "-"),
                f"{e.get('catalog_rows', e.get('rows', 0)):,}",
                f"{r['files']:,}" if r["files"] else "-",
                (f"{wall:.3f}" if wall < 1 else f"{wall:.2f}") if ok else r.get("status", "?"),
                f"{r['files'] / wall:,.0f}" if ok and r["files"] else "-",
                f"{r['slope']:.2f}" if r.get("slope") is not None else "-",
                f"{r['load1']:.1f}",
                f"{r['cpu']:.1f}" if r.get("cpu") else "-",
                r.get("when", "")[11:16],
                r.get("code", ""),
            ]
        )
    if markdown:
        return "\n".join(
            ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(c) + " |" for c in body]
        )
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))
        ).rstrip()
        for line in [head, ["-" * w for w in widths], *body]
    )


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    """One cell of the table: a newer run of it replaces the older."""
    e = r["extra"]
    return (
        r["contender"],
        r["dataset"],
        r["files"],
        e.get("catalog_rows"),
        e.get("rows"),
        r.get("code"),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    ctx = Context(
        workdir=args.workdir.resolve(),
        settle=args.settle,
        workers=args.workers,
        drop=False,
        smoke=args.smoke,
        log=log,
        defer_clean=True,
    )
    for d in (ctx.workdir, ctx.runs, ctx.logs):
        d.mkdir(parents=True, exist_ok=True)
    if args.rev:
        ctx.src, ctx.rev_sha = snapshot(args.rev, ctx.workdir)
        log(f"scaling: mediasortd from {args.rev} = {ctx.rev_sha[:12]}")
    old: list[dict[str, Any]] = []
    if not args.fresh and args.json.exists():
        old = json.loads(args.json.read_text()).get("rows", [])
    new: list[dict[str, Any]] = []

    def add(row: Row) -> None:
        d = row.as_dict()
        d["when"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        d["code"] = ctx.rev_sha[:12] if args.rev else "work tree"
        new.append(d)
        log(
            f"scaling: {row.contender:28} {row.dataset:10} {row.files:>7,} files "
            f"{row.status:7} wall {row.wall and round(row.wall, 3)} s  load {row.load1:.1f}"
        )

    def attempt(fn: Any, *a: Any) -> None:
        try:
            out = fn(*a)
            for r in out if isinstance(out, list) else [out]:
                add(r)
        except Exception as e:  # noqa: BLE001 - a failed cell, and go on
            traceback.print_exc()
            add(Row("-", f"{a}", "ours", status="failed", note=f"{type(e).__name__}: {e}"))

    try:
        for kind in RUNS:
            if kind not in args.want:
                continue
            for rows in args.catalogs:
                for shape in args.shapes:
                    for n in args.sizes:
                        attempt(run_one, ctx, kind, shape, n, rows, args.file_size)
        for rows in args.query_catalogs:
            if args.want & set(QUERIES):
                attempt(queries, ctx, rows, args.want)
    finally:
        ctx.empty_trash()
        if not args.keep:
            ctx.remove(ctx.workdir / "data")
    replaced = {_key(r) for r in new}
    rows_all = [r for r in old if _key(r) not in replaced] + new
    slopes(rows_all)
    text = table(rows_all)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"rows": rows_all, "table": text, "markdown": table(rows_all, markdown=True)},
            indent=2,
            default=str,
        )
    )
    print(f"\nwritten: {args.json}")
    return 1 if any(r["status"] != "ok" for r in new) else 0


if __name__ == "__main__":
    sys.exit(main())
