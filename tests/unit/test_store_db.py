"""The SQLite store: idempotent schema, column upgrades, rollback."""

from __future__ import annotations

import os
import sqlite3

import pytest

from ferry.store import db as db_module
from ferry.store.db import Database
from ferry.util.errors import Conflict

DDL = "CREATE TABLE IF NOT EXISTS things (name TEXT PRIMARY KEY); CREATE INDEX IF NOT EXISTS by_name ON things(name)"


def test_ensure_is_idempotent_across_connections(tmp_path):
    path = str(tmp_path / "ferry.db")
    Database(path).ensure(DDL)
    again = Database(path)
    again.ensure(DDL)
    with again.write() as conn:
        conn.execute("INSERT INTO things VALUES ('a')")
    assert again.read().execute("SELECT COUNT(*) FROM ferry_schema_ddl").fetchone()[0] == 1


def test_add_columns_upgrades_an_old_table(tmp_path):
    db = Database(str(tmp_path / "ferry.db"))
    db.ensure(DDL)
    db.add_columns("things", {"size": "INTEGER"})
    db.add_columns("things", {"size": "INTEGER"})
    columns = [row["name"] for row in db.read().execute("PRAGMA table_info(things)")]
    assert columns == ["name", "size"]


def test_write_rolls_back_on_error(tmp_path):
    db = Database(str(tmp_path / "ferry.db"))
    db.ensure(DDL)
    with pytest.raises(RuntimeError):
        with db.write() as conn:
            conn.execute("INSERT INTO things (name) VALUES ('half')")
            raise RuntimeError("boom")
    assert db.read().execute("SELECT COUNT(*) FROM things").fetchone()[0] == 0


def test_an_applied_schema_is_checked_without_the_write_lock(tmp_path, monkeypatch):
    """Every command ensures its tables; when they are current, that must not wait
    for (or take) SQLite's write lock, which another ferry may hold for long."""
    path = str(tmp_path / "ferry.db")
    Database(path).ensure(DDL)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_MS", 50)
    try:
        again = Database(path)
        again.ensure(DDL)
        assert again.read().execute("SELECT COUNT(*) FROM things").fetchone()[0] == 0
        with pytest.raises(Conflict, match="locked by another ferry command"):
            again.ensure(DDL + "; CREATE INDEX IF NOT EXISTS by_name_too ON things(name)")  # new: must write
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_changed_schema_is_applied_once(tmp_path):
    path = str(tmp_path / "ferry.db")
    Database(path).ensure(DDL)
    grown = DDL + "; CREATE TABLE IF NOT EXISTS others (name TEXT)"
    Database(path).ensure(grown)
    Database(path).ensure(grown)
    db = Database(path)
    assert db.read().execute("SELECT COUNT(*) FROM ferry_schema_ddl").fetchone()[0] == 2
    assert db.read().execute("SELECT name FROM sqlite_master WHERE name = 'others'").fetchone()


def test_a_database_from_an_older_ferry_keeps_its_rows(tmp_path):
    """An older ferry recorded sha256 digests of the DDL in ferry_schema."""
    path = str(tmp_path / "ferry.db")
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(DDL + "; CREATE TABLE ferry_schema (digest TEXT PRIMARY KEY);"
                      "INSERT INTO ferry_schema VALUES ('" + "a" * 64 + "'); INSERT INTO things VALUES ('kept')")
    old.close()
    db = Database(path)
    db.ensure(DDL)
    tables = {row[0] for row in db.read().execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"things", "ferry_schema_ddl"}
    assert [row["name"] for row in db.read().execute("SELECT name FROM things")] == ["kept"]


def test_an_existing_database_file_is_never_opened_outside_sqlite(tmp_path, monkeypatch):
    """Closing any descriptor of the database file drops every POSIX lock this
    process holds on it, SQLite's in other threads too (the agent's threads then
    read torn pages: SQLITE_IOERR_SHORT_READ)."""
    path = str(tmp_path / "ferry.db")
    Database(path).read().execute("SELECT 1")
    os.chmod(path, 0o644)
    real_open = os.open

    def guarded(name, *args, **kwargs):
        assert os.fspath(name) != path, "the database file was opened outside SQLite"
        return real_open(name, *args, **kwargs)
    monkeypatch.setattr(os, "open", guarded)
    Database(path).read().execute("SELECT 1")
    assert os.stat(path).st_mode & 0o777 == 0o600   # still made private, by path
