"""Shared test helpers: real media files, configs, the real CLI, and the one consistency
check every crash test ends with."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import apsw
import pytest
from PIL import Image

from daemon import config
from daemon.app import logs, report
from daemon.engine.hooks import NO_HOOKS, Hooks
from daemon.engine.ingest import Ingestor
from daemon.files.dirs import make_dirs
from daemon.media.metadata import Reader
from daemon.model import Job, Outcome, Step
from daemon.store import catalog, db, journal

ROOT = Path(__file__).resolve().parents[1]


def jpeg_bytes(when: datetime | None, seed: int, size: int = 16) -> bytes:
    """A small real JPEG, distinct per seed, with EXIF DateTimeOriginal when `when`."""
    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), (rng.randrange(256), rng.randrange(256), seed % 256))
    for _ in range(8):
        img.putpixel(
            (rng.randrange(size), rng.randrange(size)),
            (rng.randrange(256), rng.randrange(256), rng.randrange(256)),
        )
    exif = Image.Exif()
    if when is not None:
        exif.get_ifd(0x8769)[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")
    exif[0x010E] = f"mediasortd test image {seed}"  # ImageDescription: unique bytes
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif.tobytes(), quality=90)
    return out.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def rot(path: Path) -> None:
    """One flipped bit, as a failing disk does it: size and mtime stay what they were."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_config(tmp: Path, **ingest: Any) -> tuple[config.Config, Path]:
    """A config under `tmp` (inbox, library, state) and its TOML file for subprocesses."""
    lines = [
        "[paths]",
        f'inbox = "{tmp}/inbox"',
        f'library = "{tmp}/library"',
        f'state_dir = "{tmp}/state"',
        "[ingest]",
        "workers = 3",
        "settle_seconds = 0.2",
    ]
    for k, v in ingest.items():
        lines.append(f"{k} = {v!r}".replace("'", '"') if isinstance(v, str) else f"{k} = {v}")
    lines += ["[logging]", 'format = "json"', 'level = "info"']
    text = "\n".join(dict.fromkeys(lines)) + "\n"  # later keys win only if not duplicated
    path = tmp / "config.toml"
    path.write_text(_dedupe(text))
    (tmp / "inbox").mkdir(exist_ok=True)
    return config.load(str(path)), path


def _dedupe(text: str) -> str:
    """Let keyword overrides replace the defaults written above them."""
    out: list[str] = []
    section = ""
    seen: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        if line.startswith("["):
            section = line
            out.append(line)
            continue
        key = line.split("=")[0].strip()
        if (section, key) in seen:
            out[seen[(section, key)]] = line
            continue
        seen[(section, key)] = len(out)
        out.append(line)
    return "\n".join(out) + "\n"


def cli_argv(cfg_path: Path, *args: str, backoff: float | None = None) -> list[str]:
    """argv for the real `mediasortd` that works as any user (no dependence on the
    venv's console script or on the caller's working directory). `backoff`: an import's
    first wait before retrying a file, in seconds (rules.retry.Backoff.base, 0.5), for a
    test that need not wait the real backoff out."""
    policy = (
        ""
        if backoff is None
        else "from daemon.rules.retry import Backoff, Policy; "
        f"policy = Policy(backoff=Backoff(base={backoff!r})); "
    )
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); {policy}"
        "from daemon.app.cli import main; "
        f"sys.exit(main({'policy=policy' if policy else ''}))"
    )
    return [sys.executable, "-c", code, "--config", str(cfg_path), *args]


