"""`find NAME-GLOB` through the name indexes (a range on the glob's literal prefix) gives
exactly what the plain scan gave before: the same rows in the same order, for tricky names
(mixed case, non-ASCII, characters whose Python and SQLite lower() differ, malformed
UTF-8 in sources, GLOB metacharacters in names, prefixes at a boundary) and patterns."""

from __future__ import annotations

import fnmatch
import os
import random
from pathlib import Path
from typing import Any

import apsw

from daemon.store import db, query

NAMES = [
    "IMG_1.JPG",
    "IMG_10.JPG",
    "img_1.jpg",
    "IMG_1",
    "IMG_10",
    "IMG_100.jpg",
    "IMG_2.JPG",
    "Img_1a.Jpg",
    "IMG_",
    "IMG",
    "IMH_1.JPG",
    "IMF_9.JPG",
    "IMG_1*.JPG",
    "IMG_1?.JPG",
    "IMG_[1].JPG",
    "IMG_]1.JPG",
    "a*b.jpg",
    "[.jpg",
    "été.jpg",
    "ÉTÉ.JPG",
    "Été_1.jpg",
    "\u212aIMG.jpg",  # Kelvin sign: Python lowers it to 'k', SQLite does not
    "\u0130MG.jpg",  # I with a dot: Python lowers it to 'i' + a combining dot
    "kimg.jpg",
    "IMG_\x7f.jpg",
    "IMG_\x7fz.jpg",
    "IMG_\x01.jpg",
    "IMG_é.jpg",
    "IMG_É.JPG",
    "\U0010ffff.jpg",
    "~tilde.jpg",
    "IMG 1.jpg",
    "",
]
SOURCE_TAILS = [os.fsencode(n) if n else b"" for n in NAMES] + [
    b"\xffIMG_1.jpg",
    b"IMG_1\xff.jpg",
    b"\xc3IMG_1.jpg",
    b"IMG_\xc1\x81.jpg",  # malformed
    b"IMG_\xe0\x83\xa9.jpg",  # an overlong e-acute
    b"\\xffIMG.jpg",
    b"IMG_1.JPG/",  # a source ending in '/': no base name
]
PATTERNS = [
    "IMG_1*",
    "IMG_10*",
    "img_1*",
    "IMG_1",
    "IMG_1.JPG",
    "IMG_1?.JPG",
    "IMG_1?*",
    "IMG_[1]*",
    "IMG_[!1]*",
    "IMG_[^1]*",
    "IMG_1[*]*",
    "IMG_1[?]*",
    "IMG_[[]*",
    "IMG_]*",
    "[[]*",
    "a[*]b*",
    "*",
    "*.JPG",
    "*1*",
    "?MG*",
    "IMG*",
    "IMG",
    "IMG_",
    "IMH*",
    "IMF*",
    "é*",
    "É*",
    "été*",
    "ÉTÉ*",
    "Été_1*",
    "kimg*",
    "Kimg*",
    "\u212aimg*",
    "i*",
    "İ*",
    "imh*",
    "IMG_\x7f*",
    "IMG_\x01*",
    "IMG_é*",
    "IMG_É*",
    "\\xff*",
    "\\x*",
    "\U0010ffff*",
    "~*",
    "IMG *",
    "IMG_[",
    "img_1.jpg/",
    "",
    "[",
    "IMG_1[",
]


def old_find_name(conn: apsw.Connection, pattern: str, limit: int) -> list[dict[str, Any]]:
    """find_name before the name indexes: a scan of every row and every job (`+`: as
    without the index on lower(original_name), which SQLite would use for the glob)."""
    pat = pattern.lower()
    files = query.files_where(conn, "+lower(f.original_name) GLOB ?", (pat,), limit)
    jobs = [
        j
        for j in query.jobs_where(conn, "1", (), None)
        if fnmatch.fnmatchcase(os.path.basename(j["source"]).lower(), pat)
    ][:limit]
    return files + jobs


