"""The catalog database: opening apsw connections with explicit pragmas, and migrations.

One SQLite file holds the catalog and the journal. WAL with synchronous=FULL: a commit
that returned is on disk. Every write transaction is BEGIN IMMEDIATE, so two writers
(threads or processes) queue on the lock instead of failing half-way.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import apsw

from ..errors import CatalogError, LockedError, MediasortError, StateFullError, StateReadOnlyError
from ..rules.retry import Trouble

BUSY_TIMEOUT_MS = 30_000
# The catalog and its -wal and -shm are readable by their group (the service's own group,
# `mediasortd`): its members run find/status/history without root. Never group-writable.
CATALOG_MODE = 0o640
WAL_LIMIT_BYTES = 64 << 20
T = TypeVar("T")

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
    # the highest `.N` given for each preferred library path (catalog.free_name), and for
    # each stem a RAW+JPEG/HEIC pair shares (catalog.free_stem, key `stem.*`), so a name
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


def connect(path: Path, *, readonly: bool = False) -> apsw.Connection:
    """Open the catalog (creating it with mode 0640 and migrating it unless readonly).

    Writers keep the -wal and -shm files when they close (SQLITE_FCNTL_PERSIST_WAL) and
    make the three files group-readable: a reader that may not write in the state dir
    (a member of the service's group) can then open the catalog read-only at any time,
    the daemon running or not. Run as root, a writer gives a catalog it creates to the
    owner of the state dir (SQLite does the same for the -wal and -shm), so an admin's
    `import` never leaves a file the service cannot open."""
    try:
        if not readonly:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if not path.exists():  # a new catalog: make its name durable before any commit
                fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, CATALOG_MODE)
                try:
                    os.fchmod(fd, CATALOG_MODE)  # whatever the umask
                    if os.geteuid() == 0:
                        parent = os.stat(path.parent)
                        os.fchown(fd, parent.st_uid, parent.st_gid)
                finally:
                    os.close(fd)
                dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(dirfd)
                finally:
                    os.close(dirfd)
        elif not path.exists():
            raise CatalogError(f"{path}: no catalog yet (nothing has been imported)")
        flags = apsw.SQLITE_OPEN_READONLY if readonly else (
            apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
        conn = apsw.Connection(str(path), flags=flags)
        conn.setbusytimeout(BUSY_TIMEOUT_MS)
        if not readonly:
            persist = ctypes.c_int(1)
            conn.file_control("main", apsw.SQLITE_FCNTL_PERSIST_WAL, ctypes.addressof(persist))
            # ...emptied when the last writer closes, kept below 64 MiB meanwhile
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        _set_up(conn, readonly)
        if readonly and user_version(conn) != len(MIGRATIONS):
            raise CatalogError(f"{path}: catalog schema {user_version(conn)} is not "
                               f"{len(MIGRATIONS)}; run a writing command first")
        if not readonly:
            _group_readable(path)
        return conn
    except apsw.Error as e:
        raise (as_error(e, path) or CatalogError(f"{path}: cannot open the catalog: {e}")
               ) from None
    except OSError as e:
        raise os_error(e, path, "cannot open the catalog") from None


def os_error(e: OSError, path: Path, what: str) -> MediasortError:
    """An OSError met in the state directory, as a clear message and exit code."""
    where = e.filename if e.filename is not None else path
    text = f"{os.fsdecode(where)}: {what}: {e.strerror or e}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StateFullError(f"{text}; free some space there and try again")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StateReadOnlyError(f"{text}; the state directory must be writable")
    return CatalogError(text)


def _group_readable(path: Path) -> None:
    """Give the catalog, -wal and -shm group read where they lack it (a catalog made
    0600 by an older mediasortd): only their owner or root may, and nothing else changes."""
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            st = os.stat(name)
            if not st.st_mode & 0o040 and os.geteuid() in (0, st.st_uid):
                os.chmod(name, (st.st_mode & 0o7777) | 0o040)
        except FileNotFoundError:
            continue


def _set_up(conn: apsw.Connection, readonly: bool) -> None:
    """WAL, FULL sync, foreign keys and migrations, retried while another connection is
    doing the same: switching a new file to WAL can fail busy at once, without the busy
    handler ever being called, when several connections open a new catalog together."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            if not readonly and _first(conn.execute("PRAGMA journal_mode=WAL").fetchall()) != "wal":
                raise apsw.BusyError("the catalog could not be switched to WAL yet")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            if not readonly:
                migrate(conn)
            return
        except apsw.BusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


def catalog_id(conn: apsw.Connection) -> str:
    """The id this catalog was created with (the library's marker names it)."""
    return str(_first(conn.execute("SELECT catalog_id FROM catalog_identity").fetchall()))


def is_empty(conn: apsw.Connection) -> bool:
    """Nothing catalogued and no job ever recorded: a new (or lost and re-made) catalog."""
    return not _first(conn.execute("SELECT EXISTS (SELECT 1 FROM files) "
                                   "OR EXISTS (SELECT 1 FROM jobs)").fetchall())


def integrity_problems(conn: apsw.Connection, limit: int = 20) -> list[str]:
    """SQLite's own check of every page and index (empty when the file is sound)."""
    try:
        rows = [str(r[0]) for r in conn.execute(f"PRAGMA integrity_check({int(limit)})")]
    except apsw.Error as e:
        return [f"{type(e).__name__}: {e}"]
    return [] if rows == ["ok"] else rows


# apsw errors that say the catalog itself is broken (not one file's trouble)
CATALOG_BROKEN = (apsw.CorruptError, apsw.NotADBError, apsw.IOError, apsw.CantOpenError)


LOW_SPACE_BYTES = 1 << 20


def state_trouble(path: Path) -> str | None:
    """What is wrong with the catalog's filesystem, if anything: "full" (under 1 MiB
    left) or "read-only". SQLite often says only "disk I/O error" (a WAL or shared-memory
    file that cannot grow); this tells why."""
    try:
        vfs = os.statvfs(path.parent)
    except OSError:
        return None
    if vfs.f_flag & os.ST_RDONLY:
        return "read-only"
    if vfs.f_bavail * vfs.f_frsize < LOW_SPACE_BYTES:
        return "full"
    return None


def state_blocked(e: BaseException, path: Path) -> str | None:
    """"full" or "read-only" when `e` is the catalog's filesystem refusing writes (said as
    such, or as an I/O error on a full or read-only disk), else None."""
    if isinstance(e, apsw.FullError):
        return "full"
    if isinstance(e, (apsw.IOError, apsw.ReadOnlyError, apsw.CantOpenError)):
        return state_trouble(path)
    return None


def catalog_trouble(e: BaseException, path: Path) -> Trouble | None:
    """What `e` is when it is the catalog's own trouble, for the retry policy: LOCKED
    (another process holds its lock), STATE (its filesystem refuses writes: which way,
    state_blocked says) or BROKEN; None when it is not the catalog's."""
    if isinstance(e, apsw.BusyError):
        return Trouble.LOCKED
    if state_blocked(e, path):
        return Trouble.STATE
    if isinstance(e, CATALOG_BROKEN):
        return Trouble.BROKEN
    return None


def as_error(e: BaseException, path: Path) -> MediasortError | None:
    """An apsw error as a clear message with its exit code (None: not a catalog error).
    The commands and the daemon stop with these instead of a traceback."""
    if not isinstance(e, apsw.Error):
        return None
    where = f"catalog {path}"
    trouble = state_trouble(path) if isinstance(e, (apsw.IOError, apsw.CantOpenError)) \
        else None
    if trouble == "read-only":
        e = apsw.ReadOnlyError(str(e))
    if isinstance(e, apsw.FullError) or trouble == "full":
        return StateFullError(f"{where}: its filesystem ({path.parent}) is full: {e}; free "
                              "some space there and run the command again")
    if isinstance(e, (apsw.ReadOnlyError, apsw.CantOpenError, apsw.PermissionsError)):
        return StateReadOnlyError(f"{where}: cannot be opened or written ({type(e).__name__}: "
                                  f"{e}); is {path.parent} read-only or not ours (or is the "
                                  "process out of file descriptors)?")
    if isinstance(e, apsw.BusyError):
        return LockedError(f"{where}: locked by another process for too long: {e}")
    if isinstance(e, (apsw.CorruptError, apsw.NotADBError)):
        return CatalogError(f"{where} is damaged ({e}): `mediasortd verify --deep` says where; "
                            "restore it from a backup, or move it aside and rebuild it from "
                            "the library with `mediasortd verify --repair`")
    return CatalogError(f"{where}: {type(e).__name__}: {e}")


def user_version(conn: apsw.Connection) -> int:
    return int(_first(conn.execute("PRAGMA user_version").fetchall()))


def migrate(conn: apsw.Connection) -> None:
    with transaction(conn):
        version = user_version(conn)
        if version > len(MIGRATIONS):
            raise CatalogError(f"catalog schema {version} is newer than this mediasortd "
                               f"({len(MIGRATIONS)})")
        for i, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute(sql)
            conn.execute(f"PRAGMA user_version={i}")


@contextlib.contextmanager
def transaction(conn: apsw.Connection) -> Iterator[apsw.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (BaseException too)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if not conn.getautocommit():
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _first(rows: list[Any]) -> Any:
    """The first column of the first row of a query's rows."""
    return rows[0][0]


class _Item:
    def __init__(self, fn: Callable[[apsw.Connection], Any], done: threading.Event) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = done  # shared by the items queued together: one wake-up for all


class Committer:
    """Group commit: one thread and one connection run many workers' transactions as
    one. A failing function is rolled back alone (see _commit); `run` returns only
    after the COMMIT that made its changes durable, so a step is never acknowledged
    before it is on disk. While one batch is being fsynced, the next gathers: the write
    lock is taken once per batch instead of once per step."""

    MAX_BATCH = 64

    def __init__(self, path: Path) -> None:
        self.path = path
        self.queue: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()
        self.started = threading.Event()
        self.failure: BaseException | None = None
        self.commits = 0  # transactions committed (each carries one or more steps)
        self.thread = threading.Thread(target=self._serve, name="committer", daemon=True)
        self.thread.start()
        self.started.wait()
        if self.failure is not None:
            raise self.failure

    def run(self, fn: Callable[[apsw.Connection], T]) -> T:
        item = _Item(fn, threading.Event())
        self.queue.put([item])
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[no-any-return]

    def run_many(self, fns: list[Callable[[apsw.Connection], T]]) -> list[T | Exception]:
        """run() for several transactions, queued together (so usually committed
        together): each one's result, or the exception it raised (rolled back alone)."""
        if not fns:
            return []  # nothing to queue, and no one would wake us
        done = threading.Event()
        items = [_Item(fn, done) for fn in fns]
        self.queue.put(items)  # as one entry: committed in one transaction
        done.wait()
        out: list[T | Exception] = []
        for item in items:
            if item.error is not None and not isinstance(item.error, Exception):
                raise item.error
            out.append(item.error if item.error is not None else item.result)
        return out

    def close(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()

    def _serve(self) -> None:
        try:
            conn = connect(self.path)
        except BaseException as e:  # noqa: BLE001 - raised by __init__
            self.failure = e
            self.started.set()
            return
        self.started.set()
        try:
            while (first := self.queue.get()) is not None:
                items = list(first)
                stop = False
                while len(items) < self.MAX_BATCH:
                    try:
                        more = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    items.extend(more)
                self._commit(conn, items)
                self.commits += 1
                if stop:
                    return
        finally:
            conn.close()

    @staticmethod
    def _commit(conn: apsw.Connection, items: list[_Item]) -> None:
        """One transaction for all: run without savepoints (the common case: nothing
        fails); if one raises, roll everything back and run them again, each in its
        own savepoint, so that only the failing one is rolled back. A function may
        thus run twice: it must touch nothing but the database."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            if not Committer._run(conn, items, alone=False):
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                Committer._run(conn, items, alone=True)
            conn.execute("COMMIT")
        except BaseException as e:  # noqa: BLE001 - nothing of this batch is committed
            if not conn.getautocommit():
                conn.execute("ROLLBACK")
            for item in items:
                if item.error is None:
                    item.error, item.result = e, None
        for done in {id(item.done): item.done for item in items}.values():
            done.set()

    @staticmethod
    def _run(conn: apsw.Connection, items: list[_Item], *, alone: bool) -> bool:
        """Run every item's function; `alone`: each in a savepoint, rolled back by itself
        if it raises. Without: stop at the first that raises and say so (False)."""
        for item in items:
            item.result = item.error = None
            if alone:
                conn.execute("SAVEPOINT step")
            try:
                item.result = item.fn(conn)
            except BaseException as e:  # noqa: BLE001 - handed to its worker
                if not alone:
                    return False
                item.error = e
                conn.execute("ROLLBACK TO step")
            if alone:
                conn.execute("RELEASE step")
        return True
