"""The ingest protocol with real SQLite, real files and real ExifTool: naming, duplicates,
rejects, races, and a crash at every step (in-process, then replay)."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import pytest

from daemon.app import logs
from daemon.config import Config
from daemon.engine.hooks import Hooks
from daemon.engine.ingest import Finished, Result, Skipped
from daemon.model import Job, Outcome, Step
from daemon.store import db, journal
from tests.helpers import (
    AfterStep,
    check_consistent,
    ingestor,
    jpeg_bytes,
    make_config,
    sha,
    snapshot,
    tree_hashes,
    write,
)

logs.configure("warning", "json")
LOG = logs.get()
WHEN = datetime(2024, 6, 3, 10, 11, 12)


class Crash(BaseException):
    """Stands for the process dying right after a step was committed."""


def mixed_inbox(inbox: Path) -> dict[Path, bytes]:
    """Dated photos (two in the same second), a duplicate pair, text, an empty file."""
    files = {
        inbox / "IMG_0001.JPG": jpeg_bytes(WHEN, 1),
        inbox / "IMG_0002.JPG": jpeg_bytes(WHEN, 2),  # same second, other content
        inbox / "sub" / "IMG_0003.jpeg": jpeg_bytes(datetime(2023, 12, 31, 23, 59, 58), 3),
        inbox / "copy of IMG_0001.JPG": jpeg_bytes(WHEN, 1),  # duplicate content
        inbox / "notes.txt": b"not a photo\n",
        inbox / "empty.jpg": b"",
    }
    for path, data in files.items():
        write(path, data)
    return files


def run_all(
    cfg: Config,
    paths: Iterable[Path],
    *,
    move: bool,
    hook: Callable[[Job], None] = lambda job: None,
) -> list[Result]:
    with ingestor(cfg, log=LOG, hooks=AfterStep(hook)) as ing:
        # one batch, as a worker takes its share of a full queue
        return [r for _, r in ing.take_many([os.fsencode(p) for p in sorted(paths)], move)]


def job_of(r: Result) -> Job:
    """The job a result is about (a Skipped has none: the test fails, as r.job would)."""
    assert not isinstance(r, Skipped), r
    return r.job


def replay(cfg: Config) -> None:
    with ingestor(cfg, batch="replay", log=LOG) as ing:
        ing.replay()


def test_names_duplicates_and_rejects(tmp_path: Path) -> None:
    cfg, _ = make_config(tmp_path)
    files = mixed_inbox(cfg.inbox)
    results = run_all(cfg, files, move=True)
    outcomes = {job_of(r).source.decode().rsplit("/", 1)[1]: job_of(r).outcome for r in results}
    assert outcomes == {  # taken in sorted order: IMG_0001 before "copy of IMG_0001"
        "IMG_0001.JPG": Outcome.FILED,
        "IMG_0002.JPG": Outcome.FILED,
        "IMG_0003.jpeg": Outcome.FILED,
        "copy of IMG_0001.JPG": Outcome.DUPLICATE,
        "notes.txt": Outcome.REJECTED,
        "empty.jpg": Outcome.REJECTED,
    }
    library = tree_hashes(cfg.library)
    assert sorted(library) == [
        "2023-12/2023-12-31 23.59.58.jpeg",  # its own extension
        "2024-06/2024-06-03 10.11.12.1.jpg",
        "2024-06/2024-06-03 10.11.12.jpg",
    ]
    assert sorted(os.listdir(cfg.rejected)) == ["empty.jpg", "notes.txt"]
    assert len(os.listdir(cfg.duplicates)) == 1
    assert not any(p.exists() for p in files), "the inbox was not emptied"
    check_consistent(cfg, files, move=True)


def test_copy_mode_leaves_sources_and_second_run_files_nothing(tmp_path: Path) -> None:
    cfg, _ = make_config(tmp_path)
    files = mixed_inbox(cfg.inbox)
    first = run_all(cfg, files, move=False)
    assert sum(job_of(r).outcome is Outcome.FILED for r in first) == 3
    second = run_all(cfg, files, move=False)
    assert {job_of(r).outcome for r in second} == {Outcome.DUPLICATE, Outcome.REJECTED}
    assert all(p.read_bytes() == d for p, d in files.items())
    assert not cfg.duplicates.exists() and not cfg.rejected.exists()
    check_consistent(cfg, files, move=False)


def test_library_files_and_catalog_get_configured_modes(tmp_path: Path) -> None:
    cfg, _ = make_config(tmp_path, file_mode="0600", dir_mode="0700")
    write(cfg.inbox / "a.jpg", jpeg_bytes(WHEN, 7))
    run_all(cfg, [cfg.inbox / "a.jpg"], move=True)
    placed = cfg.library / "2024-06" / "2024-06-03 10.11.12.jpg"
    assert placed.stat().st_mode & 0o777 == 0o600
    assert placed.parent.stat().st_mode & 0o777 == 0o700
    # the catalog is the group's to read whatever file_mode says (README: the group)
    assert cfg.catalog.stat().st_mode & 0o777 == 0o640


def test_name_taken_on_disk_by_a_stranger_is_never_overwritten(tmp_path: Path) -> None:
    cfg, _ = make_config(tmp_path)
    stranger = write(cfg.library / "2024-06" / "2024-06-03 10.11.12.jpg", b"someone else's")
    write(cfg.inbox / "a.jpg", jpeg_bytes(WHEN, 8))
    [r] = run_all(cfg, [cfg.inbox / "a.jpg"], move=True)
    assert (job_of(r).dest or b"").endswith(b"2024-06-03 10.11.12.1.jpg")
    assert stranger.read_bytes() == b"someone else's"


class Recorder(Hooks):
    """Hooks that write down what the engine tells them."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Step]] = []
        self.results: list[Result] = []

    def after_step(self, job: Job) -> None:
        self.steps.append((os.path.basename(job.source).decode(), job.step))

    def on_result(self, result: Result) -> None:
        self.results.append(result)


