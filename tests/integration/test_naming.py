"""Library names shared by many files (`.N`): chosen in O(log n), never over a stranger's
file, never reused, right after a migration of an old catalog. Real SQLite files, real
folders, the real ingest for the end-to-end case."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import apsw
import pytest

from daemon.app import logs
from daemon.config import Config
from daemon.engine.ingest import Finished
from daemon.model import MediaInfo
from daemon.rules.layout import numbered
from daemon.store import catalog, db, journal, names, schema
from daemon.store.db import transaction
from tests.helpers import check_consistent, ingestor, jpeg_bytes, make_config, write

logs.configure("warning", "json")
LOG = logs.get()
WHEN = datetime(2024, 6, 3, 10, 11, 12)
P = "2024-06/2024-06-03 10.11.12.jpg"
INFO = MediaInfo(
    captured=WHEN,
    utc_offset=None,
    date_source="test",
    date_raw="",
    confidence="high",
    file_type="JPEG",
    mime="image/jpeg",
    kind="image",
    ext=".jpg",
)


Reserve = Callable[[apsw.Connection, bytes, str], str]  # names.free_name or free_stem


def _reserve(
    conn: apsw.Connection, library: Path, preferred: str, i: int, reserve: Reserve = names.free_name
) -> str:
    """Reserve a name and insert its row in one transaction, as ingest's decision does
    (free_name; free_stem for a RAW, JPEG or HEIC)."""
    with transaction(conn):
        rel = reserve(conn, os.fsencode(library), preferred)
        catalog.insert(
            conn,
            sha256=f"{i:064x}",
            size=1,
            path=rel,
            info=INFO,
            original_name=f"IMG_{i}.JPG",
            source=b"/in/%d" % i,
            imported_at=journal.now(),
            job_id=None,
        )
    return rel


def _statements(conn: apsw.Connection, fn: Callable[[], str]) -> tuple[str, int]:
    count = [0]

    def trace(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
        count[0] += 1
        return True

    conn.exec_trace = trace
    try:
        return fn(), count[0]
    finally:
        conn.exec_trace = None


@pytest.mark.parametrize("reserve", [names.free_name, names.free_stem])
def test_shared_name_costs_the_same_for_the_1000th_file(tmp_path: Path, reserve: Reserve) -> None:
    """The `.N` of the n-th file sharing a name (or a JPEG stem) takes as many
    statements as the 2nd (it took n before: quadratic over a day of WhatsApp images
    all at 00:00:00)."""
    library = tmp_path / "library"
    library.mkdir()
    conn = db.connect(tmp_path / "catalog.db")
    conn.execute("PRAGMA synchronous=OFF")  # statements are counted here, not durability
    names = []
    costs = []
    for i in range(1000):
        rel, n = _statements(conn, lambda: _reserve(conn, library, P, i, reserve))  # noqa: B023 (called at once)
        names.append(rel)
        costs.append(n)
    assert names == [numbered(P, n) for n in range(1000)]
    assert costs[999] == costs[2] <= 8, costs[:3] + costs[-3:]


def test_stray_file_at_the_next_name_is_never_overwritten(tmp_path: Path) -> None:
    """A file on disk that the catalog does not know (copied in by hand) sits at the
    very next candidate: the name after it is given, the stray stays as it was."""
    cfg, _ = make_config(tmp_path)
    first = {cfg.inbox / f"a{i}.jpg": jpeg_bytes(WHEN, i) for i in range(3)}
    for path, data in first.items():
        write(path, data)
    _import(cfg, first)
    stray = write(cfg.library / numbered(P, 3), b"someone else's")
    also = write(cfg.library / numbered(P, 4), b"and another")
    more = {cfg.inbox / f"b{i}.jpg": jpeg_bytes(WHEN, 10 + i) for i in range(2)}
    for path, data in more.items():
        write(path, data)
    dests = sorted(os.path.basename(r.job.dest or b"").decode() for r in _import(cfg, more))
    assert dests == ["2024-06-03 10.11.12.5.jpg", "2024-06-03 10.11.12.6.jpg"]
    assert stray.read_bytes() == b"someone else's" and also.read_bytes() == b"and another"
    stray.unlink()
    also.unlink()  # strays are not the catalog's: the shared check would name them
    check_consistent(cfg, {**first, **more}, move=True)


def _import(cfg: Config, files: dict[Path, bytes]) -> list[Finished]:
    with ingestor(cfg, log=LOG) as ing:
        out = [r for _, r in ing.take_many([os.fsencode(p) for p in sorted(files)], True)]
    assert all(isinstance(r, Finished) for r in out), out
    return out  # type: ignore[return-value]


def test_deleted_numbers_come_back_and_rows_put_there_are_skipped(tmp_path: Path) -> None:
    """Undo (a row deleted) frees its number, given again first (as after a crash, when
    a job is decided again); a row put at a later number by adopt or a rename is
    stepped over; a rolled-back reservation counts for nothing."""
    library = tmp_path / "library"
    library.mkdir()
    conn = db.connect(tmp_path / "catalog.db")
    for i in range(3):
        _reserve(conn, library, P, i)  # P, P.1, P.2
    with transaction(conn):  # undo of P.2
        entry = catalog.by_path(conn, numbered(P, 2))
        assert entry is not None
        catalog.delete(conn, entry.id)
    with transaction(conn):  # adopt catalogues a file that sits at P.4
        catalog.insert(
            conn,
            sha256="f" * 64,
            size=1,
            path=numbered(P, 4),
            info=INFO,
            original_name="x",
            source=b"/x",
            imported_at=journal.now(),
            job_id=None,
        )
    try:
        with transaction(conn):
            names.free_name(conn, os.fsencode(library), P)  # would be P.2
            raise RuntimeError("the decision failed")
    except RuntimeError:
        pass
    assert [_reserve(conn, library, P, 10 + i) for i in range(3)] == [
        numbered(P, 2),
        numbered(P, 3),
        numbered(P, 5),
    ]


def test_one_number_for_a_set_of_extensions(tmp_path: Path) -> None:
    """free_number for a RAW+JPEG stem: the first n free for every extension."""
    library = tmp_path / "library"
    library.mkdir()
    conn = db.connect(tmp_path / "catalog.db")
    raw = P.replace(".jpg", ".cr2")
    _reserve(conn, library, P, 0)  # P taken by a JPEG alone
    write(library / numbered(raw, 1), b"stray raw")  # and a stranger at raw.1
    with transaction(conn):
        n = names.free_number(conn, os.fsencode(library), [raw, P])
    assert n == 2
    with transaction(conn):  # both counters moved: each name alone goes on after 2
        assert names.free_name(conn, os.fsencode(library), raw) == numbered(raw, 3)
        assert names.free_name(conn, os.fsencode(library), P) == numbered(P, 3)


def test_migration_counts_the_numbers_already_in_an_old_catalog(tmp_path: Path) -> None:
    """A catalog made before the counters: the migration fills them from the rows, so
    the next file goes after the highest number at once."""
    path = tmp_path / "catalog.db"
    old = apsw.Connection(str(path))
    before = next(i for i, sql in enumerate(schema.MIGRATIONS) if "CREATE TABLE name_seq" in sql)
    with transaction(old):
        for sql in schema.MIGRATIONS[:before]:  # the schema before the counters
            old.execute(sql)
        old.execute(f"PRAGMA user_version={before}")
    other = "2024-06/2024-06-03 10.11.13.jpg"
    noext = "2024-06/2024-06-03 10.11.14"
    rows = (
        [numbered(P, n) for n in (0, 1, 2, 7)]
        + [numbered(other, n) for n in (0, 12)]
        + [numbered(noext, n) for n in (0, 3)]
        + ["2024-06/orphan.4.jpg", "2024-06/2024-06-03 10.11.15.jpg"]
    )
    with transaction(old):
        for i, rel in enumerate(rows):
            catalog.insert(
                old,
                sha256=f"{i:064x}",
                size=1,
                path=rel,
                info=INFO,
                original_name="x",
                source=b"/x",
                imported_at="t",
                job_id=None,
            )
    old.close()
    conn = db.connect(path)
    seq = {row[0]: row[1] for row in conn.execute("SELECT path, last FROM name_seq")}
    assert seq == {
        P: 7,
        other: 12,
        noext: 3,  # orphan.jpg is in no row; 10.11.15 is not numbered
        catalog.stem_key(P): 7,
        catalog.stem_key(other): 12,
        catalog.stem_key(noext): 3,
    }
    library = tmp_path / "library"
    library.mkdir()
    assert _reserve(conn, library, P, 100) == numbered(P, 8)
    assert _reserve(conn, library, "2024-06/orphan.jpg", 101) == "2024-06/orphan.jpg"
    assert _reserve(conn, library, "2024-06/orphan.jpg", 102) == "2024-06/orphan.1.jpg"
    assert _reserve(conn, library, "2024-06/orphan.jpg", 103) == "2024-06/orphan.2.jpg"
    assert _reserve(conn, library, "2024-06/orphan.jpg", 104) == "2024-06/orphan.3.jpg"
    assert _reserve(conn, library, "2024-06/orphan.jpg", 105) == "2024-06/orphan.5.jpg"
