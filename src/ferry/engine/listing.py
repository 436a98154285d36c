"""The containers table, and reading it from the records alone: listing it
(`ferry ps`) and showing one container (`ferry inspect`).

Both must start as fast as podman's, so this module imports neither runc, the
OCI spec, the network nor dataclasses (10 ms on its own): it reads the table,
looks for each running container's process in /proc, and loads the full
Containers service only to catch up with a container that exited unobserved
(or whose command died in the middle of an operation).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import namedtuple

from ferry.store.layout import EXIT_RECORD
from ferry.util.errors import DamagedRecord, DiskFull, FerryError, NotFound
from ferry.util.strictjson import loads

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
# restart_count: podman's RestartCount, the starts its restart policy made
# (state, not config: no archive carries it).
ADDED_COLUMNS = {"checkpointed_at": "TEXT", "restored_at": "TEXT", "restart_count": "INTEGER NOT NULL DEFAULT 0"}

CREATED, RUNNING, EXITED = "created", "running", "exited"
# Shown, never stored: a running container whose tasks `ferry pause` froze (its marker file).
PAUSED = "paused"
PAUSED_MARKER = "paused"
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
        "created_at", "started_at", "finished_at", "checkpointed_at", "config"))):
    """What a listing shows of a container: its record, with the parts of its
    ContainerConfig that `ps` shows (image, args, ports) checked, and the rest
    of that config as the dict it is stored as (`ps --format json` and its
    filters read labels, mounts and networks from it)."""
    __slots__ = ()

    @classmethod
    def from_row(cls, row) -> ContainerSummary:
        try:
            config = json.loads(row["config"])
            image, args, ports = config["image"], tuple(config["args"]), tuple(config["ports"])
        except (TypeError, ValueError, KeyError):   # a record a crash left odd: one line saying what is wrong
            raise damaged(row, _fault(row["config"])) from None
        return cls(row["id"], row["name"], row["image_id"], image, args, ports, row["state"], row["pid"],
                   row["exit_code"], row["created_at"], row["started_at"], row["finished_at"],
                   row["checkpointed_at"] if "checkpointed_at" in row.keys() else None, config)


# The fields of a stored ContainerConfig (engine/config.py) that `inspect` shows, and
# their JSON types: a record is checked for these alone, not parsed as strictly as
# ContainerConfig.from_json parses one (its regexes and typed records cost `inspect`
# the time this module saves). ferry wrote the record, but a crash may have left it odd.
CONFIG_FIELDS = {"image": str, "image_digest": str, "args": list, "command": list, "env": list,
                 "workdir": str, "user": str, "hostname": str, "network": str, "ip": str, "mac": str,
                 "ports": list, "volumes": list, "stop_signal": str, "rm": bool, "tty": bool,
                 "interactive": bool}
PORT_FIELDS = {"host_ip": str, "host_port": int, "container_port": int, "protocol": str}
VOLUME_FIELDS = {"kind": str, "source": str, "destination": str, "readonly": bool}


class ContainerRecord(namedtuple("ContainerRecord", (
        "id", "name", "image_id", "config", "state", "pid", "exit_code", "created_at", "started_at",
        "finished_at", "checkpointed_at", "restored_at", "restart_count"), defaults=(0,))):
    """What `inspect` shows of a container: its row, with its stored config as
    the JSON object it is (a dict holding at least CONFIG_FIELDS, checked)."""
    __slots__ = ()

    @classmethod
    def from_row(cls, row) -> ContainerRecord:
        try:
            config = stored_config(row["config"])
        except ValueError as exc:
            raise damaged(row, exc) from None
        added = row.keys()   # columns an upgrade adds may be missing while the disk is full
        return cls(row["id"], row["name"], row["image_id"], config, row["state"], row["pid"], row["exit_code"],
                   row["created_at"], row["started_at"], row["finished_at"],
                   row["checkpointed_at"] if "checkpointed_at" in added else None,
                   row["restored_at"] if "restored_at" in added else None,
                   row["restart_count"] if "restart_count" in added else 0)

    @classmethod
    def from_container(cls, c) -> ContainerRecord:
        """From engine.containers' Container, as a catch-up returns it."""
        return cls(c.id, c.name, c.image_id, c.config.to_dict(), c.state, c.pid, c.exit_code, c.created_at,
                   c.started_at, c.finished_at, c.checkpointed_at, c.restored_at, c.restart_count)