def test_hooks_see_every_step_of_every_job_and_one_result_each(tmp_path: Path) -> None:
    """The seam: after each step of each job of a batch (the batch's jobs go through a
    step together), and once per path with what it became."""
    cfg, _ = make_config(tmp_path)
    files = mixed_inbox(cfg.inbox)
    hooks = Recorder()
    paths = [os.fsencode(p) for p in sorted(files)] + [os.fsencode(cfg.inbox / "gone.jpg")]
    with ingestor(cfg, log=LOG, hooks=hooks) as ing:
        ing.take_many(paths, True)
    photo = [s for name, s in hooks.steps if name == "IMG_0001.JPG"]
    assert photo == [Step.RECORDED, Step.COPIED, Step.DECIDED, Step.PLACED, Step.DONE]
    text = [s for name, s in hooks.steps if name == "notes.txt"]
    assert text == [Step.RECORDED, Step.COPIED, Step.DECIDED, Step.PLACED, Step.DONE]
    # lockstep: every job is decided before any is placed
    order = [s for _, s in hooks.steps]
    assert max(i for i, s in enumerate(order) if s is Step.DECIDED) < min(
        i for i, s in enumerate(order) if s is Step.PLACED
    )
    assert len(hooks.results) == len(paths)
    assert sum(isinstance(r, Skipped) for r in hooks.results) == 1  # gone.jpg
    assert all(isinstance(r, Finished) for r in hooks.results if not isinstance(r, Skipped))


def test_source_changed_during_copy_is_copied_again(tmp_path: Path) -> None:
    """The hook runs after RECORDED, before the copy: the file grows in between the
    record and the copy, and again right after the copy starts... simplest real case:
    it changes between two attempts; the job is retried, never filed half-written."""
    cfg, _ = make_config(tmp_path)
    src = write(cfg.inbox / "a.jpg", jpeg_bytes(WHEN, 9))
    final = jpeg_bytes(WHEN, 10)

    def grow(job: Job) -> None:
        if job.step is Step.RECORDED:
            src.write_bytes(final)  # rewritten after the job was recorded

    [r] = run_all(cfg, [src], move=True, hook=grow)
    assert isinstance(r, Finished) and r.job.outcome is Outcome.FILED
    assert r.job.sha256 == sha(final)
    check_consistent(cfg, {src: final}, move=True)


STEPS = [Step.RECORDED, Step.COPIED, Step.DECIDED, Step.PLACED]


