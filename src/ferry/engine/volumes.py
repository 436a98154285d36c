"""Named volumes and the -v option."""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from ferry.store import ids
from ferry.store.db import Database
from ferry.store.layout import Layout
from ferry.util.errors import Conflict, NotFound, UsageError
from ferry.util import proc
from ferry.util.fs import remove_tree
from ferry.util.records import checked
from ferry.util.strictjson import exact_keys, shown
from ferry.util.timefmt import utc_now

DDL = """
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
)
"""


# A volume is filled once from the image (podman's NeedsCopyUp): set when it is
# made, cleared by the first start that finds files at its mount point.
ADDED_COLUMNS = {"copy_up": "INTEGER NOT NULL DEFAULT 0"}
VOLUME_KEYS = ("kind", "source", "destination", "readonly")
MAX_PATH = 4095
MAX_SYMLINK_HOPS = 40
HEX64_RE = re.compile(r"^[0-9a-f]{64}\Z")


@checked
class VolumeSpec(NamedTuple):
    """One -v option: a named volume or a host directory, mounted at `destination`.
    Every instance is valid (ValueError otherwise): an archive may carry one."""
    kind: str           # "volume" | "bind"
    source: str         # volume name or absolute host path
    destination: str
    readonly: bool = False
    nocopy: bool = False   # -v NAME:DEST:nocopy, no copy-up from the image
    anonymous: bool = False   # -v /DEST or an image's VOLUME: a volume named by ferry, removed by rm -v and --rm

    def _check(self):
        if self.kind not in ("volume", "bind"):
            raise ValueError(f"volume kind must be volume or bind, not {shown(self.kind)}")
        if self.kind == "volume":
            if not isinstance(self.source, str) or len(self.source) > ids.MAX_NAME \
                    or not ids.NAME_RE.match(self.source):
                raise ValueError(f"volume name {shown(self.source)} is not a valid name")
        else:
            _check_path(self.source, "bind source")
        _check_path(self.destination, "volume destination")
        if not isinstance(self.readonly, bool):
            raise ValueError(f"volume readonly must be true or false, not {shown(self.readonly)}")
        if not isinstance(self.nocopy, bool):
            raise ValueError(f"volume nocopy must be true or false, not {shown(self.nocopy)}")
        if not isinstance(self.anonymous, bool) or (self.anonymous and (
                self.kind != "volume" or not HEX64_RE.match(self.source))):
            raise ValueError(f"volume anonymous must be true only for a volume named by 64 hex digits, "
                             f"not {shown(self.anonymous)}")

    def to_dict(self) -> dict:
        data = {"kind": self.kind, "source": self.source, "destination": self.destination,
                "readonly": self.readonly}
        if self.nocopy:   # only then: records without it stay readable by older ferry
            data["nocopy"] = True
        if self.anonymous:   # the same
            data["anonymous"] = True
        return data

    @classmethod
    def from_dict(cls, data) -> "VolumeSpec":
        """From its JSON form, strictly (ValueError)."""
        optional = tuple(k for k in ("nocopy", "anonymous") if isinstance(data, dict) and k in data)
        exact_keys(data, VOLUME_KEYS + optional, "volume")
        return cls(data["kind"], data["source"], data["destination"], data["readonly"],
                   data.get("nocopy", False), data.get("anonymous", False))

    def __str__(self) -> str:
        return f"{self.source}:{self.destination}" + (":ro" if self.readonly else "")


def _check_path(path, what: str) -> None:
    """Absolute, normalised, no NUL: the form parse_volume makes."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > MAX_PATH \
            or os.path.normpath(path) != path or path.startswith("//"):
        raise ValueError(f"{what} {shown(path)} must be an absolute, normalised path")


def parse_volume(spec: str) -> VolumeSpec:
    """podman's -v SRC:DEST[:ro|rw]; SRC is a host path (starts with /) or a volume name."""
    parts = spec.split(":")
    if len(parts) == 1 and spec.startswith("/"):   # -v /DEST: an anonymous volume (podman)
        if ".." in spec.split("/"):
            raise UsageError(f"bad volume {spec!r}: the container path must not contain '..'")
        return VolumeSpec("volume", ids.new_id(), os.path.normpath(spec), anonymous=True)
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UsageError(f"bad volume {spec!r}: expected SOURCE:/container/path[:ro]")
    source, destination = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    unknown = [o for o in options if o not in ("ro", "rw", "z", "Z", "copy", "nocopy")]
    if unknown:
        raise UsageError(f"bad volume {spec!r}: unknown option {unknown[0]!r} (use ro, rw or nocopy)")
    if not destination.startswith("/"):
        raise UsageError(f"bad volume {spec!r}: the container path must be absolute")
    if ".." in destination.split("/"):
        raise UsageError(f"bad volume {spec!r}: the container path must not contain '..'")
    readonly = "ro" in options
    if source.startswith("/"):
        if "nocopy" in options:
            raise UsageError(f"bad volume {spec!r}: nocopy applies to named volumes only")
        return VolumeSpec("bind", os.path.normpath(source), os.path.normpath(destination), readonly)
    if source.startswith("."):
        raise UsageError(f"bad volume {spec!r}: host paths must be absolute")
    ids.check_name(source, "volume")
    return VolumeSpec("volume", source, os.path.normpath(destination), readonly, "nocopy" in options)