def _catalog(path: Path, rng: random.Random) -> apsw.Connection:
    conn = db.connect(path)
    tails = SOURCE_TAILS * 3 + [  # and random names from the troublesome characters
        bytes(rng.choice(b"iImMgG_10*?[]!^.\x7f\xff\xc3\xa9 ") for _ in range(rng.randrange(1, 7)))
        for _ in range(120)
    ]
    with db.transaction(conn):
        for i, tail in enumerate(tails, 1):
            source = tail if i % 7 == 0 else b"/in/DCIM/%d/" % i + tail
            first = i <= len(SOURCE_TAILS)  # filed, the name stored as the source's bytes
            outcome = (
                "filed"
                if first
                else rng.choice(["filed", "filed", "filed", "duplicate", "rejected", "failed"])
            )
            at = f"2026-12-0{1 + i % 3}T00:00:0{i % 2}Z"  # ties in time: order by id
            conn.execute(
                "INSERT INTO jobs (id, batch, source, dev, ino, size, mtime_ns, move, step,"
                " outcome, created_at, updated_at, finished_at, duplicate_of)"
                " VALUES (?, 'b', ?, 1, ?, 1, 1, 1, 'done', ?, ?, ?, ?, ?)",
                (i, source, i, outcome, at, at, at, 1 if outcome == "duplicate" else None),
            )
            if outcome != "filed" or (i % 11 == 0 and not first):  # undone: no catalog row
                continue
            name: Any = os.fsdecode(tail) if i % 5 else tail.decode("utf-8", "replace")
            if first or i % 13 == 0:
                name = tail  # a name stored as a BLOB (malformed UTF-8 too)
            conn.execute(
                "INSERT INTO files (id, sha256, size, path, captured, date_source,"
                " original_name, source_path, imported_at, file_type, job_id)"
                " VALUES (?, ?, 1, ?, '2024-06-03 10:11:12', 'x', ?, ?, ?, 'JPEG', ?)",
                (
                    i,
                    f"{i:064x}",
                    f"2024-06/{i}.jpg",
                    name.encode("utf-8", "surrogateescape")
                    if isinstance(name, str) and any(0xDC80 <= ord(c) <= 0xDCFF for c in name)
                    else name,
                    source,
                    at,
                    i,
                ),
            )
    return conn


def test_find_name_through_the_indexes_equals_the_scan(tmp_path: Path) -> None:
    rng = random.Random(17)
    conn = _catalog(tmp_path / "catalog.db", rng)
    patterns = PATTERNS + [
        "".join(rng.choice("iImMgG_10*?[]!^.\x7fé ") for _ in range(rng.randrange(1, 6)))
        for _ in range(200)
    ]
    in_files = in_jobs = 0
    try:
        for pattern in patterns:
            for limit in (1, 3, 1000):
                want = old_find_name(conn, pattern, limit)
                assert query.find_name(conn, pattern, limit) == want, (pattern, limit)
                in_files += any("file_id" in r for r in want)
                in_jobs += any("file_id" not in r for r in want)
        # the prefix is an index range, not a scan
        plan = " ".join(
            str(r)
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM files WHERE lower(original_name) >= 'img_1'"
                " AND lower(original_name) < 'img_2'"
            )
        )
        assert "files_lower_name" in plan, plan
        base = query.JOB_LOWER_BASE
        plan = " ".join(
            str(r)
            for r in conn.execute(
                f"EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE ({base} >= 'img_1' AND"
                f" {base} < 'img_2') OR {base} IS NULL"
            )
        )
        assert "jobs_lower_base" in plan and "SCAN" not in plan, plan
    finally:
        conn.close()
    assert in_files > 100 and in_jobs > 100  # the patterns do find things in both


def test_job_base_name_index_expression(tmp_path: Path) -> None:
    """The indexed base name is Python's basename, lowered, for printable ASCII sources,
    and NULL for every other source (those find_name always looks at)."""
    conn = db.connect(tmp_path / "catalog.db")
    try:
        for source in [
            b"/a/b/IMG_1.JPG",
            b"IMG_1.JPG",
            b"/a/b/",
            b"/",
            b"",
            b"a//B",
            b"/a/\xc3\xa9.jpg",
            b"/a/\xff.jpg",
            b"/a\xff/b.JPG",
            b"/a/\x01.jpg",
            b"/a/\x7f.jpg",
            b"/x y/~Z.JPG",
        ]:
            got = conn.execute(
                f"SELECT {query.JOB_LOWER_BASE} FROM (SELECT ? AS source)", (source,)
            ).fetchall()[0][0]
            printable = all(0x20 <= c <= 0x7E for c in source)
            want = os.path.basename(source.decode()).lower() if printable else None
            assert got == want, source
    finally:
        conn.close()
