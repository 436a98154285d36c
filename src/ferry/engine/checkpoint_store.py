"""The checkpoints ferry keeps and the archives it wrote, one record each: what
`checkpoint ls`, `rm` and `prune` act on, and where `container restore NAME`
finds the latest.

Two kinds:
- local: in this root. A checkpoint that stopped its container leaves its CRIU
  images in the container's dir (podman's local checkpoint, at most one per
  container); the container's record says so (checkpointed_at), so it is
  listed from there, under the container's ID. A `--leave-running` local
  checkpoint is a whole ferry archive under <root>/checkpoints/ with its own
  ID: its root filesystem and volumes are the ones its memory saw, so any of
  several can be restored after the container wrote on.
- archive: a file that `--export` wrote, by its path; listed while it exists.

Like `ps`, listing loads neither runc, the network nor the archive code.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import NamedTuple

from ferry.engine.listing import ContainerSummary, open_table
from ferry.store import ids
from ferry.util.errors import Conflict, NotFound, UsageError
from ferry.util.fs import remove_tree, tree_size
from ferry.util.timefmt import utc_now

DDL = """
CREATE TABLE IF NOT EXISTS checkpoints (
    id TEXT PRIMARY KEY,
    container_id TEXT NOT NULL,
    container_name TEXT NOT NULL,
    image TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    created_at TEXT NOT NULL,
    size INTEGER NOT NULL,
    leave_running INTEGER NOT NULL,
    signed INTEGER NOT NULL,
    encrypted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_of_container ON checkpoints (container_id, created_at)
"""

LOCAL, ARCHIVE = "local", "archive"
STORED_SUFFIX = ".tar.zst"


class CheckpointEntry(NamedTuple):
    id: str
    container_id: str
    container_name: str
    image: str
    kind: str              # LOCAL or ARCHIVE
    path: str              # the archive, or an in-place checkpoint's images dir
    created_at: str
    size: int              # measured when listed
    leave_running: bool
    signed: bool
    encrypted: bool
    in_place: bool = False   # a stopped container's own CRIU images

    @classmethod
    def from_row(cls, row) -> CheckpointEntry:
        return cls(row["id"], row["container_id"], row["container_name"], row["image"], row["kind"], row["path"],
                   row["created_at"], row["size"], bool(row["leave_running"]), bool(row["signed"]),
                   bool(row["encrypted"]))

    def to_json(self) -> dict:
        return {"Id": self.id, "ContainerId": self.container_id, "Container": self.container_name,
                "Image": self.image, "Kind": self.kind, "Path": self.path, "Created": self.created_at,
                "Size": self.size, "LeaveRunning": self.leave_running, "Signed": self.signed,
                "Encrypted": self.encrypted}


class CheckpointStore:
    def __init__(self, layout, db):
        self.layout = layout
        self.db = db
        open_table(db)   # entries() reads the containers' records too
        db.ensure(DDL)

    # ---- records ---------------------------------------------------------------
    def new_local(self, container_id: str) -> tuple[str, str]:
        """An ID and the path of a new stored local checkpoint (not yet made),
        in its container's dir under <root>/checkpoints."""
        directory = os.path.join(self.layout.checkpoints, container_id)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        checkpoint_id = ids.new_id()
        return checkpoint_id, os.path.join(directory, checkpoint_id + STORED_SUFFIX)

    def record(self, entry: CheckpointEntry) -> None:
        """Once its archive is whole. An export over an older one's file replaces its record."""
        with self.db.write() as conn:
            conn.execute("DELETE FROM checkpoints WHERE path = ?", (entry.path,))
            conn.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (entry.id, entry.container_id, entry.container_name, entry.image, entry.kind, entry.path,
                          entry.created_at, entry.size, int(entry.leave_running), int(entry.signed),
                          int(entry.encrypted)))

    def forget(self, entry: CheckpointEntry) -> None:
        self.forget_id(entry.id)

    def forget_id(self, checkpoint_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM checkpoints WHERE id = ?", (checkpoint_id,))

    def stored_of(self, container_id: str, *, written: bool = True) -> list[CheckpointEntry]:
        """A container's stored local checkpoints, newest first: those whose archive
        is whole, or with written=False also the records of some being written."""
        rows = self.db.read().execute("SELECT * FROM checkpoints WHERE container_id = ? AND kind = ? "
                                      "ORDER BY created_at DESC", (container_id, LOCAL))
        return _present([CheckpointEntry.from_row(r) for r in rows]) if written else \
            [CheckpointEntry.from_row(r) for r in rows]

    def stored_named(self, name: str) -> list[CheckpointEntry]:
        """Stored local checkpoints of a container of this name that is gone, newest first."""
        rows = self.db.read().execute("SELECT * FROM checkpoints WHERE container_name = ? AND kind = ? AND "
                                      "container_id NOT IN (SELECT id FROM containers) "
                                      "ORDER BY created_at DESC", (name, LOCAL))
        return _present([CheckpointEntry.from_row(r) for r in rows])

    @staticmethod
    def of_container(entry: CheckpointEntry, ref: str) -> bool:
        """Whether `ref` (a name, an ID, or an ID prefix of 3 or more) names the entry's container."""
        return ref == entry.container_name or (len(ref) >= 3 and entry.container_id.startswith(ref))

    # ---- listing ---------------------------------------------------------------
    def entries(self) -> list[CheckpointEntry]:
        """Every checkpoint there is, newest first: the in-place ones of stopped
        containers, the stored ones, and the archives whose files still exist."""
        conn = self.db.read()
        found = [in_place(self.layout, ContainerSummary.from_row(row), row["checkpointed_at"])
                 for row in conn.execute("SELECT * FROM containers WHERE checkpointed_at IS NOT NULL")]
        found += _present([CheckpointEntry.from_row(row) for row in conn.execute("SELECT * FROM checkpoints")])
        return sorted(found, key=lambda e: e.created_at, reverse=True)

    def find(self, ref: str) -> CheckpointEntry:
        """The checkpoint an ID or an unambiguous ID prefix (3 or more hex digits) names."""
        if len(ref) >= 3 and all(c in "0123456789abcdef" for c in ref):
            matches = [e for e in self.entries() if e.id.startswith(ref)]
            if len(matches) > 1:
                raise Conflict(f"checkpoint ID prefix {ref!r} is ambiguous", hint="give more characters of the ID")
            if matches:
                return matches[0]
        raise NotFound(f"no such checkpoint {ref!r}", hint="see 'ferry checkpoint ls'")

    def sweep(self) -> list[str]:
        """Remove what a killed command left under <root>/checkpoints: a file no
        record names, a record of an archive never written, dirs left empty.
        Each container's dir is swept under its lock, and skipped while a
        command holds it."""
        from ferry.util.locks import Busy, owned_lock
        try:
            containers = sorted(os.listdir(self.layout.checkpoints))
        except FileNotFoundError:
            return []
        removed = []
        for container_id in containers:
            directory = os.path.join(self.layout.checkpoints, container_id)
            lock = self.layout.lock(f"container-{container_id}")
            had_lock = os.path.exists(lock)
            try:
                with owned_lock(lock, "ferry system prune", wait=0, busy_message="busy"):
                    records = self.stored_of(container_id, written=False)
                    for entry in records:
                        if not os.path.isfile(entry.path):
                            self.forget(entry)
                            removed.append(f"checkpoint record {entry.id[:12]} (never written)")
                    known = {entry.path for entry in records}
                    if self.db.read().execute("SELECT 1 FROM containers WHERE id = ?", (container_id,)).fetchone():
                        known.add(self.layout.checkpoint_schedule(container_id))   # the container's, kept
                    for name in sorted(os.listdir(directory)):
                        path = os.path.join(directory, name)
                        if path not in known:
                            remove_tree(path)
                            removed.append(f"checkpoint file {path}")
                    with contextlib.suppress(OSError):
                        os.rmdir(directory)   # only when empty
                    if not had_lock:
                        os.unlink(lock)
            except Busy:
                continue
        return removed


PATTERN_FIELDS = ("{name}", "{id}", "{time}")


def check_pattern(pattern: str) -> str:
    """A --file-pattern, absolute: each archive's path once its fields are
    filled in. {time} is required, so that each checkpoint has its own file."""
    if "{time}" not in pattern:
        raise UsageError(f"--file-pattern {pattern!r} lacks {{time}}",
                         hint="e.g. /backups/{name}-{time}.tar.zst; {name} and {id} are also filled in")
    rest = pattern
    for field in PATTERN_FIELDS:
        rest = rest.replace(field, "")
    if "{" in rest or "}" in rest:
        raise UsageError(f"--file-pattern {pattern!r} has a field other than {', '.join(PATTERN_FIELDS)}")
    return os.path.abspath(pattern)


def fill_pattern(pattern: str, container_id: str, name: str) -> str:
    now = utc_now(3)   # 2026-11-30T14:30:27.123Z: one file per checkpoint, in order
    stamp = now.replace("-", "").replace(":", "")
    return pattern.replace("{name}", name).replace("{id}", ids.short(container_id)).replace("{time}", stamp)


def _present(entries: list[CheckpointEntry]) -> list[CheckpointEntry]:
    """Those whose archive exists (an export the user deleted, or a stored one
    still being written, is not), with their size now."""
    found = []
    for entry in entries:
        try:
            info = os.stat(entry.path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            found.append(entry._replace(size=info.st_size))
    return found


def in_place(layout, container: ContainerSummary, checkpointed_at: str) -> CheckpointEntry:
    images = layout.container_files(container.id).checkpoint_images
    return CheckpointEntry(container.id, container.id, container.name, container.image, LOCAL, images,
                           checkpointed_at, tree_size(images), False, False, False, in_place=True)


def to_keep(entries: list[CheckpointEntry], keep_last: int) -> tuple[list[CheckpointEntry], list[CheckpointEntry]]:
    """Per container, its newest `keep_last` checkpoints and the rest: (kept, dropped)."""
    kept, dropped, seen = [], [], {}
    for entry in sorted(entries, key=lambda e: e.created_at, reverse=True):
        count = seen.get(entry.container_id, 0)
        (kept if count < keep_last else dropped).append(entry)
        seen[entry.container_id] = count + 1
    return kept, dropped