def path_in_rootfs(rootfs: str, path: str) -> str | None:
    """Where `path` of a container is in its (not yet running) root filesystem,
    its symlinks followed as inside it, never out of it; None on a loop."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(rootfs, *resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return os.path.join(rootfs, *resolved)


class Volumes:
    def __init__(self, layout: Layout, db: Database, engine=None):
        self.layout = layout
        self.db = db
        self.engine = engine   # its containers, which `rm -f` removes before their volume
        db.ensure(DDL)
        db.add_columns("volumes", ADDED_COLUMNS)

    def data_dir(self, name: str) -> str:
        return os.path.join(self.layout.volumes, name, "_data")

    def create(self, name: str, *, exist_ok: bool = False) -> dict:
        ids.check_name(name, "volume")
        made = not os.path.exists(os.path.join(self.layout.volumes, name))
        try:
            with self.db.write() as conn:
                if conn.execute("SELECT 1 FROM volumes WHERE name = ?", (name,)).fetchone():
                    if exist_ok:
                        return self.inspect(name)
                    raise Conflict(f"volume {name!r} already exists", hint="pick another name")
                os.makedirs(self.data_dir(name), mode=0o755, exist_ok=True)
                conn.execute("INSERT INTO volumes (name, created_at, copy_up) VALUES (?, ?, 1)",
                             (name, utc_now()))
        except BaseException:
            if made:   # a failed commit (a full disk) leaves no directory of a volume that is not
                remove_tree(os.path.join(self.layout.volumes, name))
            raise
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
        # podman's keys; MountCount is 0 as ferry binds a volume's directory, mounting nothing of its own.
        return {"Name": name, "Driver": "local", "Mountpoint": self.data_dir(name),
                "CreatedAt": row["created_at"], "Labels": {}, "Scope": "local", "Options": {}, "MountCount": 0}

    def copy_up(self, name: str, source: str | None) -> bool:
        """podman's copy-up: a volume made by ferry gets the image's files at its
        mount point (`source`, in the container's root filesystem) once, at the
        first start that finds some there, and only while it is still empty."""
        if source is None or os.path.islink(source) or not os.path.isdir(source) or not os.listdir(source):
            return False
        with self.db.write() as conn:   # one start takes the copy, even two at once
            taken = conn.execute("UPDATE volumes SET copy_up = 0 WHERE name = ? AND copy_up = 1",
                                 (name,)).rowcount
        data = self.data_dir(name)
        if not taken or os.listdir(data):
            return False
        try:
            proc.run(["cp", "-a", "--", source + "/.", data], desc=f"copy the image's files into volume {name}",
                     timeout=None)   # as long as the files take
        except BaseException:   # as it was: empty, and still to be filled
            remove_tree(data)
            os.makedirs(data, mode=0o755, exist_ok=True)
            with self.db.write() as conn:
                conn.execute("UPDATE volumes SET copy_up = 1 WHERE name = ?", (name,))
            raise
        return True

    def remove(self, name: str, users: list[str], *, force: bool = False) -> None:
        """Delete a volume and its data. Never under a container: as podman does,
        it refuses while containers use it, and with force removes them first."""
        self.inspect(name)
        if users and force and self.engine is not None:
            for user in users:
                self.engine.containers.remove(user, force=True)
            users = self.engine.containers.users_of_volume(name)   # one made meanwhile stays
        if users:
            raise Conflict(f"volume {name!r} is used by container(s) {', '.join(users)}",
                           hint="remove them first, or use -f")
        with self.db.write() as conn:
            conn.execute("DELETE FROM volumes WHERE name = ?", (name,))
        remove_tree(os.path.join(self.layout.volumes, name))
