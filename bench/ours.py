"""Ours: `mediasortd import` (copy mode), the daemon fed everything at once, the daemon
fed a steady trickle (drop-to-library latency), and start-up / `status` on a big catalog.

The daemon runs as `mediasortd run` with a NOTIFY_SOCKET we bind, as under systemd.
Nothing here sleeps to synchronise: it polls the inbox, the library, the socket.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

from daemon.app.notify import Listener as Notify

from . import measure
from .context import Context, CpuWatch, Row, link_tree
from .data import DataSet


class Daemon:
    """`mediasortd run` in a subprocess; wait4 gives its CPU and peak RSS at the end."""

    def __init__(self, ctx: Context, cfg: Path, rundir: Path, name: str) -> None:
        self.notify = Notify(rundir / "notify.sock")
        ctx.logs.mkdir(parents=True, exist_ok=True)
        self.log = open(ctx.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            ctx.mediasortd(cfg, "run"),
            cwd=ctx.src,
            env={**os.environ, "NOTIFY_SOCKET": str(self.notify.path)},
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        self.sampler = measure.TreeSampler(self.proc.pid)

    def ready(self, timeout: float = 120) -> float:
        """Seconds from exec to READY=1."""
        t = measure.wait_for(
            lambda: self.notify.first("READY=1") or self.proc.poll() is not None,
            timeout,
            every=0.002,
        )
        if self.proc.poll() is not None or not isinstance(t, float):
            raise RuntimeError(f"mediasortd run did not get ready (exit {self.proc.poll()})")
        return t - self.t0

    def stop(self) -> measure.Usage:
        last = measure.hwm_mb(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        _, status, ru = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        hwm, tree = self.sampler.stop()
        self.notify.close()
        self.log.close()
        return measure.Usage(
            cpu=ru.ru_utime + ru.ru_stime,
            maxrss_mb=max(hwm, last),
            tree_rss_mb=max(tree, last),
            rc=self.proc.returncode,
        )


def _catalog_from(catalog: Path | None, rundir: Path) -> None:
    """Start the run with a copy of this catalog (its rows stand for a library's past)."""
    if catalog is not None:
        (rundir / "state").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(catalog, rundir / "state" / "catalog.db")


def import_copy(ctx: Context, ds: DataSet, catalog: Path | None = None) -> Row:
    row = Row(
        ds.name,
        "mediasortd import",
        "ours",
        ds.count,
        ds.bytes,
        note=f"copy mode, workers={ctx.workers or 'default'}",
    )
    rundir = ctx.rundir(ds.name, "import")
    cfg = ctx.config(rundir)
    _catalog_from(catalog, rundir)
    ctx.logs.mkdir(parents=True, exist_ok=True)
    ctx.fair_start(ds.root)
    cpu = CpuWatch()
    u = measure.run(
        ctx.mediasortd(cfg, "import", str(ds.root)),
        cwd=ctx.src,
        log=ctx.logs / f"{ds.name}-import.log",
    )
    row.take(u)
    row.others_cpu = cpu.others(row.cpu)
    row.files_out = measure.count_files(rundir / "library")
    ctx.clean(rundir)
    return row


def daemon_burst(ctx: Context, ds: DataSet, catalog: Path | None = None) -> Row:
    """Everything dropped at once (one rename of a prepared folder into the inbox); the
    time until the inbox holds no file (each is removed only once placed)."""
    row = Row(
        ds.name,
        "mediasortd run (burst)",
        "ours",
        ds.count,
        ds.bytes,
        note=f"settle {ctx.settle:g} s included",
    )
    rundir = ctx.rundir(ds.name, "daemon")
    cfg = ctx.config(rundir)
    _catalog_from(catalog, rundir)
    link_tree(ds.root, rundir / "drop" / "batch")
    d = Daemon(ctx, cfg, rundir, f"{ds.name}-daemon")
    try:
        d.ready()
        ctx.fair_start(ds.root)
        cpu = CpuWatch()
        cpu0 = measure.tree_cpu(d.proc.pid)
        t0 = time.perf_counter()
        os.rename(rundir / "drop" / "batch", rundir / "inbox" / "batch")
        inbox = rundir / "inbox"
        limit = 600 + ds.count / 20 + ds.bytes / 50e6
        while True:  # the poll gets rarer as the run gets longer: <= 1% of the wall time
            left = measure.count_files(inbox) == 0
            elapsed = time.perf_counter() - t0
            if left or d.proc.poll() is not None or elapsed > limit:
                break
            time.sleep(min(0.2, 0.01 + elapsed / 200))
        wall = time.perf_counter() - t0
        cpu1 = measure.tree_cpu(d.proc.pid)
    finally:
        u = d.stop()
    row.wall, row.cpu = wall, cpu1 - cpu0
    row.others_cpu = cpu.others(row.cpu)
    row.maxrss_mb, row.tree_rss_mb = u.maxrss_mb, u.tree_rss_mb
    row.extra["wall_minus_settle"] = wall - ctx.settle
    row.files_out = measure.count_files(rundir / "library")
    if not left or row.files_out != ds.count:
        row.status = "failed"
        row.note += f"; inbox not emptied or library short (exit {u.rc})"
    ctx.clean(rundir)
    return row


def daemon_trickle(ctx: Context, ds: DataSet, count: int, rate: float) -> Row:
    """`count` files dropped one by one at `rate`/s (each a rename into the inbox);
    latency = from the drop until the file is visible at its library path."""
    files = ds.files[:count]
    row = Row(
        "trickle",
        "mediasortd run (trickle)",
        "ours",
        len(files),
        sum(f.size for f in files),
        note=f"{len(files)} x {ds.name} at {rate:g}/s, settle {ctx.settle:g} s",
    )
    rundir = ctx.rundir("trickle", "daemon")
    cfg = ctx.config(rundir)
    pending_dir = rundir / "pending"
    pending_dir.mkdir()
    for i, f in enumerate(files):
        os.link(ds.root / f.rel, pending_dir / f"IMG_{i:06d}.JPG")
    library = rundir / "library"
    dropped: dict[int, float] = {}
    arrived: dict[int, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for i in [i for i in list(dropped) if i not in arrived]:
                if os.path.exists(library / files[i].library_rel()):
                    arrived[i] = time.perf_counter()
            time.sleep(0.005)

    d = Daemon(ctx, cfg, rundir, "trickle-daemon")
    watcher = threading.Thread(target=watch, daemon=True)
    try:
        d.ready()
        ctx.fair_start(ds.root)
        cpu = CpuWatch()
        cpu0 = measure.tree_cpu(d.proc.pid)
        watcher.start()
        t0 = time.perf_counter()
        for i in range(len(files)):
            due = t0 + i / rate  # the schedule of the drops, not a synchronisation
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            os.rename(pending_dir / f"IMG_{i:06d}.JPG", rundir / "inbox" / f"IMG_{i:06d}.JPG")
            dropped[i] = time.perf_counter()
        measure.wait_for(
            lambda: len(arrived) == len(files) or d.proc.poll() is not None, 120 + 10 * ctx.settle
        )
        wall = time.perf_counter() - t0
        cpu1 = measure.tree_cpu(d.proc.pid)
    finally:
        done.set()
        u = d.stop()
    lat = sorted((arrived[i] - dropped[i]) * 1000 for i in arrived)
    row.wall, row.cpu = wall, cpu1 - cpu0
    row.others_cpu = cpu.others(row.cpu)
    row.maxrss_mb, row.tree_rss_mb = u.maxrss_mb, u.tree_rss_mb
    row.files_out = len(arrived)
    if lat:
        row.p50_ms = statistics.median(lat)
        row.p99_ms = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
        row.extra["latency_ms"] = {"min": lat[0], "max": lat[-1], "mean": statistics.mean(lat)}
    if len(arrived) != len(files):
        row.status = "failed"
        row.note += f"; only {len(arrived)} of {len(files)} arrived"
    ctx.clean(rundir)
    return row


def _median_runs(fn, n: int) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    times = [fn() for _ in range(n)]
    return statistics.median(times), times


def startup(ctx: Context, state_dir: Path, rows: int, inbox_from: DataSet | None) -> Row:
    """exec -> READY=1 of `mediasortd run` on a catalog of `rows` rows (replay, sweep,
    counts, watcher, first inbox scan): cold (caches dropped) and warm (median of 3)."""
    waiting = inbox_from.count if inbox_from else 0
    row = Row(
        "catalog",
        "mediasortd run: start-up",
        "ours",
        note=f"{rows:,} catalog rows, "
        f"{waiting:,} files waiting in the inbox; exec to READY=1, warm median of 3",
    )
    row.extra["rows"] = rows
    rundir = ctx.rundir("catalog", "startup")
    cfg = ctx.config(rundir, state_dir=state_dir)
    if inbox_from is not None:
        link_tree(inbox_from.root, rundir / "inbox" / "waiting")
    usages: list[measure.Usage] = []

    def once() -> float:
        d = Daemon(ctx, cfg, rundir, "catalog-startup")
        try:
            return d.ready()
        finally:
            usages.append(d.stop())

    ctx.fair_start()
    cold = once()
    warm, runs = _median_runs(once, 3)
    row.wall = warm
    row.maxrss_mb = max(u.maxrss_mb for u in usages)
    row.tree_rss_mb = max(u.tree_rss_mb for u in usages)
    row.extra.update(cold_s=cold, warm_s=runs)
    row.note += f"; cold {cold:.2f} s"
    ctx.clean(rundir)
    return row


def status(ctx: Context, state_dir: Path, rows: int) -> list[Row]:
    """`mediasortd status` as a user runs it (a new process), cold and warm; the same
    query in-process (no interpreter start-up); and `mediasortd --version` (start-up only)."""
    rundir = ctx.rundir("catalog", "status")
    cfg = ctx.config(rundir, state_dir=state_dir)
    out = []

    def cli(*args: str) -> float:
        u = measure.run(ctx.mediasortd(cfg, *args), cwd=ctx.src)
        if u.rc != 0:
            raise RuntimeError(f"mediasortd {' '.join(args)} exited {u.rc}")
        usages.append(u)
        return u.wall

    usages: list[measure.Usage] = []
    row = Row(
        "catalog", "mediasortd status", "ours", note=f"{rows:,} rows; new process, warm median of 5"
    )
    ctx.fair_start()
    cold = cli("status")
    row.wall, runs = _median_runs(lambda: cli("status"), 5)
    row.cpu = statistics.median(u.cpu for u in usages[1:])
    row.maxrss_mb = max(u.maxrss_mb for u in usages)
    row.tree_rss_mb = row.maxrss_mb
    row.extra.update(cold_s=cold, warm_s=runs)
    row.note += f"; cold {cold:.2f} s"
    out.append(row)

    from daemon import config
    from daemon.app import report
    from daemon.store import db

    c = config.load(str(cfg))

    def query() -> float:
        t0 = time.perf_counter()
        conn = db.connect(c.catalog, readonly=True)
        try:
            report.status(c, conn)
        finally:
            conn.close()
        return time.perf_counter() - t0

    q = Row(
        "catalog",
        "status query (in-process)",
        "reference",
        note="report.status() incl. opening the catalog, warm median of 5",
    )
    q.wall, runs = _median_runs(query, 5)
    q.extra["warm_s"] = runs
    out.append(q)

    usages = []
    v = Row(
        "catalog",
        "mediasortd --version",
        "reference",
        note="interpreter + imports only: the part of `status` no query can save",
    )
    v.wall, runs = _median_runs(lambda: cli("--version"), 5)
    v.maxrss_mb = max(u.maxrss_mb for u in usages)
    v.extra["warm_s"] = runs
    out.append(v)
    ctx.clean(rundir)
    return out
