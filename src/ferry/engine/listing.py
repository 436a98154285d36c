"""The containers table, and listing it (`ferry ps`) from the records alone.

A listing must start as fast as podman's, so this module imports neither runc,
the OCI spec, the network nor dataclasses (10 ms on its own): it reads the
table, looks for each running container's process in /proc, and loads the full
Containers service only to catch up with a container that exited unobserved.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import namedtuple

from ferry.util.errors import NotFound

DDL = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image_id TEXT NOT NULL,
    config TEXT NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER,
    exit_code INTEGER,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    checkpointed_at TEXT
)
"""
# Columns a newer ferry added to a table that an older one may have created.
ADDED_COLUMNS = {"checkpointed_at": "TEXT"}

CREATED, RUNNING, EXITED = "created", "running", "exited"
EXIT_FILE = "exit.json"  # the monitor writes it, in the container's dir, once the process has ended


def open_table(db) -> None:
    """Create or upgrade the containers table; a read-only check when it is current."""
    db.ensure(DDL)
    db.add_columns("containers", ADDED_COLUMNS)


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def has_exited(container_dir: str, pid: int | None) -> bool:
    """Whether a container's process has ended, though its record may still say running."""
    return os.path.exists(os.path.join(container_dir, EXIT_FILE)) or not process_alive(pid)


class ContainerSummary(namedtuple("ContainerSummary", (
        "id", "name", "image_id", "image", "args", "ports", "state", "pid", "exit_code",
        "created_at", "started_at", "finished_at"))):
    """What a listing shows of a container: its record, with the parts of its
    ContainerConfig that `ps` shows (image, args, ports)."""
    __slots__ = ()

    @classmethod
    def from_row(cls, row) -> ContainerSummary:
        config = json.loads(row["config"])
        return cls(row["id"], row["name"], row["image_id"], config["image"], tuple(config["args"]),
                   tuple(config["ports"]), row["state"], row["pid"], row["exit_code"], row["created_at"],
                   row["started_at"], row["finished_at"])


class Listing:
    def __init__(self, layout, db, engine):
        self.layout = layout
        self.db = db
        self.engine = engine  # its Containers service loads only for a catch-up
        open_table(db)

    def containers(self, *, all_states: bool = False) -> list[ContainerSummary]:
        """Containers in creation order; without `all_states`, only running ones."""
        rows = self._rows()
        exited = [row["id"] for row in rows if row["state"] == RUNNING
                  and has_exited(self.layout.container_dir(row["id"]), row["pid"])]
        if exited:
            containers = self.engine.containers
            for container_id in exited:
                with contextlib.suppress(NotFound):  # removed meanwhile (rm, --rm)
                    containers.get(container_id)  # catches up: records the exit, runs the cleanup
            rows = self._rows()
        return [ContainerSummary.from_row(row) for row in rows if all_states or row["state"] == RUNNING]

    def _rows(self) -> list:
        return self.db.read().execute("SELECT * FROM containers ORDER BY created_at").fetchall()
