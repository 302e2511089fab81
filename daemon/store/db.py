"""The catalog database: opening apsw connections with explicit pragmas, migrating (the
migrations are in `schema`), transactions, the group committer, SQLite's errors as exit
codes. Crash invariant: WAL with synchronous=FULL, so a commit that returned is on disk;
a new catalog's name is fsynced before its first commit; pending migrations and their
user_version bump commit together; the committer answers only after the COMMIT.

One SQLite file holds the catalog and the journal. Every write transaction is BEGIN
IMMEDIATE, so two writers (threads or processes) queue on the lock instead of failing
half-way.
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
from ..files.dirs import fsync_dir, own_like_parent
from ..rules.retry import Trouble
from .schema import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000
# The catalog and its -wal and -shm are readable by their group (the service's own group,
# `mediasortd`): its members run find/status/history without root. Never group-writable.
CATALOG_MODE = 0o640
WAL_LIMIT_BYTES = 64 << 20
T = TypeVar("T")


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
                    own_like_parent(fd, os.fsencode(path.parent))
                finally:
                    os.close(fd)
                fsync_dir(os.fsencode(path.parent))
        elif not path.exists():
            raise CatalogError(f"{path}: no catalog yet (nothing has been imported)")
        flags = (
            apsw.SQLITE_OPEN_READONLY
            if readonly
            else (apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
        )
        conn = apsw.Connection(str(path), flags=flags)
        conn.setbusytimeout(BUSY_TIMEOUT_MS)
        if not readonly:
            persist = ctypes.c_int(1)
            conn.file_control("main", apsw.SQLITE_FCNTL_PERSIST_WAL, ctypes.addressof(persist))
            # ...emptied when the last writer closes, kept below 64 MiB meanwhile
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        _set_up(conn, readonly)
        if readonly and user_version(conn) != len(MIGRATIONS):
            raise CatalogError(
                f"{path}: catalog schema {user_version(conn)} is not "
                f"{len(MIGRATIONS)}; run a writing command first"
            )
        if not readonly:
            _group_readable(path)
        return conn
    except apsw.Error as e:
        raise (as_error(e, path) or CatalogError(f"{path}: cannot open the catalog: {e}")) from None
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
            if not readonly and first(conn.execute("PRAGMA journal_mode=WAL").fetchall()) != "wal":
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
    return str(first(conn.execute("SELECT catalog_id FROM catalog_identity").fetchall()))


def is_empty(conn: apsw.Connection) -> bool:
    """Nothing catalogued and no job ever recorded: a new (or lost and re-made) catalog."""
    return not first(
        conn.execute(
            "SELECT EXISTS (SELECT 1 FROM files) OR EXISTS (SELECT 1 FROM jobs)"
        ).fetchall()
    )


def integrity_problems(conn: apsw.Connection, limit: int = 20) -> list[str]:
    """SQLite's own check of every page and index (empty when the file is sound)."""
    try:
        rows = [str(r[0]) for r in conn.execute(f"PRAGMA integrity_check({int(limit)})")]
    except apsw.Error as e:
        return [f"{type(e).__name__}: {e}"]
    return [] if rows == ["ok"] else rows


# apsw errors that say the catalog itself is broken (not one file's trouble)
CATALOG_BROKEN = (apsw.CorruptError, apsw.NotADBError, apsw.IOError, apsw.CantOpenError)
# apsw's names for the parts that do not import apsw: a connection, any catalog error,
# and the ones a writer may wait out (another writer past the busy timeout; a full,
# failing or read-only filesystem under the catalog, which `state_blocked` tells apart)
Connection = apsw.Connection
SQLiteError = apsw.Error
BusyError = apsw.BusyError
PASSING = (apsw.BusyError, apsw.FullError, apsw.IOError, apsw.ReadOnlyError)


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
    """ "full" or "read-only" when `e` is the catalog's filesystem refusing writes (said as
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
    trouble = state_trouble(path) if isinstance(e, (apsw.IOError, apsw.CantOpenError)) else None
    if trouble == "read-only":
        e = apsw.ReadOnlyError(str(e))
    if isinstance(e, apsw.FullError) or trouble == "full":
        return StateFullError(
            f"{where}: its filesystem ({path.parent}) is full: {e}; free "
            "some space there and run the command again"
        )
    if isinstance(e, (apsw.ReadOnlyError, apsw.CantOpenError, apsw.PermissionsError)):
        return StateReadOnlyError(
            f"{where}: cannot be opened or written ({type(e).__name__}: "
            f"{e}); is {path.parent} read-only or not ours (or is the "
            "process out of file descriptors)?"
        )
    if isinstance(e, apsw.BusyError):
        return LockedError(f"{where}: locked by another process for too long: {e}")
    if isinstance(e, (apsw.CorruptError, apsw.NotADBError)):
        return CatalogError(
            f"{where} is damaged ({e}): `mediasortd verify --deep` says where; "
            "restore it from a backup, or move it aside and rebuild it from "
            "the library with `mediasortd verify --repair`"
        )
    return CatalogError(f"{where}: {type(e).__name__}: {e}")


def user_version(conn: apsw.Connection) -> int:
    return int(first(conn.execute("PRAGMA user_version").fetchall()))


def migrate(conn: apsw.Connection) -> None:
    with transaction(conn):
        version = user_version(conn)
        if version > len(MIGRATIONS):
            raise CatalogError(
                f"catalog schema {version} is newer than this mediasortd ({len(MIGRATIONS)})"
            )
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


def first(rows: list[Any]) -> Any:
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