def stored_config(text) -> dict:
    """A containers row's config column as a dict; ValueError naming what is wrong."""
    if not isinstance(text, (str, bytes)):
        raise ValueError("its config is not JSON text")
    config = loads(text)   # ValueError in ContainerConfig.from_json's words
    _check_fields(config, CONFIG_FIELDS, "config")
    if not config["args"]:
        raise ValueError("args must not be empty")
    for key in ("args", "command", "env"):
        if not all(isinstance(item, str) for item in config[key]):
            raise ValueError(f"{key} must be a list of strings")
    for key, fields in (("ports", PORT_FIELDS), ("volumes", VOLUME_FIELDS)):
        for index, item in enumerate(config[key]):
            _check_fields(item, fields, f"{key}[{index}]")
    return config


def _check_fields(data, fields: dict, what: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{what} is not a JSON object")
    for key, kind in fields.items():
        value = data.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{what}.{key} is missing or not a {kind.__name__}")


def _fault(text) -> ValueError:
    """What is wrong with a config that could not be read."""
    try:
        stored_config(text)
    except ValueError as error:
        return error
    return ValueError("it cannot be read")


def damaged(row, error: ValueError) -> DamagedRecord:
    """The error for a record that cannot be read."""
    return DamagedRecord(row["id"], row["name"], error)


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
        exited = {row["id"] for row in rows if self._behind(row)}
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
        summaries = [s._replace(state=PAUSED) if self.paused(s.id, s.state) else s for s in summaries]
        return [s for s in summaries if all_states or s.state == RUNNING]

    def record(self, name_or_id: str) -> ContainerRecord:
        """One container as `inspect` shows it, from its record. One whose record
        is behind (it exited unobserved, or a command died at work on it) is
        caught up first through Containers.get, as a listing does and as inspect
        always did: the exit is recorded and its cleanup runs (runc's state, the
        netns, the published ports, the rootfs mount; an --rm container goes),
        or, if the exit cannot be recorded, it shows as the monitor saw it."""
        row = find_row(self.db.read(), name_or_id)
        record = ContainerRecord.from_container(self.engine.containers.get(row["id"])) if self._behind(row) \
            else ContainerRecord.from_row(row)
        return record._replace(state=PAUSED) if self.paused(record.id, record.state) else record

    def paused(self, container_id: str, state: str) -> bool:
        """Whether a container recorded as running is paused (`ferry pause`)."""
        return state == RUNNING and os.path.exists(os.path.join(self.layout.container_dir(container_id),
                                                                PAUSED_MARKER))

    def _behind(self, row) -> bool:
        """Whether the record misses what happened while no ferry command watched:
        an exit, or an operation whose command died (its journal), which only
        the full Containers service catches up with."""
        return (row["state"] == RUNNING and has_exited(self.layout.container_dir(row["id"]), row["pid"])) \
            or os.path.exists(self.layout.container_files(row["id"]).journal)

    def _as_seen(self, summary: ContainerSummary) -> ContainerSummary:
        """A record that still says running because the catch-up could not
        record the exit (a full disk) shows the exit as the monitor saw it."""
        if summary.state != RUNNING or not has_exited(self.layout.container_dir(summary.id), summary.pid):
            return summary   # recorded meanwhile, or started again
        code, when = observed_exit(self.layout.container_dir(summary.id))
        return summary._replace(state=EXITED, exit_code=code, finished_at=when, pid=None)

    def with_stored_checkpoints(self) -> set[str]:
        """IDs of the containers that have a stored (-R) checkpoint: an exited one
        comes back with `ferry container restore NAME` (engine/checkpoint_store)."""
        try:
            rows = self.db.read().execute("SELECT DISTINCT container_id FROM checkpoints WHERE kind = 'local'")
        except sqlite3.OperationalError:   # no checkpoint was ever stored in this root
            return set()
        return {row[0] for row in rows}

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
