"""SQLite (WAL) state of one root, safe under concurrent CLI calls.

Each layer that keeps records owns its tables and declares them with
`Database.ensure(ddl)`; write transactions take SQLite's write lock up front
(BEGIN IMMEDIATE) so that two ferry processes never interleave a read-modify-write.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator

from ferry.util.errors import FerryError

BUSY_TIMEOUT_MS = 30_000
# The database holds containers' environments, secrets included. SQLite gives
# its -wal and -shm files the database file's mode.
FILE_MODE = 0o600


class Database:
    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self._local = threading.local()
        self._ensured: set[str] = set()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self._make_private()
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
            conn.row_factory = sqlite3.Row
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError as error:  # not a database, or a damaged one
                conn.close()
                raise FerryError(f"the state database {self.path} cannot be used: {error}",
                                 hint="restore it from a backup, or move it aside to start this root "
                                 "afresh (its containers are then forgotten)") from None
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._local.conn = conn
        return conn

    def _make_private(self) -> None:
        """Create the database file 0600, or make an older one (0644) and its
        -wal and -shm files 0600, before SQLite opens them."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as error:
            raise FerryError(f"the state database {self.path} cannot be opened: {error.strerror}",
                             hint="pick another --root, or move that path aside") from None
        try:
            if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)
        for suffix in ("-wal", "-shm"):
            try:
                if os.stat(self.path + suffix).st_mode & 0o777 != FILE_MODE:
                    os.chmod(self.path + suffix, FILE_MODE)
            except FileNotFoundError:
                pass

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
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def read(self) -> sqlite3.Connection:
        return self._conn()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