def cli(
    cfg_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """The real `mediasortd` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(cfg_path), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=check,
    )


POLL = 0.02  # how often wait_for and holds look


def wait_for(
    pred: Callable[[], Any], timeout: float = 30.0, what: str | Callable[[], str] = "condition"
) -> Any:
    """Poll `pred` until it is truthy, against a deadline (never a fixed sleep). A
    callable `what` describes the state at the moment the deadline passes."""
    end = time.monotonic() + timeout
    while True:
        result = pred()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what() if callable(what) else what}"
            )
        time.sleep(POLL)


def holds(pred: Callable[[], Any], seconds: float, what: str) -> None:
    """Check, polling like wait_for, that `pred` stays truthy for `seconds`: for what must
    not happen during a period (nothing filed while a writer stalls)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert pred(), what
        time.sleep(POLL)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs mounted at `path`: a real filesystem that fills up (root only;
    skips otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def tree_hashes(root: Path, hidden: bool = False) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not hidden and any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and not p.is_symlink():
            out[str(rel)] = sha(p.read_bytes())
    return out


def rows(cfg: config.Config, sql: str) -> list[tuple[Any, ...]]:
    """The rows `sql` selects from cfg's catalog, opened read-only."""
    conn = apsw.Connection(str(cfg.catalog), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def snapshot(cfg: config.Config) -> tuple[Any, ...]:
    """Everything replay could change: every file under inbox and library, the tables."""
    conn = db.connect(cfg.catalog)
    try:
        files = conn.execute("SELECT * FROM files ORDER BY id").fetchall()
        jobs = conn.execute(
            "SELECT id, step, outcome, dest, error FROM jobs ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return (tree_hashes(cfg.inbox, True), tree_hashes(cfg.library, True), files, jobs)


def idle(cfg: config.Config) -> bool:
    """No unfinished job in the journal (a daemon commits DONE just after the source is
    gone, so an empty inbox alone can be a moment early)."""
    conn = db.connect(cfg.catalog)
    try:
        return journal.pending(conn) == 0
    finally:
        conn.close()


def check_consistent(cfg: config.Config, inputs: dict[Path, bytes], *, move: bool) -> None:
    """The one consistency check every crash test ends with.

    - every catalog row's file exists with its hash; no library file lacks a row;
    - staging is empty; no job is unfinished;
    - every input is in exactly one place: the library (or, for a duplicate, the
      library already had its bytes), quarantine, rejected, or still at its source;
      nothing is in the library twice.
    """
    conn = db.connect(cfg.catalog)
    try:
        rep = report.verify(cfg, conn, deep=True)
        assert rep.ok, rep.as_dict()
        assert journal.unfinished(conn) == []
        # the tallies the triggers keep agree with counting the rows
        direct = dict(
            conn.execute("SELECT outcome, count(*) FROM jobs WHERE step = 'done' GROUP BY outcome")
        )
        assert {k: v for k, v in journal.counts(conn).items() if v} == direct
        assert catalog.totals(conn) == dict(
            zip(
                ("files", "bytes"),
                conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM files").fetchall()[0],
            )
        )
        assert not cfg.staging.exists() or os.listdir(cfg.staging) == []
        rows = conn.execute("SELECT sha256, path FROM files").fetchall()
        # a sidecar's row is keyed <sha256>:<photo> when another photo's has its bytes
        catalog_shas = {catalog.content_sha256(str(r[0])): r[1] for r in rows}
        library = tree_hashes(cfg.library)
        assert sorted(library.values()) == sorted(
            catalog.content_sha256(str(r[0])) for r in rows
        ), "a file filed twice (or one lacks its row)"
        assert set(library.values()) == set(catalog_shas)
        quarantined = tree_hashes(cfg.duplicates, True) if cfg.duplicates.exists() else {}
        rejected = tree_hashes(cfg.rejected, True) if cfg.rejected.exists() else {}
        for path, data in inputs.items():
            h = sha(data)
            at_source = path.exists() and not path.is_symlink() and sha(path.read_bytes()) == h
            jobs = conn.execute(
                "SELECT outcome, step FROM jobs WHERE source = ? ORDER BY id", (os.fsencode(path),)
            ).fetchall()
            outcomes = {o for o, s in jobs if s == Step.DONE.value}
            if not move:
                assert at_source, f"{path}: an import without --move touched its source"
                if Outcome.FILED.value in outcomes or Outcome.DUPLICATE.value in outcomes:
                    assert h in catalog_shas, f"{path}: filed but not in the library"
                continue
            places = [
                at_source,
                h in catalog_shas and not at_source,
                h in quarantined.values() and not at_source and h not in catalog_shas,
                h in rejected.values() and not at_source,
            ]
            if h in catalog_shas:
                assert not at_source or outcomes & {Outcome.FAILED.value} or not outcomes, (
                    f"{path}: in the library and still in the inbox ({outcomes})"
                )
            assert any(places), f"{path}: lost ({outcomes})"
        n_quarantine_jobs = conn.execute(  # less those whose copy an undo put back
            "SELECT count(*) FROM jobs j WHERE outcome = 'duplicate' AND dest IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM undos u WHERE u.job_id = j.id AND u.step = 'done' "
            "AND u.outcome IN ('restored', 'removed'))"
        ).fetchall()[0][0]
        assert len(quarantined) == n_quarantine_jobs, "quarantine holds a copy no job made"
    finally:
        conn.close()


class AfterStep(Hooks):
    """Hooks that call `fn` after each step of an ingest job (in-process crash tests)."""

    def __init__(self, fn: Callable[[Job], None]) -> None:
        self.fn = fn

    def after_step(self, job: Job) -> None:
        self.fn(job)


@contextlib.contextmanager
def ingestor(
    cfg: config.Config, *, batch: str = "t", hooks: Hooks = NO_HOOKS, log: Any = None
) -> Iterator[Ingestor]:
    """An Ingestor as a worker of the daemon has one: its own catalog connection and
    ExifTool, writing through the group committer; the staging folder made (unless a
    test put something else there)."""
    committer = db.Committer(cfg.catalog)
    conn = db.connect(cfg.catalog)
    reader = Reader(timezone="UTC")
    try:
        if not os.path.lexists(cfg.staging):  # workers start at once: the daemon's make_dirs
            make_dirs(os.fsencode(cfg.staging), 0o700)
        yield Ingestor(
            cfg, conn, reader, batch=batch, log=log or logs.get(), hooks=hooks, committer=committer
        )
    finally:
        reader.close()
        conn.close()
        committer.close()
