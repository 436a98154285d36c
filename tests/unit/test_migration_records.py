"""The destination's migration records, without a host: an offer its source
never followed up expires; a record whose agent died reads as failed."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from ferry.engine import migrations
from ferry.engine.migrations import DESTINATION, Migrations, Record
from ferry.store.layout import Layout
from ferry.util.errors import Conflict, NotFound

ID, CONTAINER = "0" * 32, "c" * 64


@pytest.fixture
def records(tmp_path):
    return Migrations(SimpleNamespace(layout=Layout(str(tmp_path / "root"))))


def offer(records, created: str, pid: int = os.getpid(), state: str = "offered") -> None:
    records._save(Record(ID, DESTINATION, CONTAINER, "web", state, created, pid=pid))


def test_a_fresh_offer_waits_and_a_stale_one_has_expired(records, monkeypatch):
    offer(records, "2026-11-29T12:00:00.000000000Z")
    monkeypatch.setattr(migrations.time, "time", lambda: 1_795_953_600.0 + 60)     # 12:01 that day
    assert records.status(ID).state == "offered"
    monkeypatch.setattr(migrations.time, "time", lambda: 1_795_953_600.0 + 3600)   # an hour later
    assert records.status(ID).state == "aborted"
    with pytest.raises(Conflict, match="not waiting for its checkpoint"):
        records.receive(ID, -1)


def test_a_record_whose_agent_died_reads_as_failed(records):
    offer(records, "2026-11-29T12:00:00.000000000Z", pid=2 ** 22 + 7, state="receiving")
    assert records.status(ID).state == "failed"


def test_an_unknown_migration_is_not_found(records):
    with pytest.raises(NotFound, match=f"no migration {ID}"):
        records.status(ID)
