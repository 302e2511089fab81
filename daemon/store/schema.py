"""The catalog's schema: MIGRATIONS, applied in order by `db.migrate` (the catalog's
PRAGMA user_version counts those applied, bumped in the same transaction). Invariant: a
migration once released is never edited; a change of schema is a new one appended at the end.
"""

from __future__ import annotations

# what a job that finishes adds to the tallies (migration 3's triggers)
_TALLY_JOB = """
    INSERT INTO tally_hour VALUES (substr(NEW.finished_at, 1, 13), NEW.outcome, 1,
                                   coalesce(NEW.bytes, 0))
        ON CONFLICT (bucket, outcome) DO UPDATE SET n = n + 1, bytes = bytes + excluded.bytes;
    INSERT INTO tally_batch VALUES (NEW.batch, NEW.outcome, 1)
        ON CONFLICT (batch, outcome) DO UPDATE SET n = n + 1;
"""

MIGRATIONS: list[str] = [
    # 1: the catalog (one row per library file) and the journal (one row per job)
    """
    CREATE TABLE files (
        id            INTEGER PRIMARY KEY,
        sha256        TEXT NOT NULL UNIQUE,
        size          INTEGER NOT NULL,
        path          TEXT NOT NULL UNIQUE,  -- relative to the library
        captured      TEXT NOT NULL,         -- local wall time, ISO 8601 without zone
        utc_offset    INTEGER,               -- seconds east of UTC, when known
        date_source   TEXT NOT NULL,         -- tag or rule that gave the date
        date_raw      TEXT,
        confidence    TEXT,
        original_name TEXT NOT NULL,
        source_path   BLOB NOT NULL,
        imported_at   TEXT NOT NULL,         -- UTC, ISO 8601
        file_type     TEXT NOT NULL,
        mime          TEXT,
        kind          TEXT,
        job_id        INTEGER,
        missing_since TEXT                   -- set by verify --repair when the file is gone
    );
    CREATE INDEX files_captured ON files(captured);
    CREATE INDEX files_original_name ON files(original_name);
    CREATE TABLE jobs (
        id           INTEGER PRIMARY KEY,
        batch        TEXT NOT NULL,
        source       BLOB NOT NULL,
        dev          INTEGER NOT NULL,
        ino          INTEGER NOT NULL,
        size         INTEGER NOT NULL,
        mtime_ns     INTEGER NOT NULL,
        move         INTEGER NOT NULL,
        step         TEXT NOT NULL,
        staged       BLOB,
        sha256       TEXT,
        bytes        INTEGER,
        dest         BLOB,     -- absolute: library file, quarantined copy or rejected entry
        outcome      TEXT,
        error        TEXT,
        attempts     INTEGER NOT NULL DEFAULT 0,
        duplicate_of INTEGER,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        finished_at  TEXT
    );
    -- a path has at most one unfinished job: recording it twice is impossible
    CREATE UNIQUE INDEX jobs_active_source ON jobs(source) WHERE step != 'done';
    CREATE INDEX jobs_source ON jobs(source, dev, ino);
    CREATE INDEX jobs_finished ON jobs(finished_at);
    CREATE INDEX jobs_sha256 ON jobs(sha256);
    """,
    # 2: the undo journal (one row per file of an `undo`, advanced like a job) and the
    # indexes `find` and `history` search by
    """
    CREATE TABLE undos (
        id          INTEGER PRIMARY KEY,
        batch       TEXT NOT NULL,     -- the undo run: undo-<UTC time>-<pid>
        job_id      INTEGER NOT NULL,  -- the ingest job being undone
        file_id     INTEGER,           -- the catalog row to delete (filed jobs)
        origin      BLOB,              -- where the bytes are: library, quarantine or rejected
        keep_origin INTEGER NOT NULL,  -- 1: origin is another row's file; copy, never remove
        target      BLOB NOT NULL,     -- where they go back: the source, or {library}/.undone
        sha256      TEXT,
        size        INTEGER,
        mtime_ns    INTEGER,           -- the source's mtime, given back
        step        TEXT NOT NULL,     -- recorded | restored | done
        dest        BLOB,              -- where they went: target or target.N
        outcome     TEXT,              -- restored | removed | untouched | kept
        error       TEXT,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        finished_at TEXT
    );
    -- a job has at most one unfinished undo
    CREATE UNIQUE INDEX undos_active_job ON undos(job_id) WHERE step != 'done';
    CREATE INDEX undos_job ON undos(job_id);
    CREATE INDEX undos_finished ON undos(finished_at);
    CREATE INDEX jobs_batch ON jobs(batch);
    CREATE INDEX files_job ON files(job_id);
    """,
    # 3: running tallies kept by triggers in the same transactions as the rows they count,
    # so `status` reads a few rows instead of counting a million
    f"""
    CREATE TABLE tally_hour (
        bucket  TEXT NOT NULL,     -- the UTC hour jobs finished in: 'YYYY-MM-DDTHH'
        outcome TEXT NOT NULL,
        n       INTEGER NOT NULL,
        bytes   INTEGER NOT NULL,
        PRIMARY KEY (bucket, outcome)
    ) WITHOUT ROWID;
    CREATE TABLE tally_batch (
        batch   TEXT NOT NULL,
        outcome TEXT NOT NULL,
        n       INTEGER NOT NULL,
        PRIMARY KEY (batch, outcome)
    ) WITHOUT ROWID;
    CREATE TABLE tally_files (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        n     INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    );
    INSERT INTO tally_hour SELECT substr(finished_at, 1, 13), outcome, count(*),
        coalesce(sum(bytes), 0) FROM jobs WHERE step = 'done' GROUP BY 1, 2;
    INSERT INTO tally_batch SELECT batch, outcome, count(*) FROM jobs WHERE step = 'done'
        GROUP BY 1, 2;
    INSERT INTO tally_files SELECT 1, count(*), coalesce(sum(size), 0) FROM files;
    CREATE TRIGGER jobs_done AFTER UPDATE OF step ON jobs
    WHEN NEW.step = 'done' AND OLD.step != 'done' BEGIN {_TALLY_JOB} END;
    CREATE TRIGGER jobs_inserted_done AFTER INSERT ON jobs
    WHEN NEW.step = 'done' BEGIN {_TALLY_JOB} END;
    CREATE TRIGGER files_added AFTER INSERT ON files BEGIN
        UPDATE tally_files SET n = n + 1, bytes = bytes + NEW.size;
    END;
    CREATE TRIGGER files_removed AFTER DELETE ON files BEGIN
        UPDATE tally_files SET n = n - 1, bytes = bytes - OLD.size;
    END;
    CREATE INDEX jobs_outcome_finished ON jobs(outcome, finished_at);
    """,
    # adopt and verify --repair: the mtime a file had when catalogued (NULL in rows from
    # before: verify --repair then compares with imported_at), the hashes an edited file
    # had before, and library files the user keeps that are no catalog row of their own
    """
    ALTER TABLE files ADD COLUMN mtime_ns INTEGER;
    CREATE TABLE file_history (
        id          INTEGER PRIMARY KEY,
        file_id     INTEGER NOT NULL,  -- the files row (kept after the row is gone)
        path        TEXT NOT NULL,
        sha256      TEXT NOT NULL,     -- what the row said before
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER,
        replaced_at TEXT NOT NULL,     -- UTC, ISO 8601
        reason      TEXT NOT NULL
    );
    CREATE INDEX file_history_file ON file_history(file_id);
    CREATE INDEX file_history_sha256 ON file_history(sha256);
    CREATE TABLE kept_files (
        id          INTEGER PRIMARY KEY,
        path        TEXT NOT NULL UNIQUE,  -- relative to the library (a BLOB if not UTF-8)
        kind        TEXT NOT NULL,         -- copy: same bytes as file_id | other: not media
        file_id     INTEGER REFERENCES files(id) ON DELETE CASCADE,
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER,
        reason      TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    );
    CREATE INDEX kept_files_file ON kept_files(file_id);
    CREATE TRIGGER files_resized AFTER UPDATE OF size ON files BEGIN
        UPDATE tally_files SET bytes = bytes - OLD.size + NEW.size;
    END;
    """,
    # what dated a file, continued: Apple's Live Photo identifier (a motion video is filed
    # with the still that carries the same one) and the future values skipped on the way
    # to the date (tag = 'value': why), shown by `find`
    """
    ALTER TABLE files ADD COLUMN content_id TEXT;
    ALTER TABLE files ADD COLUMN date_skipped TEXT;
    """,
    # the highest `.N` given for each preferred library path (names.free_name), and for
    # each stem a RAW+JPEG/HEIC pair shares (names.free_stem, key `stem.*`), so a name
    # shared by many files costs one look-up instead of one per file already there.
    # Filled from the catalog: every path that reads as `numbered(P, N)`, that is
    # `X.N.ext` with P = `X.ext` itself in the catalog (ext: lower-case letters and
    # digits, as layout.clean_ext makes them). A number missed here (P not in the
    # catalog, a name without a dot) costs a longer look once, never a file: the
    # candidate given is still looked up in the catalog and on disk.
    """
    CREATE TABLE name_seq (
        path TEXT PRIMARY KEY,  -- a preferred library path (relative), or `stem.*`
        last INTEGER NOT NULL   -- the highest N of `path.N` given so far (>= 1)
    ) WITHOUT ROWID;
    CREATE TABLE name_free (   -- numbers at or below `last` whose row was deleted
        path TEXT NOT NULL,     -- as name_seq.path
        n    INTEGER NOT NULL,  -- given again first (a crash's redo gets its name back)
        PRIMARY KEY (path, n)
    ) WITHOUT ROWID;
    INSERT INTO name_seq (path, last)
    WITH dotted AS MATERIALIZED (  -- a: the path up to the '.' before its extension
        SELECT path, rtrim(path, 'abcdefghijklmnopqrstuvwxyz0123456789') AS a FROM files
        WHERE path GLOB '*.[1-9]*.*'
    ), counted AS MATERIALIZED (  -- c: a without its number: `X.`
        SELECT path, a, rtrim(substr(a, 1, length(a) - 1), '0123456789') AS c FROM dotted
        WHERE a GLOB '*[^/].[1-9]*.'
    ), guesses AS MATERIALIZED (
        SELECT substr(c, 1, length(c) - 1) AS stem,
               substr(c, 1, length(c) - 1) || substr(path, length(a)) AS preferred,
               CAST(substr(a, length(c) + 1, length(a) - length(c) - 1) AS INTEGER) AS num
        FROM counted
        WHERE c GLOB '*[^/].' AND substr(a, length(c) + 1, 1) BETWEEN '1' AND '9'
          AND length(a) - length(c) <= 19
    ), sure AS MATERIALIZED (
        SELECT stem, preferred, num FROM guesses WHERE preferred IN (SELECT path FROM files)
    )
    SELECT preferred, max(num) FROM sure GROUP BY preferred
    UNION ALL
    SELECT stem || '.*', max(num) FROM sure GROUP BY stem;
    """,
    # the catalog's identity: written in the library too ({library}/.mediasortd.library),
    # so a lost or replaced catalog is noticed instead of filing every content again
    """
    CREATE TABLE catalog_identity (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        catalog_id TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    INSERT INTO catalog_identity VALUES (1, lower(hex(randomblob(16))),
                                         strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
    """,
    # `find 'IMG_12*'`: a name glob's literal prefix as an index range (query.find_name)
    # instead of reading every row: the catalog's names as `lower()` compares them, and
    # each job's base name, lowered, when it is printable ASCII (NULL otherwise: Python's
    # lower() of other names can differ from SQLite's, so find_name reads those apart)
    # (query.JOB_LOWER_BASE is the jobs' expression, written the same; test_find_name)
    """
    CREATE INDEX files_lower_name ON files(lower(original_name));
    CREATE INDEX jobs_lower_base ON jobs(
        CASE WHEN CAST(source AS TEXT) NOT GLOB '*[^ -~]*'
             THEN lower(substr(CAST(source AS TEXT), length(rtrim(CAST(source AS TEXT),
                               replace(CAST(source AS TEXT), '/', ''))) + 1)) END);
    """,
    # the library's filesystem was full at a job's last attempt (journal.note_attempt;
    # any other error written clears it): `status` counts the files waiting for space
    # by this flag, not by the words of the error
    """
    ALTER TABLE jobs ADD COLUMN library_full INTEGER NOT NULL DEFAULT 0;
    UPDATE jobs SET library_full = 1
        WHERE step != 'done' AND error LIKE '%the library is full%';
    """,
]
