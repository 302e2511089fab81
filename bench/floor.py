"""The floor: what moving the same bytes durably costs on this disk (`cp -r` + `sync`),
and for reference what hashing them costs (`sha256sum`, and hashlib in one process)."""

from __future__ import annotations

import shlex

from . import measure
from .context import Context, CpuWatch, Row
from .data import DataSet

HASHLIB = """
import hashlib, os, sys
buf = bytearray(1 << 20); view = memoryview(buf)
for top, dirs, files in os.walk(sys.argv[1]):
    for name in files:
        h = hashlib.sha256()
        with open(os.path.join(top, name), "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
"""


def cp_sync(ctx: Context, ds: DataSet) -> Row:
    row = Row(ds.name, "cp -r + sync", "floor", ds.count, ds.bytes)
    rundir = ctx.rundir(ds.name, "cp")
    ctx.fair_start(ds.root)
    cpu = CpuWatch()
    u = measure.run(["cp", "-r", str(ds.root), str(rundir / "copy")])
    row.take(u, measure.timed_sync())
    row.others_cpu = cpu.others(row.cpu)
    row.files_out = measure.count_files(rundir / "copy")
    row.ratio = 1.0
    ctx.clean(rundir)
    return row


def sha256sum(ctx: Context, ds: DataSet) -> Row:
    row = Row(
        ds.name, "sha256sum", "reference", ds.count, ds.bytes, note="Debian coreutils, one process"
    )
    ctx.fair_start(ds.root, creates=False)
    cpu = CpuWatch()
    cmd = f"find {shlex.quote(str(ds.root))} -type f -print0 | xargs -0 sha256sum >/dev/null"
    row.take(measure.run(cmd, shell=True))
    row.others_cpu = cpu.others(row.cpu)
    return row


def hashlib_read(ctx: Context, ds: DataSet) -> Row:
    row = Row(
        ds.name,
        "hashlib sha256",
        "reference",
        ds.count,
        ds.bytes,
        note="Python hashlib, one thread, 1 MiB reads",
    )
    ctx.fair_start(ds.root, creates=False)
    cpu = CpuWatch()
    row.take(measure.run([ctx.python, "-c", HASHLIB, str(ds.root)]))
    row.others_cpu = cpu.others(row.cpu)
    return row
