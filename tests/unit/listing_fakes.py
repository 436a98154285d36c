"""What the listing tests (ps, inspect) share: a state root, and an engine whose
Containers service fails the test if the listing reaches for it uninvited."""

from __future__ import annotations

import subprocess

import pytest

from ferry.engine.listing import open_table
from ferry.store.db import Database
from ferry.store.layout import Layout


class FakeEngine:
    def __init__(self, containers=None, layout: Layout | None = None):
        self._containers = containers
        self.layout = layout

    @property
    def containers(self):
        assert self._containers is not None, "the listing loaded Containers without a container to catch up"
        return self._containers


def state_root(tmp_path, *, table: bool = False):
    """(layout, db) of a new root; with `table`, the containers table made as ferry makes it."""
    layout = Layout.at(str(tmp_path / "root"))
    db = Database(layout.database)
    if table:
        open_table(db)
    return layout, db


@pytest.fixture
def root(tmp_path):
    layout, db = state_root(tmp_path)
    yield layout, db
    db.close()


def dead_pid() -> int:
    """A PID whose process has ended (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
