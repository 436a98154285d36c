"""The SQLite store: idempotent schema, column upgrades, rollback."""

from __future__ import annotations

import pytest

from ferry.store.db import Database

DDL = "CREATE TABLE IF NOT EXISTS things (name TEXT PRIMARY KEY); CREATE INDEX IF NOT EXISTS by_name ON things(name)"


def test_ensure_is_idempotent_across_connections(tmp_path):
    path = str(tmp_path / "ferry.db")
    Database(path).ensure(DDL)
    again = Database(path)
    again.ensure(DDL)
    with again.write() as conn:
        conn.execute("INSERT INTO things VALUES ('a')")
    assert again.read().execute("SELECT COUNT(*) FROM ferry_schema").fetchone()[0] == 1


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
