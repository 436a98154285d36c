"""Named volumes and the -v option."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ferry.store import ids
from ferry.store.db import Database
from ferry.store.layout import Layout
from ferry.util.errors import Conflict, NotFound, UsageError
from ferry.util.fs import remove_tree
from ferry.util.timefmt import utc_now

DDL = """
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class VolumeSpec:
    """One -v option: a named volume or a host directory, mounted at `destination`."""
    kind: str           # "volume" | "bind"
    source: str         # volume name or absolute host path
    destination: str
    readonly: bool = False

    def to_dict(self) -> dict:
        return {"kind": self.kind, "source": self.source, "destination": self.destination,
                "readonly": self.readonly}

    @classmethod
    def from_dict(cls, data: dict) -> "VolumeSpec":
        return cls(data["kind"], data["source"], data["destination"], bool(data["readonly"]))


def parse_volume(spec: str) -> VolumeSpec:
    """podman's -v SRC:DEST[:ro|rw]; SRC is a host path (starts with /) or a volume name."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UsageError(f"bad volume {spec!r}: expected SOURCE:/container/path[:ro]")
    source, destination = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    unknown = [o for o in options if o not in ("ro", "rw", "z", "Z")]
    if unknown:
        raise UsageError(f"bad volume {spec!r}: unknown option {unknown[0]!r} (use ro or rw)")
    if not destination.startswith("/"):
        raise UsageError(f"bad volume {spec!r}: the container path must be absolute")
    if ".." in destination.split("/"):
        raise UsageError(f"bad volume {spec!r}: the container path must not contain '..'")
    readonly = "ro" in options
    if source.startswith("/"):
        return VolumeSpec("bind", os.path.normpath(source), os.path.normpath(destination), readonly)
    if source.startswith("."):
        raise UsageError(f"bad volume {spec!r}: host paths must be absolute")
    ids.check_name(source, "volume")
    return VolumeSpec("volume", source, os.path.normpath(destination), readonly)


class Volumes:
    def __init__(self, layout: Layout, db: Database):
        self.layout = layout
        self.db = db
        db.ensure(DDL)

    def data_dir(self, name: str) -> str:
        return os.path.join(self.layout.volumes, name, "_data")

    def create(self, name: str, *, exist_ok: bool = False) -> dict:
        ids.check_name(name, "volume")
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM volumes WHERE name = ?", (name,)).fetchone():
                if exist_ok:
                    return self.inspect(name)
                raise Conflict(f"volume {name!r} already exists", hint="pick another name")
            os.makedirs(self.data_dir(name), mode=0o755, exist_ok=True)
            conn.execute("INSERT INTO volumes (name, created_at) VALUES (?, ?)", (name, utc_now()))
        return self.inspect(name)

    def exists(self, name: str) -> bool:
        return self.db.read().execute("SELECT 1 FROM volumes WHERE name = ?", (name,)).fetchone() is not None

    def list(self) -> list[dict]:
        rows = self.db.read().execute("SELECT name FROM volumes ORDER BY name").fetchall()
        return [self.inspect(r["name"]) for r in rows]

    def inspect(self, name: str) -> dict:
        row = self.db.read().execute("SELECT * FROM volumes WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no such volume {name!r}", hint="see 'ferry volume ls'")
        return {"Name": name, "Driver": "local", "Mountpoint": self.data_dir(name),
                "CreatedAt": row["created_at"], "Scope": "local"}

    def remove(self, name: str, users: list[str], *, force: bool = False) -> None:
        self.inspect(name)
        if users and not force:
            raise Conflict(f"volume {name!r} is used by container(s) {', '.join(users)}",
                           hint="remove them first, or use -f")
        with self.db.write() as conn:
            conn.execute("DELETE FROM volumes WHERE name = ?", (name,))
        remove_tree(os.path.join(self.layout.volumes, name))
