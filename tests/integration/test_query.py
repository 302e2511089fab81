"""`find`, `history` and `status` on a real catalog built by real imports (the real CLI):
every kind of WHAT, the history filters, and the status dashboard as a user reads it."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from daemon import config
from daemon.app import lookup
from daemon.store import db, query, timeline, times
from tests.helpers import cli, jpeg_bytes, make_config, sha, write

JUNE = datetime(2024, 6, 3, 10, 11, 12)


@dataclass
class Library:
    cfg: config.Config
    cfg_path: Path
    tmp: Path
    data: dict[str, bytes]
    batches: list[str]  # oldest first


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Library:
    """Two real imports: a card moved in (filed, same-second pair, a duplicate, a reject),
    then a folder imported in place (a new file and a duplicate)."""
    tmp = tmp_path_factory.mktemp("query")
    cfg, cfg_path = make_config(tmp, workers=1)  # files taken in name order: no races
    data = {
        "IMG_0001.JPG": jpeg_bytes(JUNE, 1),
        "IMG_0002.JPG": jpeg_bytes(JUNE, 2),
        "IMG_0010.jpg": jpeg_bytes(datetime(2024, 7, 1, 9, 0, 0), 10),
        "copy.JPG": jpeg_bytes(JUNE, 1),
        "notes.txt": b"not a photo\n",
        "DSC_0100.JPG": jpeg_bytes(datetime(2023, 12, 31, 23, 59, 58), 100),
        "again.jpg": jpeg_bytes(JUNE, 1),
    }
    for name in ("IMG_0001.JPG", "IMG_0002.JPG", "IMG_0010.jpg", "copy.JPG", "notes.txt"):
        write(tmp / "card1" / name, data[name])
    for name in ("DSC_0100.JPG", "again.jpg"):
        write(tmp / "card2" / name, data[name])
    first = cli(cfg_path, "import", "--move", str(tmp / "card1"))
    assert first.returncode == 0, first.stderr
    second = cli(cfg_path, "import", str(tmp / "card2"))
    assert second.returncode == 0, second.stderr
    rows = json.loads(cli(cfg_path, "history", "--json", "--limit", "0").stdout)
    batches = list(dict.fromkeys(r["batch"] for r in reversed(rows)))
    assert len(batches) == 2 and all(b.startswith("import-") for b in batches)
    return Library(cfg, cfg_path, tmp, data, batches)


def find(lib: Library, what: str, **kw: Any) -> lookup.Found:
    conn = db.connect(lib.cfg.catalog, readonly=True)
    try:
        return lookup.find(lib.cfg, conn, what, **kw)
    finally:
        conn.close()


def by_outcome(found: lookup.Found) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for a in found.results:
        out.setdefault(a["outcome"], []).append(a)
    return out


def test_find_a_file_by_its_content(lib: Library) -> None:
    """A file on my disk: is it in the library, where, and who else had these bytes?"""
    mine = write(lib.tmp / "elsewhere" / "mine.jpg", lib.data["IMG_0001.JPG"])
    found = find(lib, str(mine))
    assert found.kind == "file" and found.sha256 == sha(lib.data["IMG_0001.JPG"])
    got = by_outcome(found)
    [filed] = got["filed"]
    assert filed["library_path"] == str(lib.cfg.library / filed["path"])
    assert filed["path"].startswith("2024-06/2024-06-03 10.11.12")
    assert (lib.cfg.library / filed["path"]).read_bytes() == lib.data["IMG_0001.JPG"]
    assert filed["original_name"] == "IMG_0001.JPG"
    assert filed["source"] == str(lib.tmp / "card1" / "IMG_0001.JPG")
    assert filed["captured"] == "2024-06-03 10:11:12"
    assert "DateTimeOriginal" in filed["date_source"] and filed["batch"] == lib.batches[0]
    assert filed["filed_at"] and filed["job"]
    dups = {os.path.basename(d["source"]): d for d in got["duplicate"]}
    assert set(dups) == {"copy.JPG", "again.jpg"}
    assert dups["copy.JPG"]["duplicate_of"] == filed["library_path"]
    assert dups["copy.JPG"]["quarantine"] == str(lib.cfg.duplicates / "copy.JPG")
    assert Path(dups["copy.JPG"]["quarantine"]).read_bytes() == lib.data["copy.JPG"]
    assert dups["again.jpg"]["quarantine"] is None  # a plain import leaves its sources
    assert dups["again.jpg"]["batch"] == lib.batches[1]

    stranger = write(lib.tmp / "elsewhere" / "stranger.jpg", jpeg_bytes(JUNE, 999))
    assert find(lib, str(stranger)).results == []


def test_find_by_name_exact_or_glob_case_insensitive(lib: Library) -> None:
    pair = find(lib, "img_000*")
    assert pair.kind == "name"
    assert sorted(a["original_name"] for a in pair.results) == ["IMG_0001.JPG", "IMG_0002.JPG"]
    paths = sorted(a["path"] for a in pair.results)
    assert paths == ["2024-06/2024-06-03 10.11.12.1.jpg", "2024-06/2024-06-03 10.11.12.jpg"]
    [one] = find(lib, "IMG_0010.JPG").results
    assert one["path"] == "2024-07/2024-07-01 09.00.00.jpg"
    [reject] = find(lib, "notes.txt").results
    assert reject["outcome"] == "rejected" and "not a photo or video" in reject["reason"]
    assert reject["quarantine"] == str(lib.cfg.rejected / "notes.txt")
    assert find(lib, "IMG_9*").results == []


def test_find_by_sha256_prefix(lib: Library) -> None:
    h = sha(lib.data["IMG_0010.jpg"])
    found = find(lib, h[:10].upper())
    assert found.kind == "sha256"
    assert [a["sha256"] for a in found.results] == [h]
    assert find(lib, "0" * 6 + "f" * 6).results == []


@pytest.mark.parametrize(
    "date, names",
    [
        ("2024-06-03", {"IMG_0001.JPG", "IMG_0002.JPG"}),
        ("2024-06", {"IMG_0001.JPG", "IMG_0002.JPG"}),
        ("2024-07", {"IMG_0010.jpg"}),
        ("2023-12-31", {"DSC_0100.JPG"}),
        ("2022-01", set()),
    ],
)
def test_find_by_capture_date(lib: Library, date: str, names: set[str]) -> None:
    found = find(lib, date)
    assert found.kind == "date"
    assert {a["original_name"] for a in found.results} == names
    assert all(a["captured"].startswith(date) for a in found.results)


def test_find_by_a_source_path_that_is_gone(lib: Library) -> None:
    """`import --move` took it: the path no longer exists, the journal remembers it."""
    gone = lib.tmp / "card1" / "IMG_0010.jpg"
    assert not gone.exists()
    [a] = find(lib, str(gone)).results
    assert a["outcome"] == "filed" and a["path"] == "2024-07/2024-07-01 09.00.00.jpg"
    everything = find(lib, str(lib.tmp / "card1") + "/*")
    assert everything.kind == "source"
    assert {os.path.basename(a["source"]) for a in everything.results} == {
        "IMG_0001.JPG",
        "IMG_0002.JPG",
        "IMG_0010.jpg",
        "copy.JPG",
        "notes.txt",
    }


def test_find_limit_and_cli_text_and_json(lib: Library) -> None:
    limited = find(lib, "2024-06", limit=1)
    assert len(limited.results) == 1 and limited.more
    [filed] = find(lib, "IMG_0001.JPG").results  # which of the pair got `.1` is a race
    r = cli(lib.cfg_path, "find", "IMG_0001.JPG", "notes.txt", "2024-07")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"IMG_0001.JPG: 1 found\n  {filed['library_path']}  [filed]\n" in out
    assert f"from      IMG_0001.JPG  ({lib.tmp}/card1/IMG_0001.JPG)" in out
    assert "date      2024-06-03 10:11:12  from " in out and "DateTimeOriginal" in out
    assert f"batch {lib.batches[0]}" in out
    assert f"rejected  {lib.cfg.rejected}/notes.txt" in out
    assert "reason    not a photo or video" in out
    missing = cli(lib.cfg_path, "find", "--json", "IMG_0001.JPG", "nothing-like-it.jpg")
    assert missing.returncode == 1  # like grep: one WHAT found nothing
    answers = json.loads(missing.stdout)
    assert [a["query"] for a in answers] == ["IMG_0001.JPG", "nothing-like-it.jpg"]
    assert answers[0]["results"][0]["library_path"] == filed["library_path"]
    assert answers[1]["results"] == []


def history(lib: Library, *args: str) -> list[dict[str, Any]]:
    r = cli(lib.cfg_path, "history", "--json", *args)
    assert r.returncode == 0, r.stderr
    rows: list[dict[str, Any]] = json.loads(r.stdout)
    return rows


def test_history_newest_first_with_filters(lib: Library) -> None:
    rows = history(lib)  # the real command once; the filters in-process below
    assert len(rows) == 7
    assert [r["when"] for r in rows] == sorted((r["when"] for r in rows), reverse=True)
    assert {r["batch"] for r in rows[:2]} == {lib.batches[1]}  # the second import is newer
    conn = db.connect(lib.cfg.catalog, readonly=True)
    try:

        def h(**kw: Any) -> list[dict[str, Any]]:
            return lookup.history(conn, **kw)

        [reject] = h(outcomes=["rejected"])
        assert reject["source"].endswith("card1/notes.txt") and "not a photo" in reject["reason"]
        assert reject["dest"] == str(lib.cfg.rejected / "notes.txt")
        both = h(outcomes=["duplicate", "rejected"])
        assert sorted(r["outcome"] for r in both) == ["duplicate", "duplicate", "rejected"]
        first = h(batches=[lib.batches[0]])
        assert len(first) == 5 and {r["batch"] for r in first} == {lib.batches[0]}
        assert len(h(since=times.parse_when("1h"))) == 7
        assert h(since=times.parse_when("2999-01-01")) == []
        assert len(h(limit=2)) == 2
    finally:
        conn.close()
    combined = history(
        lib,
        "--outcome",
        "filed,duplicate",
        "--outcome",
        "rejected",
        "--since",
        "1h",
        "--batch",
        lib.batches[0],
    )
    assert sorted(r["outcome"] for r in combined) == [
        "duplicate",
        "filed",
        "filed",
        "filed",
        "rejected",
    ]


def test_history_text_and_bad_arguments(lib: Library) -> None:
    r = cli(lib.cfg_path, "history")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert (
        lines[0] == f"batch {lib.batches[1]}: 1 filed, 1 duplicate"
        or lines[0] == f"batch {lib.batches[1]}: 1 duplicate, 1 filed"
    )
    assert any(
        " rejected   " in line and "notes.txt -> .rejected/notes.txt: not a photo" in line
        for line in lines
    )
    assert any(
        " filed      " in line and "IMG_0010.jpg -> 2024-07/2024-07-01 09.00.00.jpg" in line
        for line in lines
    )
    bad = cli(lib.cfg_path, "history", "--outcome", "lost")
    assert bad.returncode == 64 and "'lost': not an outcome" in bad.stderr
    worse = cli(lib.cfg_path, "history", "--since", "last tuesday")
    assert worse.returncode == 64 and "not a time" in worse.stderr


def test_parse_when() -> None:
    now = datetime.fromisoformat("2024-06-04T12:00:00+00:00")
    assert times.parse_when("2h", now) == "2024-06-04T10:00:00.000+00:00"
    assert times.parse_when("30m", now) == "2024-06-04T11:30:00.000+00:00"
    assert times.parse_when("7d", now) == "2024-05-28T12:00:00.000+00:00"
    assert times.parse_when("2024-06-03T10:00:00+02:00") == "2024-06-03T08:00:00.000+00:00"
    local = datetime(2024, 6, 3).astimezone()
    assert times.parse_when("2024-06-03") == times.utc_iso(local)
    with pytest.raises(ValueError, match="not a time"):
        times.parse_when("soon")


def test_status_reads_like_a_dashboard(tmp_path: Path) -> None:
    """As a user sees it: nothing running, an import killed mid-way (a job to resume),
    files waiting in the inbox, recent problems with reasons, disk space."""
    cfg, cfg_path = make_config(tmp_path)
    card = tmp_path / "card"
    for i in range(3):
        write(card / f"IMG_{i}.JPG", jpeg_bytes(JUNE, 500 + i))
    write(card / "readme.txt", b"hello")
    assert cli(cfg_path, "import", str(card)).returncode == 0
    write(tmp_path / "more" / "late.jpg", jpeg_bytes(JUNE, 600))
    killed = cli(
        cfg_path, "import", str(tmp_path / "more"), env={"MEDIASORTD_TEST_KILL_AT": "copied"}
    )
    assert killed.returncode == -signal.SIGKILL
    waiting = write(cfg.inbox / "phone" / "IMG_9.JPG", jpeg_bytes(JUNE, 700))
    write(cfg.inbox / "IMG_10.JPG.part", b"half")  # a partial name: not waiting
    os.utime(waiting, (1_700_000_000, 1_700_000_000))  # an old mtime: ctime says when it came

    r = cli(cfg_path, "status")
    assert r.returncode == 0, r.stderr
    print(r.stdout)  # what the user sees (pytest -s)
    lines = r.stdout.splitlines()
    heads = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert heads == [
        "now",
        "last",
        "batch",
        "today",
        "all",
        "library",
        "disk",
        "inbox",
        "oldest",
        "problems",
    ]
    text = r.stdout
    assert "now        no mediasortd is running; 1 unfinished job(s) resume when it starts" in text
    assert "today      3 filed, 0 duplicates, 1 rejected, 0 failed" in text
    assert f"library    {cfg.library}: 3 files, " in text
    assert "% free)" in text and "disk       " in text
    assert f"inbox      {cfg.inbox}: 1 file(s) waiting" in text
    oldest = next(line for line in lines if line.startswith("oldest"))
    assert f"{cfg.inbox}/phone/IMG_9.JPG, waiting since " in oldest
    assert oldest.endswith(": the daemon is not running")
    assert "readme.txt: not a photo or video" in text
    info = json.loads(cli(cfg_path, "status", "--json").stdout)
    assert info["now"]["writer"] is None and info["now"]["in_progress"] == 1
    assert info["inbox_waiting"]["files"] == 1
    assert info["inbox_waiting"]["oldest"]["waiting_seconds"] < 600
    assert info["library_fs_bytes"] >= info["library_free_bytes"] > 0
    assert info["outcomes"]["filed"] == 3 and info["pending_jobs"] == 1


# The one union query history() was before it read through indexes: the oracle.
_UNION = """
SELECT * FROM (
  SELECT 'ingest' AS kind, j.id AS job, NULL AS undo, j.batch AS batch,
         CASE WHEN j.step != 'done' THEN 'pending' ELSE j.outcome END AS outcome,
         j.step AS step, j.source AS source, j.dest AS dest, j.error AS reason,
         j.sha256 AS sha256, j.bytes AS size, coalesce(j.finished_at, j.updated_at) AS at,
         NULL AS action
    FROM jobs j
  UNION ALL
  SELECT 'undo', u.job_id, u.id, u.batch,
         CASE WHEN u.step != 'done' THEN 'pending' WHEN u.outcome = 'kept' THEN 'not-undone'
              ELSE 'undone' END,
         u.step, j.source, u.dest, u.error, u.sha256, u.size,
         coalesce(u.finished_at, u.updated_at), u.outcome
    FROM undos u JOIN jobs j ON j.id = u.job_id
) WHERE 1"""


def test_history_through_indexes_equals_the_plain_union(tmp_path: Path) -> None:
    """A journal of 600 jobs (every outcome, unfinished ones, retried old ones, ties in
    time) and 80 undos, written straight into the real schema:
    history() gives exactly what one ORDER BY over everything gives, for every filter."""
    import random

    rng = random.Random(7)
    conn = db.connect(tmp_path / "catalog.db")

    def t(n: int) -> str:
        return f"2026-11-{1 + n // 1440:02d}T{n // 60 % 24:02d}:{n % 60:02d}:00Z"

    with db.transaction(conn):
        for i in range(1, 601):
            step = rng.choice(["done"] * 8 + ["recorded", "decided"])
            outcome = rng.choice(["filed", "duplicate", "rejected", "failed", "vanished"])
            at = rng.randrange(0, 20000, 5)  # coarse: many ties
            finished = t(at) if step == "done" else None
            conn.execute(
                "INSERT INTO jobs (id, batch, source, dev, ino, size, mtime_ns, move, step,"
                " outcome, error, created_at, updated_at, finished_at)"
                " VALUES (?, ?, ?, 1, ?, 1, 1, 1, ?, ?, ?, ?, ?, ?)",
                (
                    i,
                    f"b{i % 5}",
                    f"/in/{i}".encode(),
                    i,
                    step,
                    outcome if step == "done" else None,
                    None,
                    t(0),
                    t(at + rng.randrange(0, 3000, 5)),
                    finished,
                ),
            )
        for u in range(1, 81):
            step = rng.choice(["done", "done", "recorded"])
            conn.execute(
                "INSERT INTO undos (id, batch, job_id, keep_origin, target, step, outcome,"
                " created_at, updated_at, finished_at) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
                (
                    u,
                    f"u{u % 3}",
                    rng.randrange(1, 601),
                    b"/t",
                    step,
                    rng.choice(["restored", "removed", "kept"]),
                    t(0),
                    t(rng.randrange(0, 20000, 5)),
                    t(rng.randrange(0, 20000, 5)) if step == "done" else None,
                ),
            )
    keys = (
        "kind",
        "job",
        "undo",
        "batch",
        "outcome",
        "step",
        "source",
        "dest",
        "reason",
        "sha256",
        "size",
        "when",
        "action",
    )

    def oracle(
        since: str | None, outcomes: list[str] | None, batches: list[str] | None, limit: int | None
    ) -> list[tuple[Any, ...]]:
        sql, args = _UNION, []
        if since is not None:
            sql += " AND at >= ?"
            args.append(since)
        if outcomes:
            sql += f" AND outcome IN ({', '.join('?' * len(outcomes))})"
            args += outcomes
        if batches:
            sql += f" AND batch IN ({', '.join('?' * len(batches))})"
            args += batches
        sql += " ORDER BY at DESC, kind DESC, job DESC" + (f" LIMIT {limit}" if limit else "")
        return [tuple(r) for r in conn.execute(sql, tuple(args))]

    try:
        for since in (None, t(9000)):
            for outcomes in (
                None,
                ["filed"],
                ["pending"],
                ["failed", "undone"],
                ["not-undone", "vanished", "duplicate"],
                ["pending", "rejected"],
            ):
                for batches in (None, ["b1"], ["b2", "u1"]):
                    for limit in (None, 1, 7, 100):
                        want = oracle(since, outcomes, batches, limit)
                        got = timeline.history(
                            conn, since=since, outcomes=outcomes, batches=batches, limit=limit
                        )
                        # ties in (at, kind, job) may come in either order: compare sorted
                        # sets of whole rows, and the order of the sort key
                        assert [r["when"] for r in got] == [w[11] for w in want]
                        assert sorted(tuple(str(r[k]) for k in keys) for r in got) == sorted(
                            tuple(str(query.as_text(v)) for v in w) for w in want
                        ), (since, outcomes, batches, limit)
    finally:
        conn.close()
