"""Exercise, under the unit's sandbox, every kind of system call mediasortd makes.

test_unit.py runs this with the project's venv python as a transient Type=notify unit
(`systemd-run -p ...` with the sandboxing properties of packaging/systemd/mediasortd.service),
so that a too-strict SystemCallFilter=, MemoryDenyWriteExecute= or ProcSubset= shows up
as a failed check with its OS error, independently of the daemon's own code.
Usage: python sandbox_probe.py INBOX LIBRARY STATE_DIR JPEG. Prints one line per check
("ok NAME" or "FAIL NAME: error") and exits 1 if any check failed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import queue
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

inbox, library, state_dir, jpeg = (Path(a) for a in sys.argv[1:5])
failed: list[str] = []


def check(name: str) -> Callable[[Callable[[], object]], None]:
    def run(fn: Callable[[], object]) -> None:
        try:
            detail = fn()
            print(f"ok {name}" + (f": {detail}" if detail else ""), flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure, go on
            failed.append(name)
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)

    return run


@check("sd_notify READY=1")
def _notify() -> None:
    from systemd import daemon  # type: ignore[import-untyped]

    daemon.notify("READY=1\nSTATUS=probing")
    daemon.notify("WATCHDOG=1")


@check("journal.send with fields")
def _journal() -> None:
    from systemd import journal

    journal.send("probe", EVENT="probe.started", SHA256="0" * 64, SYSLOG_IDENTIFIER="probe")


@check("sqlite3 WAL (mmap of -shm), two connections")
def _sqlite() -> str:
    db = state_dir / "probe.db"
    a = sqlite3.connect(db)
    mode = a.execute("pragma journal_mode=wal").fetchone()[0]
    a.execute("pragma synchronous=full")
    a.execute("create table if not exists t(x)")
    a.execute("insert into t values (1)")
    a.commit()
    b = sqlite3.connect(db)
    n = b.execute("select count(*) from t").fetchone()[0]
    a.execute("pragma wal_checkpoint(truncate)")
    a.close()
    b.close()
    return f"journal_mode={mode} rows={n}"


@check("apsw WAL + mmap_size")
def _apsw() -> str:
    import apsw

    con = apsw.Connection(str(state_dir / "probe-apsw.db"))
    mode = con.execute("pragma journal_mode=wal").fetchall()[0][0]
    con.execute("pragma mmap_size=268435456")
    con.execute("create table if not exists t(x); insert into t values (1)")
    con.close()
    return f"journal_mode={mode}"


@check("watchdog (inotify) sees a new file")
def _inotify() -> str:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    seen: queue.Queue[str] = queue.Queue()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            seen.put(f"{event.event_type} {event.src_path!s}")

    obs = Observer()
    obs.schedule(Handler(), str(inbox), recursive=True)
    obs.start()
    try:
        (inbox / "probe-inotify.txt").write_text("x")
        got = seen.get(timeout=5)
    finally:
        obs.stop()
        obs.join(5)
        (inbox / "probe-inotify.txt").unlink()
    return f"{type(obs).__name__}: {got}"


@check("copy with fadvise + fsync, link, renameat2(NOREPLACE), fsync dir, unlink")
def _files() -> str:
    staging = library / ".staging-probe"
    staging.mkdir(exist_ok=True)
    src = inbox / "probe.jpg"
    shutil.copyfile(jpeg, src)
    tmp = staging / "probe.jpg.part"
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        os.posix_fadvise(fin.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while chunk := fin.read(1 << 20):
            h.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fchmod(fout.fileno(), 0o640)
        os.fsync(fout.fileno())
        os.fdatasync(fout.fileno())
        os.posix_fadvise(fin.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    dest_dir = library / "2000-01"
    dest_dir.mkdir(mode=0o750, exist_ok=True)
    dest = dest_dir / "probe.jpg"
    os.link(tmp, dest)  # place without overwriting
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    at_fdcwd, rename_noreplace = -100, 1
    other = dest_dir / "probe-renamed.jpg"
    if libc.renameat2(at_fdcwd, bytes(dest), at_fdcwd, bytes(other), rename_noreplace) != 0:
        raise OSError(ctypes.get_errno(), f"renameat2: {os.strerror(ctypes.get_errno())}")
    os.replace(other, dest)
    os.utime(dest, (946684800, 946684800))
    fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
    os.statvfs(library)
    for p in (tmp, dest, src):
        p.unlink()
    dest_dir.rmdir()
    staging.rmdir()
    return h.hexdigest()[:12]


@check("openat2 RESOLVE_BENEATH|NO_SYMLINKS, fstatat/openat/unlinkat on a folder fd, mknodat FIFO")
def _beneath() -> str:
    class OpenHow(ctypes.Structure):
        _fields_ = [
            ("flags", ctypes.c_uint64),
            ("mode", ctypes.c_uint64),
            ("resolve", ctypes.c_uint64),
        ]

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.syscall.restype = ctypes.c_long
    sub = inbox / "probe-sub"
    sub.mkdir(exist_ok=True)
    (sub / "f").write_bytes(b"x")
    root = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY)
    try:
        how = OpenHow(os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0, 0x02 | 0x04 | 0x08)
        fd = libc.syscall(
            ctypes.c_long(437),
            ctypes.c_int(root),
            ctypes.c_char_p(b"probe-sub"),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        how_opened = "openat2"
        if fd < 0:
            err = ctypes.get_errno()
            if err not in (errno.ENOSYS, errno.EPERM):  # the daemon falls back on these
                raise OSError(err, f"openat2: {os.strerror(err)}")
            how_opened = f"openat2 refused ({errno.errorcode[err]}): O_NOFOLLOW walk"
            fd = os.open("probe-sub", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
        os.stat("f", dir_fd=fd, follow_symlinks=False)
        os.close(os.open("f", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd))
        os.mknod("fifo", 0o600 | 0o010000, dir_fd=fd)
        os.unlink("fifo", dir_fd=fd)
        os.unlink("f", dir_fd=fd)
        os.fsync(fd)
        os.close(fd)
        os.rmdir("probe-sub", dir_fd=root)
    finally:
        os.close(root)
    return how_opened


@check("fcntl read lease (F_SETLEASE/F_GETLEASE, F_SETSIG) on a file of another owner")
def _lease() -> str:
    import fcntl
    import signal

    path = inbox / "probe-lease"
    path.write_bytes(b"x")
    try:
        os.chown(path, 0, 0)  # someone else's file: the lease needs CAP_LEASE
        owner = "root's"
    except OSError:
        owner = "our own"
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, 10, signal.SIGURG)  # F_SETSIG
        fcntl.fcntl(fd, 1024, 0)  # F_SETLEASE F_RDLCK
        if fcntl.fcntl(fd, 1025) != 0:  # F_GETLEASE
            raise OSError("the lease is not held")
    finally:
        os.close(fd)
        path.unlink()
    return f"leased {owner} file"


@check("exiftool (perl) child process")
def _exiftool() -> str:
    out = subprocess.run(
        ["/usr/bin/exiftool", "-json", "-n", "-DateTimeOriginal", "-MIMEType", str(jpeg)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    info = json.loads(out)[0]
    # The daemon runs one ExifTool per worker in -stay_open mode, through
    # `setpriv --pdeathsig KILL` (setpriv calls capset: the filter must allow it).
    p = subprocess.Popen(
        [
            "setpriv",
            "--pdeathsig",
            "KILL",
            "--",
            "/usr/bin/exiftool",
            "-stay_open",
            "True",
            "-@",
            "-",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(f"-json\n{jpeg}\n-execute\n")
    p.stdin.flush()
    lines = []
    while (line := p.stdout.readline()) and not line.startswith("{ready"):
        lines.append(line)
    p.stdin.write("-stay_open\nFalse\n")
    p.stdin.flush()
    p.wait(10)
    return (
        f"{info.get('MIMEType')} {info.get('DateTimeOriginal')}; stay_open ok ({len(lines)} lines)"
    )


@check("threads, os.cpu_count, monotonic clock")
def _threads() -> str:
    results: list[int] = []
    ts = [threading.Thread(target=results.append, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    time.monotonic()
    return f"{len(results)} threads, cpu_count={os.cpu_count()}"


@check("ctypes callback (libffi closure under MemoryDenyWriteExecute)")
def _ffi_closure() -> None:
    cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert cb(1) == 2


print(f"uid={os.getuid()} gid={os.getgid()} umask={os.umask(0o027):04o}", flush=True)
sys.exit(1 if failed else 0)
