"""The real `mediasortd import --move` (and `mediasortd run`) on powerfs (inbox, library
and catalog all on it),
with the power cut at random moments: after each cut it starts again on what survived,
until a run finishes; then the power is cut once more, mediasortd starts again on what
survived and finishes, and the shared check runs, plus stricter ones: every journal
destination exists, the library names are the expected ones, only the one duplicate is
quarantined, no input is left in the inbox (nobody changes them, so all must go), and
the symlink and the FIFO are in `rejected` and nowhere else.

A cut moment is the N-th mutating filesystem request of a run (N seeded and uniform over
the run's length, measured first); half the chains also "leak" unsynced changes to the
disk at random (see powerfs.py): everything a correct protocol must survive. The library
and state folders exist before the first run (as a package makes them), except in the
test of a first run.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from daemon.config import Config
from daemon.store import db
from tests.faults.powercut import PowerFS, unavailable
from tests.helpers import ROOT, check_consistent, jpeg_bytes, make_config, tree_hashes, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]

BASE = datetime(2022, 7, 1, 8, 0, 0)
PHOTOS = 10  # pairs share a second: names "HH.MM.SS.jpg" and "HH.MM.SS.1.jpg"
EXPECTED_NAMES = {
    f"2022-07/2022-07-01 {(BASE + timedelta(seconds=s)).strftime('%H.%M.%S')}{suffix}.jpg"
    for s in range(PHOTOS // 2)
    for suffix in ("", ".1")
}
SPECIALS = ("odd/link.jpg", "odd/pipe.jpg")  # rejected, moved as entries (renameat2)


@dataclass
class Chain:
    """One library on the mount: its config, its inputs, and the cuts it went through."""

    fs: PowerFS
    cfg: Config
    cfg_path: Path
    files: dict[Path, bytes]
    logs: Path
    skip_fsync: str | None = None
    daemon: bool = False  # `mediasortd run` (the start-up scan takes the inbox) instead
    runs: int = 0
    fired: list[str] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        fs: PowerFS,
        name: str,
        logs: Path,
        *,
        folders: bool = True,
        skip_fsync: str | None = None,
        daemon: bool = False,
    ) -> Chain:
        """Inputs in a fresh inbox, all durable; with `folders`, the library and the state
        folder exist (durably) before mediasortd first runs, as a package would make them."""
        base = fs.mnt / name
        base.mkdir()
        cfg, cfg_path = make_config(base)
        files: dict[Path, bytes] = {}
        for i in range(PHOTOS):
            when = BASE + timedelta(seconds=i // 2)
            files[cfg.inbox / f"cam/DSC_{i:04d}.JPG"] = jpeg_bytes(when, i)
        files[cfg.inbox / "again/DSC_0000.JPG"] = jpeg_bytes(BASE, 0)  # a duplicate
        files[cfg.inbox / "readme.txt"] = b"not a photo"  # rejected after copying
        files[cfg.inbox / "zero.jpg"] = b""  # rejected: empty
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (cfg.inbox / "odd").mkdir()
        os.symlink("../readme.txt", cfg.inbox / SPECIALS[0])
        os.mkfifo(cfg.inbox / SPECIALS[1])
        if folders:
            cfg.library.mkdir()
            cfg.state_dir.mkdir()
        fs.sync()
        logs.mkdir(parents=True, exist_ok=True)
        return cls(fs, cfg, cfg_path, files, logs, skip_fsync, daemon)

    def start(self, **extra_env: str) -> subprocess.Popen[bytes]:
        self.runs += 1
        module, env = "daemon", {**os.environ, **extra_env}
        if self.skip_fsync:
            module, env["MEDIASORTD_TEST_SKIP_FSYNC"] = "tests.faults.nofsync", self.skip_fsync
        command = ["run"] if self.daemon else ["import", "--move", str(self.cfg.inbox)]
        with open(self.logs / f"run-{self.runs}.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", module, "--config", str(self.cfg_path), *command],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )  # its own process group: the cut kills ExifTool too

    def run(
        self, cut_at: int | None = None, leak: float = 0.0, seed: int = 0, *, cut: bool = True
    ) -> int | None:
        """One run; with `cut_at`, the power goes at that request if the run gets that
        far. Returns the run's number of mutating requests if it finished, else None.
        The power is then cut (unless `cut` is False) and the filesystem mounted again."""
        if cut_at is not None:
            self.fs.arm(cut_at, leak, seed)
        before = self.fs.stats()["ops"]
        proc = self.start()
        emptied = self.watch_inbox() if self.daemon else threading.Event()
        try:
            wait_for(
                lambda: proc.poll() is not None or self.fs.fired() or emptied.is_set(),
                120,
                "the run or the cut",
            )
            if self.daemon and proc.poll() is None and not self.fs.fired():
                proc.terminate()  # the inbox is empty: stopped as systemd stops it
                wait_for(
                    lambda: proc.poll() is not None or self.fs.fired(),
                    60,
                    "the daemon to stop or the cut",
                )
        except BaseException:
            self.fs.cut(proc)  # reaps it: no process outlives the test
            raise
        fired = self.fs.fired()
        ops = None if fired else self.fs.stats()["ops"] - before
        if cut or fired:
            self.fs.cut(proc)
            self.fs.mount()
        if fired:
            self.fired.append(fired)
            return None
        assert proc.returncode == 0, f"{self.log_tail()}\npowerfs:\n{self.fs.server_log()}"
        return ops

    def watch_inbox(self) -> threading.Event:
        """Set once the daemon is up (its signal handlers too) and every input has left
        the inbox. Looked at from a thread of its own: a look at the mount blocks once
        the cut freezes the server, and ends (with an error) only when the cut kills it."""
        emptied = threading.Event()
        log, run = self.logs / f"run-{self.runs}.log", self.runs
        inputs = [*self.files, *(self.cfg.inbox / s for s in SPECIALS)]

        def state() -> str | None:
            if self.runs != run or self.fs.fired():
                return "over"
            if b'"daemon.ready"' in log.read_bytes() and not any(
                os.path.lexists(p) for p in inputs
            ):
                return "emptied"
            return None

        def look() -> None:
            try:
                if wait_for(state, 150, "the inbox to empty") == "emptied":
                    emptied.set()
            except (OSError, AssertionError):
                return  # the mount went with the power, or run() timed out first

        threading.Thread(target=look, daemon=True).start()
        return emptied

    def restart_and_check(self) -> None:
        """After the last cut: start again on what survived, let it finish, check."""
        assert self.run(cut=False) is not None
        self.check()

    def log_tail(self) -> str:
        return (self.logs / f"run-{self.runs}.log").read_text(errors="replace")[-3000:]

    def check(self) -> None:
        """The shared check, and stricter ones."""
        cfg = self.cfg
        check_consistent(cfg, self.files, move=True)
        assert set(tree_hashes(cfg.library)) == EXPECTED_NAMES
        quarantined = tree_hashes(cfg.duplicates, True) if cfg.duplicates.exists() else {}
        assert len(quarantined) == 1, f"quarantine holds {sorted(quarantined)}: one duplicate"
        conn = db.connect(cfg.catalog)
        try:
            for source, outcome, dest in conn.execute(
                "SELECT source, outcome, dest FROM jobs WHERE step = 'done'"
            ):
                if dest is not None:
                    assert os.path.lexists(dest), (
                        f"{os.fsdecode(source)}: {outcome}, but {os.fsdecode(dest)} is not there"
                    )
        finally:
            conn.close()
        left = [str(p) for p in self.files if os.path.lexists(p)]
        assert not left, f"still in the inbox: {left}"  # nobody changed them: all must go
        for special in SPECIALS:
            name = os.path.basename(special)
            at = [os.path.lexists(cfg.inbox / special), os.path.lexists(cfg.rejected / name)]
            assert at == [False, True], f"{special}: at its source, in rejected: {at}"


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[PowerFS]:
    with PowerFS(tmp_path / "powerfs") as f:
        f.mount()
        yield f


def cut_run_to_the_end(
    chain: Chain, rng: random.Random, length: int, cuts: int, leak: float
) -> None:
    """Cut `chain`'s runs at random moments (`cuts` at most), then let one finish (and
    cut the power after it too)."""
    remaining = length
    while len(chain.fired) < cuts:
        at = rng.randint(1, max(remaining, 20))
        if chain.run(at, leak, rng.randrange(1 << 30)) is not None:
            return  # finished before the cut point: that was the last run
        remaining -= at
    assert chain.run() is not None


@pytest.mark.slow
def test_power_cut_at_random_moments_loses_nothing(fs: PowerFS, tmp_path: Path) -> None:
    """30+ power cuts at random moments of `import --move`, each followed by a restart
    on what survived; every chain ends with a cut after a finished run and the checks."""
    rng = random.Random(20261126)
    started = time.monotonic()
    first = Chain.create(fs, "chain-0", tmp_path / "logs-0")
    length = first.run()  # no cut during the run: the cut after it must keep everything
    assert length is not None and length > 100
    first.restart_and_check()
    total, chains = 0, 0
    while total < 30:
        chains += 1
        leak = 0.0 if chains % 2 else 0.3
        chain = Chain.create(fs, f"chain-{chains}", tmp_path / f"logs-{chains}")
        cut_run_to_the_end(chain, rng, length, cuts=rng.randint(3, 6), leak=leak)
        try:
            chain.restart_and_check()
        except AssertionError as e:
            raise AssertionError(
                f"chain {chains} (leak {leak}), cuts at {chain.fired}, st_dev {fs.devs}: {e}"
            ) from e
        total += len(chain.fired)
        assert chains < 20, "the cuts keep missing the runs"
    print(f"{total} cuts in {chains} chains, {time.monotonic() - started:.1f}s")


@pytest.mark.slow
def test_power_cut_while_the_daemon_files_loses_nothing(fs: PowerFS, tmp_path: Path) -> None:
    """The same cuts on `mediasortd run` (its start-up scan takes the inbox; stopped with
    SIGTERM once the inbox is empty): the watcher, the queue and the workers' lockstep
    batches on top of the same steps."""
    rng = random.Random(20261127)
    first = Chain.create(fs, "daemon-0", tmp_path / "logs-0", daemon=True)
    length = first.run()
    assert length is not None and length > 100
    first.restart_and_check()
    total, chains = 0, 0
    while total < 10:
        chains += 1
        chain = Chain.create(fs, f"daemon-{chains}", tmp_path / f"logs-{chains}", daemon=True)
        cut_run_to_the_end(
            chain, rng, length, cuts=rng.randint(2, 4), leak=0.0 if chains % 2 else 0.3
        )
        try:
            chain.restart_and_check()
        except AssertionError as e:
            raise AssertionError(f"daemon chain {chains}, cuts at {chain.fired}: {e}") from e
        total += len(chain.fired)
        assert chains < 10, "the cuts keep missing the runs"


@pytest.mark.parametrize("skip", ["copy", "place", "move", "retire"])
def test_a_missing_fsync_is_caught(fs: PowerFS, tmp_path: Path, skip: str) -> None:
    """The same cuts, with one of mediasortd's fsyncs taken out (tests/faults/nofsync.py):
    the checks must find a lost, emptied or misplaced file."""
    chain = Chain.create(fs, "chain", tmp_path / "logs", skip_fsync=skip)
    rng = random.Random(skip)
    assert chain.run(rng.randint(100, 600)) is None, "the cut came after the end"
    assert chain.run() is not None
    with pytest.raises(AssertionError) as caught:
        chain.restart_and_check()
    print(f"missing {skip} fsync caught (cut at {chain.fired}): {caught.value}")


def test_a_first_run_makes_its_own_folders_durable(fs: PowerFS, tmp_path: Path) -> None:
    chain = Chain.create(fs, "fresh", tmp_path / "logs", folders=False)
    assert chain.run() is not None
    chain.restart_and_check()


def test_a_new_device_number_after_the_cut(fs: PowerFS, tmp_path: Path) -> None:
    chain = Chain.create(fs, "chain", tmp_path / "logs")
    # the 5th job to be placed (a regular file: only 2 are not) is killed before its
    # source is removed
    proc = chain.start(MEDIASORTD_TEST_KILL_AT="placed:5")
    assert proc.wait(60) == -9, chain.log_tail()
    fs.cut(proc)
    fs.mount(new_device=True)  # the same disk, with another device number after the boot
    assert fs.devs[-1] != fs.devs[-2]
    assert chain.run() is not None
    chain.restart_and_check()
