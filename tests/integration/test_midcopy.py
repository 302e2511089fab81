"""The source changes, grows, shrinks or disappears while it is being copied (for real:
another thread writes to it during the copy). The job starts over later; what is filed is
always a complete, consistent version; the source is never removed unless its bytes are
safely placed."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from daemon.app import logs
from daemon.config import Config
from daemon.engine.ingest import Finished, Retry
from daemon.model import Job, Outcome
from tests.helpers import AfterStep, check_consistent, ingestor, jpeg_bytes, make_config, sha, write

logs.configure("warning", "json")
BIG = 256 << 20


def big_photo(path: Path) -> bytes:
    data = jpeg_bytes(datetime(2024, 1, 1, 12, 0, 0), 1)
    with open(path, "wb") as f:
        f.write(data)
        block = b"\x5a" * (1 << 20)
        f.writelines(block for _ in range(BIG >> 20))
    return data


@contextlib.contextmanager
def during_copy(staging: Path, action: Callable[[], object]) -> Iterator[None]:
    """Run `action` as soon as a staged copy is being written (again, until it returns
    true), for as long as the block runs; the thread is stopped and joined after it."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            if (
                staging.exists()
                and any(p.stat().st_size > 0 for p in staging.iterdir())
                and action()
            ):
                return
            stop.wait(0.001)  # a tight poll of the copy's progress, ended by `stop`

    t = threading.Thread(target=run)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def ingest_until_done(cfg: Config, path: Path) -> tuple[Finished, int]:
    with ingestor(cfg) as ing:
        result = ing.take(os.fsencode(path), True)
        retries = 0
        while isinstance(result, Retry):
            retries += 1
            assert os.listdir(cfg.staging) == [], "a partial copy was left in staging"
            result = ing.resume(result.job)
        assert isinstance(result, Finished)
        return result, retries


def test_source_grows_during_copy(tmp_path: Path) -> None:
    cfg, _ = make_config(tmp_path)
    src = tmp_path / "inbox" / "growing.jpg"
    big_photo(src)
    appended = []

    def grow() -> bool:
        with open(src, "ab") as f:
            f.write(b"more")
        appended.append(1)
        return len(appended) >= 3

    with during_copy(cfg.staging, grow):
        result, retries = ingest_until_done(cfg, src)
    assert retries >= 1, "the change during the copy was not noticed"
    final = result.job
    assert final.outcome is Outcome.FILED and final.size == BIG + len(
        jpeg_bytes(datetime(2024, 1, 1, 12, 0, 0), 1)
    ) + 4 * len(appended)
    [placed] = list(cfg.library.rglob("*.jpg"))
    assert placed.stat().st_size == final.size
    assert not src.exists()


def test_source_shrinks_during_copy(tmp_path: Path) -> None:
    cfg, _ = make_config(tmp_path)
    src = tmp_path / "inbox" / "shrinking.jpg"
    head = big_photo(src)

    def shrink() -> bool:
        os.truncate(src, len(head))
        return True

    with during_copy(cfg.staging, shrink):
        result, retries = ingest_until_done(cfg, src)
    assert retries >= 1
    assert result.job.outcome is Outcome.FILED and result.job.sha256 == sha(head)


def test_source_deleted_during_copy_is_filed_whole(tmp_path: Path) -> None:
    """Deleted while we read it: the open descriptor still reads every byte, so the
    complete file is filed; nothing half-copied, nothing lost."""
    cfg, _ = make_config(tmp_path)
    src = tmp_path / "inbox" / "deleted.jpg"
    big_photo(src)
    expected = sha(src.read_bytes())

    def delete() -> bool:
        src.unlink()
        return True

    with during_copy(cfg.staging, delete):
        result, _ = ingest_until_done(cfg, src)
    assert result.job.outcome is Outcome.FILED and result.job.sha256 == expected
    check_consistent(cfg, {}, move=True)


def test_source_replaced_by_another_file_is_not_removed(tmp_path: Path) -> None:
    """After the copy, a different file takes the source's name: it is left alone (and
    would be taken as a new job), never deleted in place of the one we filed."""
    cfg, _ = make_config(tmp_path)
    src = write(tmp_path / "inbox" / "a.jpg", jpeg_bytes(datetime(2024, 1, 1), 5))
    newer = jpeg_bytes(datetime(2024, 1, 2), 6)
    from daemon.model import Step

    def swap(job: Job) -> None:
        if job.step is Step.PLACED:
            tmp = src.with_name("a.new")
            tmp.write_bytes(newer)
            os.rename(tmp, src)

    with ingestor(cfg, hooks=AfterStep(swap)) as ing:
        result = ing.take(os.fsencode(src), True)
    assert isinstance(result, Finished) and result.job.outcome is Outcome.FILED
    assert src.read_bytes() == newer
    assert "left in place" in (result.job.error or "")