@pytest.mark.parametrize("move", [True, False], ids=["move", "copy"])
@pytest.mark.parametrize("step", STEPS, ids=[s.value for s in STEPS])
@pytest.mark.parametrize(
    "victim", ["IMG_0002.JPG", "copy of IMG_0001.JPG", "notes.txt", "empty.jpg"]
)
def test_crash_at_every_step_then_replay(
    tmp_path: Path, step: Step, victim: str, move: bool
) -> None:
    """Crash right after `step` is committed for one file, restart (replay, then take the
    inbox again, as the daemon's start-up scan does): consistent, and replaying twice
    changes nothing."""
    cfg, _ = make_config(tmp_path)
    files = mixed_inbox(cfg.inbox)
    crashed: list[int] = []

    def hook(job: Job) -> None:
        if job.step is step and job.source.endswith(victim.encode()) and not crashed:
            crashed.append(job.id)
            raise Crash(step)

    with pytest.raises(Crash):
        run_all(cfg, files, move=move, hook=hook)
    replay(cfg)
    run_all(cfg, [p for p in files if p.exists()], move=move)
    check_consistent(cfg, files, move=move)
    before = snapshot(cfg)
    replay(cfg)
    assert snapshot(cfg) == before


def test_races_identical_content_and_identical_seconds(tmp_path: Path) -> None:
    """Six workers at once: 10 contents x 3 copies, all in the same second: one library
    copy per content, ten distinct names, nothing overwritten."""
    cfg, _ = make_config(tmp_path)
    files = {}
    for i in range(30):
        data = jpeg_bytes(WHEN, i % 10)
        files[write(cfg.inbox / f"f{i:02d}.jpg", data)] = data
    paths = sorted(files)
    results: list[Result] = []
    barrier = threading.Barrier(6)

    def worker(chunk: list[Path]) -> None:
        barrier.wait()
        results.extend(run_all(cfg, chunk, move=True))

    threads = [threading.Thread(target=worker, args=(paths[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = [job_of(r).outcome for r in results]
    assert None not in outcomes  # (sorted() of them raised on a None)
    assert outcomes.count(Outcome.FILED) == 10
    library = tree_hashes(cfg.library)
    assert len(library) == 10 and len(set(library.values())) == 10
    assert sorted(library) == sorted(
        ["2024-06/2024-06-03 10.11.12.jpg"]
        + [f"2024-06/2024-06-03 10.11.12.{n}.jpg" for n in range(1, 10)]
    )
    check_consistent(cfg, files, move=True)


def test_a_bad_file_never_blocks_the_others(tmp_path: Path) -> None:
    cfg, _ = make_config(tmp_path)
    files = {
        write(cfg.inbox / "junk.jpg", b"\x00\x01 garbage \x02"): b"\x00\x01 garbage \x02",
        write(cfg.inbox / "dup1.jpg", jpeg_bytes(WHEN, 5)): jpeg_bytes(WHEN, 5),
        write(cfg.inbox / "dup2.jpg", jpeg_bytes(WHEN, 5)): jpeg_bytes(WHEN, 5),
        write(cfg.inbox / "good.jpg", jpeg_bytes(WHEN, 6)): jpeg_bytes(WHEN, 6),
    }
    results = run_all(cfg, files, move=True)
    assert [job_of(r).outcome for r in results] == [
        Outcome.FILED,
        Outcome.DUPLICATE,
        Outcome.FILED,
        Outcome.REJECTED,
    ]
    check_consistent(cfg, files, move=True)
    conn = db.connect(cfg.catalog)
    try:
        assert journal.counts(conn)["filed"] == 2
    finally:
        conn.close()


def test_a_layout_that_would_leave_the_library_fails_the_file_not_the_library(
    tmp_path: Path,
) -> None:
    """Config loading refuses such a layout; should one get past it anyway, every path
    is checked before it is reserved: the job fails, the source stays, nothing is
    written outside the library (issue 16.2)."""
    cfg, _ = make_config(tmp_path)
    cfg = dataclasses.replace(cfg, layout="{year}/../../escaped/{month}{ext}")
    src = write(tmp_path / "inbox" / "a.jpg", jpeg_bytes(WHEN, 70))
    [result] = run_all(cfg, [src], move=True)
    assert isinstance(result, Finished) and result.job.outcome is Outcome.FAILED
    assert "'..'" in (result.job.error or "")
    assert src.exists() and not (tmp_path / "escaped").exists()
    assert tree_hashes(cfg.library) == {}
