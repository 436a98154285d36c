"""SQLite (WAL) state of one root, safe under concurrent CLI calls.

Each layer that keeps records owns its tables and declares them with
`Database.ensure(ddl)`; write transactions take SQLite's write lock up front
(BEGIN IMMEDIATE) so that two ferry processes never interleave a read-modify-write.

SQLite's failures become FerryErrors here, naming the database (a full disk is
DiskFull). On a full disk SQLite cannot create the shared-memory file that a
WAL connection needs, so reads then come from a copy taken into memory under
an exclusive lock (which keeps the WAL index on the heap, in no file), and each
write tries a connection of its own: `ps`, `inspect` and `logs` keep working,
and a write fails in one line, or succeeds once something made room.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import stat
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator

from ferry.util import space
from ferry.util.errors import Conflict, FerryError, from_os_error

BUSY_TIMEOUT_MS = 30_000
# The database holds containers' environments, secrets included. SQLite gives
# its -wal and -shm files the database file's mode.
FILE_MODE = 0o600
# On a full disk a reader's copy is taken again when older than this, so that
# a loop (`logs -f`) sees changes, and the shared connection comes back once
# there is room.
SNAPSHOT_SECONDS = 0.5
SHM_BYTES = 32768   # the shared memory of a WAL connection, at least

# SQLite's primary result codes (sqlite3.h).
SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY = 3, 5, 6, 8
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 10, 11, 13, 14, 26
# What SQLite says when it cannot grow a file: FULL for the database or WAL,
# IOERR (SHMSIZE...) for the shared memory, CANTOPEN when no file can be made.
SPACE_CODES = frozenset({SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN})


def primary_code(error: BaseException) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


class Connection(sqlite3.Connection):
    """A connection whose failures are FerryErrors naming the database."""

    database: Database

    def execute(self, sql, parameters=(), /):
        try:
            return super().execute(sql, parameters)
        except sqlite3.Error as error:
            translated = self.database.translate(error, _action(sql))
            if translated is error:
                raise
            raise translated from error

    def executemany(self, sql, parameters, /):
        try:
            return super().executemany(sql, parameters)
        except sqlite3.Error as error:
            translated = self.database.translate(error, "update")
            if translated is error:
                raise
            raise translated from error


def _action(sql: str) -> str:
    return "read" if sql.lstrip()[:6].upper() == "SELECT" else "update"


def _raw(conn: sqlite3.Connection, sql: str):
    """Execute without translation: the caller wants SQLite's own error code."""
    return sqlite3.Connection.execute(conn, sql)


# Closed at exit, as Python's teardown would close them: the ferry command
# leaves without that teardown (cli.main.run), and the last connection's close
# is what checkpoints the WAL and removes it and its shared memory. Left open,
# the WAL only grew, and a later command on a full disk died of SIGBUS on the
# holes of a shared memory it had to rebuild.
_open_connections: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_connections() -> None:
    for conn in list(_open_connections):
        with contextlib.suppress(sqlite3.Error):   # another thread's (ProgrammingError), or busy
            conn.close()


