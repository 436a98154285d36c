"""The containers table, and listing it (`ferry ps`) from the records alone.

A listing must start as fast as podman's, so this module imports neither runc,
the OCI spec, the network nor dataclasses (10 ms on its own): it reads the
table, looks for each running container's process in /proc, and loads the full
Containers service only to catch up with a container that exited unobserved.
"""

from __future__ import annotations

import json
import os
from collections import namedtuple

from ferry.store.layout import EXIT_RECORD
from ferry.util.errors import DiskFull, FerryError, NotFound

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
ADDED_COLUMNS = {"checkpointed_at": "TEXT", "restored_at": "TEXT"}

CREATED, RUNNING, EXITED = "created", "running", "exited"
DEFAULT_STOP_TIMEOUT = 10   # seconds `stop` waits before SIGKILL, as podman's
UNKNOWN_EXIT = -1


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
    return os.path.exists(os.path.join(container_dir, EXIT_RECORD)) or not process_alive(pid)


def observed_exit(container_dir: str) -> tuple[int, str | None]:
    """The exit code and time the monitor saw, for a container whose exit is not
    recorded yet; UNKNOWN_EXIT when the monitor could not say (it died, or its
    disk was full)."""
    try:
        with open(os.path.join(container_dir, EXIT_RECORD)) as f:
            info = json.load(f)
        code, when = info.get("exit_code"), info.get("finished_at")
    except (OSError, ValueError, AttributeError):
        return UNKNOWN_EXIT, None
    return (code if isinstance(code, int) else UNKNOWN_EXIT), (when if isinstance(when, str) else None)


class ContainerSummary(namedtuple("ContainerSummary", (
        "id", "name", "image_id", "image", "args", "ports", "state", "pid", "exit_code",
        "created_at", "started_at", "finished_at", "checkpointed_at"))):
    """What a listing shows of a container: its record, with the parts of its
    ContainerConfig that `ps` shows (image, args, ports)."""
    __slots__ = ()

    @classmethod
    def from_row(cls, row) -> ContainerSummary:
        config = json.loads(row["config"])
        return cls(row["id"], row["name"], row["image_id"], config["image"], tuple(config["args"]),
                   tuple(config["ports"]), row["state"], row["pid"], row["exit_code"], row["created_at"],
                   row["started_at"], row["finished_at"],
                   row["checkpointed_at"] if "checkpointed_at" in row.keys() else None)


class Listing:
    def __init__(self, layout, db, engine):
        self.layout = layout
        self.db = db
        self.engine = engine  # its Containers service loads only for a catch-up
        try:
            open_table(db)
        except DiskFull:
            # An upgrade (a new column, index or table) that a full disk refuses:
            # `ps` reads the columns it has.
            if not db.read().execute("SELECT 1 FROM sqlite_master WHERE name = 'containers'").fetchone():
                raise

    def containers(self, *, all_states: bool = False) -> list[ContainerSummary]:
        """Containers in creation order; without `all_states`, only running ones."""
        rows = self._rows()
        exited = {row["id"] for row in rows if row["state"] == RUNNING
                  and has_exited(self.layout.container_dir(row["id"]), row["pid"])}
        # An operation whose command died left its journal: the catch-up finishes or undoes it.
        exited |= {row["id"] for row in rows
                   if os.path.exists(self.layout.container_files(row["id"]).journal)}
        if exited:
            containers = self.engine.containers
            for container_id in exited:
                try:
                    containers.get(container_id)  # catches up: records the exit, runs the cleanup
                except NotFound:  # removed meanwhile (rm, --rm)
                    pass
                except (FerryError, OSError) as error:  # a full disk, or another command at work on it
                    log().debug("cannot record the exit of %s: %s", container_id[:12], error)
            rows = self._rows()
        summaries = [ContainerSummary.from_row(row) for row in rows]
        if exited:
            summaries = [self._as_seen(s) if s.id in exited else s for s in summaries]
        return [s for s in summaries if all_states or s.state == RUNNING]

    def _as_seen(self, summary: ContainerSummary) -> ContainerSummary:
        """A record that still says running because the catch-up could not
        record the exit (a full disk) shows the exit as the monitor saw it."""
        if summary.state != RUNNING or not has_exited(self.layout.container_dir(summary.id), summary.pid):
            return summary   # recorded meanwhile, or started again
        code, when = observed_exit(self.layout.container_dir(summary.id))
        return summary._replace(state=EXITED, exit_code=code, finished_at=when, pid=None)

    def log_path(self, name_or_id: str) -> tuple[str, str]:
        """(ID, log file) of a container, from its record alone (`ferry logs`)."""
        row = find_row(self.db.read(), name_or_id)
        return row["id"], self.layout.container_files(row["id"]).log

    def _rows(self) -> list:
        return self.db.read().execute("SELECT * FROM containers ORDER BY created_at").fetchall()


def find_row(conn, name_or_id: str):
    """The containers row a name, an ID or an unambiguous ID prefix (3 or
    more hex digits) names; NotFound or Conflict otherwise."""
    row = conn.execute("SELECT * FROM containers WHERE name = ? OR id = ?", (name_or_id, name_or_id)).fetchone()
    if row is None and len(name_or_id) >= 3 and all(c in "0123456789abcdef" for c in name_or_id):
        rows = conn.execute("SELECT * FROM containers WHERE id LIKE ?", (name_or_id + "%",)).fetchall()
        if len(rows) > 1:
            from ferry.util.errors import Conflict
            raise Conflict(f"container ID prefix {name_or_id!r} is ambiguous", hint="give more characters of the ID")
        row = rows[0] if rows else None
    if row is None:
        raise NotFound(f"no such container {name_or_id!r}", hint="see 'ferry ps -a'")
    return row


def log():
    from ferry.util.log import get_logger
    return get_logger("ferry.listing")