class Database:
    def __init__(self, path: str):
        self.path = path
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        except OSError as error:
            if space.is_no_space(error):
                raise space.no_space(f"cannot create {os.path.dirname(path)}", os.path.dirname(path),
                                  error.errno) from None
            raise
        self._local = threading.local()
        self._ensured: set[str] = set()

    @property
    def root(self) -> str:
        return os.path.dirname(self.path)

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn = getattr(local, "writing", None) or getattr(local, "conn", None)
        if conn is not None:
            return conn
        snapshot = getattr(local, "snapshot", None)
        if snapshot is not None and time.monotonic() < local.snapshot_until:
            return snapshot
        self._make_private()
        if not self._shared_memory_whole() and space.is_full(self.path):
            # No room for the shared memory; where blocks are smaller than
            # pages, SQLite would even die of SIGBUS on the holes of its mmap.
            return self._snapshot(None)
        try:
            conn = self._open()
        except sqlite3.Error as error:
            if primary_code(error) not in SPACE_CODES:
                raise self.translate(error, "open") from error
            return self._snapshot(error)   # no room for the shared memory
        self._drop_snapshot()
        local.conn = conn
        return conn

    def _open(self, *, exclusive: bool = False) -> Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                               factory=Connection)
        _open_connections.add(conn)
        conn.database = self
        conn.row_factory = sqlite3.Row
        try:
            if exclusive:   # before the first read: the WAL index then lives on the heap
                _raw(conn, "PRAGMA locking_mode=EXCLUSIVE")
            _raw(conn, "PRAGMA journal_mode=WAL")   # no write when it is WAL already
            _raw(conn, "PRAGMA foreign_keys=ON")
            _raw(conn, f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _shared_memory_whole(self) -> bool:
        """Whether the WAL's shared memory exists in full, without holes: one
        made while there was room, by a connection that may still be open."""
        try:
            info = os.stat(self.path + "-shm")
        except FileNotFoundError:
            return False
        return info.st_size >= SHM_BYTES and info.st_blocks * 512 >= info.st_size

    def _snapshot(self, cause: sqlite3.Error | None) -> Connection:
        """A read-only copy of the database in memory, for a disk too full for
        SQLite's shared memory. The exclusive lock it is copied under is held
        for the copy alone (a few ms), since it keeps every other ferry out."""
        try:
            source = self._open_source()
            try:
                memory = sqlite3.connect(":memory:", isolation_level=None, factory=Connection)
                source.backup(memory)
            finally:
                source.close()
        except sqlite3.Error as error:
            cause = cause or error
            raise self.translate(cause, "read") from cause
        memory.database = self
        memory.row_factory = sqlite3.Row
        _raw(memory, "PRAGMA query_only=1")   # a write through read() fails as the disk would
        self._local.snapshot = memory
        self._local.snapshot_until = time.monotonic() + SNAPSHOT_SECONDS
        return memory

    def _open_source(self) -> sqlite3.Connection:
        """The database to copy: exclusively, or, where not even an empty WAL
        file can be made (no inodes left) and none exists, the file alone,
        which then holds every commit (the last connection's close wrote the
        WAL back and removed it)."""
        try:
            return self._open(exclusive=True)
        except sqlite3.Error:
            if os.path.exists(self.path + "-wal"):
                raise
        quoted = self.path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
        return sqlite3.connect(f"file:{quoted}?mode=ro&immutable=1", uri=True, isolation_level=None)

    def _drop_snapshot(self) -> None:
        snapshot = getattr(self._local, "snapshot", None)
        if snapshot is not None:
            snapshot.close()
            self._local.snapshot = None

    def _make_private(self) -> None:
        """Create the database file 0600, or make an older one (0644) and its
        -wal and -shm files 0600, before SQLite opens them. Nothing is written
        when they are private already: reads must work on a full disk."""
        # Never open and close the database file itself once it exists: closing
        # any descriptor of it drops every POSIX lock this process holds on it,
        # the locks of SQLite connections in other threads (the agent's) too,
        # which then read torn pages (SQLITE_IOERR_SHORT_READ).
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            mode = None
        except OSError as error:
            raise from_os_error(error, f"the state database {self.path} cannot be opened",
                                hint="pick another --root, or move that path aside") from None
        if mode is None:
            try:
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
            except OSError as error:
                if space.is_no_space(error):
                    raise space.no_space(f"cannot create ferry's state in {self.path}", self.root,
                                      error.errno) from None
                raise from_os_error(error, f"the state database {self.path} cannot be opened",
                                    hint="pick another --root, or move that path aside") from None
        elif stat.S_ISDIR(mode):
            raise from_os_error(IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)),
                                f"the state database {self.path} cannot be opened",
                                hint="pick another --root, or move that path aside")
        elif mode & 0o777 != FILE_MODE:
            os.chmod(self.path, FILE_MODE)
        for suffix in ("-wal", "-shm"):
            try:
                if os.stat(self.path + suffix).st_mode & 0o777 != FILE_MODE:
                    os.chmod(self.path + suffix, FILE_MODE)
            except FileNotFoundError:
                pass

    def translate(self, error: sqlite3.Error, action: str = "update") -> BaseException:
        """A FerryError for a failure of the database or its disk; any other
        error (a bug: a bad statement, a broken constraint) is returned as it is."""
        code = primary_code(error)
        degraded = getattr(self._local, "snapshot", None) is not None
        if code == SQLITE_FULL or (code in SPACE_CODES or degraded and code == SQLITE_READONLY) \
                and space.is_full(self.path):
            return space.no_space(f"cannot {action} ferry's state in {self.path}", self.root)
        if code in (SQLITE_BUSY, SQLITE_LOCKED):
            return Conflict(f"ferry's state in {self.path} stayed locked by another ferry command "
                            f"for {BUSY_TIMEOUT_MS / 1000:g} s",
                            hint="try again once that command has finished")
        if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
            return FerryError(f"the state database {self.path} cannot be used: {error}",
                              hint="restore it from a backup, or move it aside to start this root "
                              "afresh (its containers are then forgotten)")
        if code == SQLITE_READONLY:
            return FerryError(f"cannot update ferry's state in {self.path}: {error}",
                              hint="make its filesystem writable, or pick another --root")
        if code in (SQLITE_PERM, SQLITE_CANTOPEN):
            return FerryError(f"cannot {action} ferry's state in {self.path}: {error}",
                              hint="check that path's permissions, or pick another --root")
        if code == SQLITE_IOERR:
            return FerryError(f"cannot {action} ferry's state in {self.path}: I/O error "
                              f"({getattr(error, 'sqlite_errorname', 'SQLITE_IOERR')})",
                              hint="check the disk that holds it (dmesg)")
        return error

    def ensure(self, ddl: str) -> None:
        """Create tables and indexes idempotently (CREATE ... IF NOT EXISTS).

        Applied DDL is remembered, so that a command like `ferry ps` reads one
        row instead of taking the write lock for every table. It is remembered by
        its text rather than a hash, which is exact and spares every command
        hashlib's OpenSSL (4 ms, a tenth of `ferry ps`)."""
        if ddl in self._ensured:
            return
        try:
            applied = self.read().execute("SELECT 1 FROM ferry_schema_ddl WHERE ddl = ?", (ddl,)).fetchone()
        except sqlite3.OperationalError:  # a new database: no ferry_schema_ddl yet
            applied = None
        if not applied:
            with self.write() as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS ferry_schema_ddl (ddl TEXT PRIMARY KEY)")
                conn.execute("DROP TABLE IF EXISTS ferry_schema")  # sha256 digests an older ferry kept
                for statement in (s.strip() for s in ddl.split(";")):
                    if statement:
                        conn.execute(statement)
                conn.execute("INSERT OR IGNORE INTO ferry_schema_ddl VALUES (?)", (ddl,))
        self._ensured.add(ddl)

    def add_columns(self, table: str, columns: dict[str, str]) -> None:
        """Add columns a newer ferry needs to a table an older one created."""
        have = {row["name"] for row in self.read().execute(f"PRAGMA table_info({table})")}
        if set(columns) <= have:
            return
        with self.write() as conn:
            have = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's lock from its first statement."""
        conn = self._conn()
        own = None
        if conn is getattr(self._local, "snapshot", None):
            # A disk too full for the shared memory: this write gets a connection
            # of its own, which fails as DiskFull unless room was made meanwhile.
            try:
                own = conn = self._open(exclusive=True)
            except sqlite3.Error as error:
                raise self.translate(error) from error
            self._local.writing = own   # reads within the transaction see it
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (FULL, IOERR, BUSY).
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        _raw(conn, "ROLLBACK")
                raise
        finally:
            if own is not None:
                self._local.writing = None
                own.close()
                self._drop_snapshot()   # stale now

    def read(self) -> sqlite3.Connection:
        return self._conn()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        self._drop_snapshot()
