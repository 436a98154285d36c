"""Named volumes and the -v option."""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

from ferry.store import ids
from ferry.store.db import Database
from ferry.store.layout import Layout
from ferry.util.errors import Conflict, InUse, NotFound, UsageError
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
# labels: a JSON object of strings (volume create --label); options: {"given": [the -o texts]}.
ADDED_COLUMNS = {"copy_up": "INTEGER NOT NULL DEFAULT 0", "labels": "TEXT NOT NULL DEFAULT '{}'",
                 "options": "TEXT NOT NULL DEFAULT '{}'"}
VOLUME_KEYS = ("kind", "source", "destination", "readonly")
OPTIONAL_VOLUME_KEYS = ("nocopy", "anonymous", "volume_options", "volume_labels")
MAX_LABELS = 256
MAX_LABEL_TEXT = 4096
MAX_OPTIONS = 16
MAX_OPTION_TEXT = 1024
VOLUME_FILTERS = ("name", "label", "driver", "dangling", "opt")   # podman 4.3.1's, less until/scope
PRUNE_FILTERS = ("label",)
LOCAL_DRIVER = "local"
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
    # The named volume's `volume create -o` and `--label` (KEY=VALUE), copied from it
    # when the container is made: a restore that must make the volume (on another
    # host) makes it alike, and a tmpfs volume mounts the same tmpfs, whose content
    # CRIU carries. Checked by the parsers `volume create` uses: an archive's record
    # gets no more than a user's command line (no device=, no host path).
    volume_options: tuple[str, ...] = ()
    volume_labels: tuple[str, ...] = ()

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
        for key in ("volume_options", "volume_labels"):
            value = getattr(self, key)
            if not isinstance(value, tuple) or len(value) > MAX_LABELS or not all(isinstance(t, str) for t in value):
                raise ValueError(f"volume {key} must be a list of at most {MAX_LABELS} strings")
            if value and self.kind != "volume":
                raise ValueError(f"volume {key} applies to named volumes only")
        try:
            parse_options(self.volume_options)
            parse_labels(self.volume_labels)
        except UsageError as error:
            raise ValueError(str(error)) from None

    def to_dict(self) -> dict:
        data = {"kind": self.kind, "source": self.source, "destination": self.destination,
                "readonly": self.readonly}
        if self.nocopy:   # only then: records without it stay readable by older ferry
            data["nocopy"] = True
        if self.anonymous:   # the same
            data["anonymous"] = True
        for key in ("volume_options", "volume_labels"):   # the same
            if getattr(self, key):
                data[key] = list(getattr(self, key))
        return data

    @classmethod
    def from_dict(cls, data) -> "VolumeSpec":
        """From its JSON form, strictly (ValueError)."""
        optional = tuple(k for k in OPTIONAL_VOLUME_KEYS if isinstance(data, dict) and k in data)
        exact_keys(data, VOLUME_KEYS + optional, "volume")
        made = {}
        for key in ("volume_options", "volume_labels"):
            if key in data:
                if not isinstance(data[key], list):
                    raise ValueError(f"volume {key} must be a list of strings")
                made[key] = tuple(data[key])
        return cls(data["kind"], data["source"], data["destination"], data["readonly"],
                   data.get("nocopy", False), data.get("anonymous", False), **made)

    def __str__(self) -> str:
        return f"{self.source}:{self.destination}" + (":ro" if self.readonly else "")

    @property
    def tmpfs(self) -> tuple[str, ...] | None:
        """A tmpfs volume's own mount options; None for a directory bound in."""
        return parse_options(self.volume_options).tmpfs if self.volume_options else None

    def tmpfs_mount_options(self) -> tuple[str, ...]:
        """A tmpfs volume's mount: its options, podman's tmpfs defaults (the
        image's files copied in, unless nocopy), read-only if asked."""
        from ferry.util.hostspec import tmpfs_options
        extra = (("ro",) if self.readonly else ()) + (("notmpcopyup",) if self.nocopy else ())
        return tuple(tmpfs_options(tuple(self.tmpfs or ()) + extra))


def _check_path(path, what: str) -> None:
    """Absolute, normalised, no NUL: the form parse_volume makes."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > MAX_PATH \
            or os.path.normpath(path) != path or path.startswith("//"):
        raise ValueError(f"{what} {shown(path)} must be an absolute, normalised path")


def _check_tmpfs_options(options) -> None:
    """Only what --tmpfs may ask the kernel for (engine/hostconfig.py): an
    archive's record must not reach a mount call with anything else."""
    from ferry.engine.hostconfig import TmpfsMount
    if not isinstance(options, tuple):
        raise ValueError("volume tmpfs must be a list of options")
    TmpfsMount("/volume", options)   # ValueError for any option --tmpfs would refuse


def parse_labels(texts) -> dict[str, str]:
    """--label KEY[=VALUE] of a volume or network (a later KEY wins, a bare KEY is
    empty); UsageError as podman's "invalid label format"."""
    labels: dict[str, str] = {}
    for text in texts:
        key, _, value = text.partition("=")
        if not key or "\0" in text or len(text) > MAX_LABEL_TEXT:
            raise UsageError(f"unable to process labels: invalid label format: {text!r}")
        labels[key] = value
    if len(labels) > MAX_LABELS:
        raise UsageError(f"at most {MAX_LABELS} labels")
    return labels


class VolumeOptions(NamedTuple):
    """`volume create -o` of the local driver, as far as ferry takes them."""
    given: tuple[str, ...]   # the -o texts
    shown: dict            # podman's Options, as given (with UID and GID as podman adds them)
    tmpfs: tuple[str, ...] | None   # a tmpfs volume's mount options
    uid: int | None        # a directory volume's owner (o=uid=,gid= without type)
    gid: int | None


def parse_options(texts) -> VolumeOptions:
    """podman's local driver options: type=tmpfs (with device=tmpfs, as its
    examples write it) and o=... of tmpfs mount options; without a type only
    o=uid=N,gid=N, the owner of the volume's directory. device= naming a host
    device or path is refused: it would mount host storage (a host privilege)."""
    if len(texts) > MAX_OPTIONS:
        raise UsageError(f"at most {MAX_OPTIONS} volume options")
    given: dict[str, str] = {}
    for text in texts:
        key, equals, value = text.partition("=")
        if not equals or key not in ("type", "device", "o") or len(text) > MAX_OPTION_TEXT or "\0" in text:
            raise UsageError(f"invalid mount option {key} for driver 'local'",
                             hint="ferry takes -o type=tmpfs, device=tmpfs and o=OPTIONS")
        given[key] = value
    kind = given.get("type")
    if kind not in (None, "tmpfs"):
        raise UsageError(f"volume type {kind!r} is not supported: ferry makes directory and tmpfs volumes only",
                         hint="use -o type=tmpfs, or no type for a directory")
    if "device" in given and not (kind == "tmpfs" and given["device"] == "tmpfs"):
        raise UsageError(f"volume device {given['device']!r} is refused: a volume never mounts host storage",
                         hint="bind a host directory with -v /host/path:/container/path instead")
    mount_options = [o for o in given.get("o", "").split(",") if o]
    shown = dict(given)
    owner: dict[str, int] = {}
    for option in mount_options:
        key, _, value = option.partition("=")
        if key in ("uid", "gid"):
            if not value.isdigit() or int(value) >= 1 << 32:
                raise UsageError(f"cannot convert {key.upper()} {value} to integer")
            owner[key] = int(value)
            shown[key.upper()] = value
    if kind == "tmpfs":
        try:
            _check_tmpfs_options(tuple(mount_options))
        except ValueError as error:
            raise UsageError(f"bad tmpfs volume option: {error}") from None
        return VolumeOptions(tuple(texts), shown, tuple(mount_options), None, None)
    others = [o for o in mount_options if o.partition("=")[0] not in ("uid", "gid")]
    if others:
        raise UsageError(f"volume option o={others[0]} needs -o type=tmpfs",
                         hint="a directory volume takes only o=uid=N,gid=N")
    return VolumeOptions(tuple(texts), shown, None, owner.get("uid"), owner.get("gid"))


def parse_filters(texts, allowed: tuple[str, ...], what: str) -> dict[str, list[str]]:
    """--filter KEY=VALUE lines, by key; how the keys combine is the caller's
    (podman 4.3.1: any of them for volumes, all of them for networks)."""
    filters: dict[str, list[str]] = {}
    for text in texts:
        key, equals, value = text.partition("=")
        if key not in allowed:
            raise UsageError(f"{key!r} is an invalid {what} filter".replace("'", '"'),
                             hint=f"use one of {', '.join(allowed)}")
        filters.setdefault(key, []).append(value)
    return filters


def labels_match(labels: dict, wanted: list[str]) -> bool:
    """podman's label=KEY or label=KEY=VALUE: any of them."""
    for text in wanted:
        key, equals, value = text.partition("=")
        if key in labels and (not equals or not value or labels[key] == value):
            return True
    return False


def truth(text: str, what: str) -> bool:
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise UsageError(f"{what} filter value must be true or false, not {text!r}")


def name_matches(name: str, patterns: list[str]) -> bool:
    """podman's name filter: a regular expression found anywhere in the name."""
    for pattern in patterns:
        try:
            if re.search(pattern, name):
                return True
        except re.error:
            raise UsageError(f"bad name filter {pattern!r}: not a regular expression") from None
    return False


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

    def create(self, name: str, *, exist_ok: bool = False, labels: dict | None = None,
               options: VolumeOptions | None = None) -> dict:
        """A volume: a directory of ferry's, or a tmpfs per container (`options`,
        see parse_options), with podman's labels."""
        ids.check_name(name, "volume")
        options = options or parse_options(())
        made = not os.path.exists(os.path.join(self.layout.volumes, name))
        try:
            with self.db.write() as conn:
                if conn.execute("SELECT 1 FROM volumes WHERE name = ?", (name,)).fetchone():
                    if exist_ok:
                        return self.inspect(name)
                    raise Conflict(f"volume {name!r} already exists", hint="pick another name")
                os.makedirs(self.data_dir(name), mode=0o755, exist_ok=True)
                if options.uid is not None or options.gid is not None:   # o=uid=,gid= (podman chowns it)
                    os.chown(self.data_dir(name), -1 if options.uid is None else options.uid,
                             -1 if options.gid is None else options.gid)
                conn.execute("INSERT INTO volumes (name, created_at, copy_up, labels, options) "
                             "VALUES (?, ?, 1, ?, ?)",
                             (name, utc_now(), json.dumps(labels or {}),
                              json.dumps({"given": list(options.given)})))
        except BaseException:
            if made:   # a failed commit (a full disk) leaves no directory of a volume that is not
                remove_tree(os.path.join(self.layout.volumes, name))
            raise
        return self.inspect(name)

    def provide(self, specs, undo) -> tuple:
        """A new container's -v list: each named volume made if missing (`undo`
        removes it again), its -o and labels recorded in its entry. An entry
        that has them already (a restored container's record) keeps them, and
        its missing volume is made with them again."""
        provided = []
        for spec in specs:
            if spec.kind == "volume":
                if not self.exists(spec.source):
                    self.create(spec.source, labels=parse_labels(spec.volume_labels),
                                options=parse_options(spec.volume_options))
                    undo.push(self.remove, spec.source, [])
                elif not (spec.volume_options or spec.volume_labels):
                    volume = self.inspect(spec.source)
                    spec = spec._replace(volume_options=self.given_options(spec.source),
                                         volume_labels=tuple(f"{k}={v}" for k, v in volume["Labels"].items()))
            provided.append(spec)
        return tuple(provided)

    def exists(self, name: str) -> bool:
        return self.db.read().execute("SELECT 1 FROM volumes WHERE name = ?", (name,)).fetchone() is not None

    def list(self) -> list[dict]:
        rows = self.db.read().execute("SELECT name FROM volumes ORDER BY name").fetchall()
        return [self.inspect(r["name"]) for r in rows]

    def inspect(self, name: str) -> dict:
        row = self._row(name)
        labels = _json_object(row["labels"])
        try:
            shown = parse_options(self.given_options(name)).shown
        except UsageError:   # a record edited by hand
            shown = {}
        # podman's keys; MountCount is 0 as ferry binds a volume's directory, mounting nothing of its own.
        data = {"Name": name, "Driver": LOCAL_DRIVER, "Mountpoint": self.data_dir(name),
                "CreatedAt": row["created_at"], "Labels": labels, "Scope": "local", "Options": shown}
        for key in ("UID", "GID"):   # podman shows the owner o= gave, as a number too
            if key in shown:
                data[key] = int(shown[key])
        data["MountCount"] = 0
        return data

    def _row(self, name: str):
        row = self.db.read().execute("SELECT * FROM volumes WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no such volume {name!r}", hint="see 'ferry volume ls'")
        return row

    def given_options(self, name: str) -> tuple[str, ...]:
        """The volume's `volume create -o` texts."""
        given = _json_object(self._row(name)["options"]).get("given")
        return tuple(t for t in given if isinstance(t, str)) if isinstance(given, list) else ()

    def used(self) -> set[str]:
        """The volumes some container names, whatever its state: a stopped or
        checkpointed container still needs its volumes to start or restore."""
        return {v.source for c in self.engine.containers.list(all_states=True) for v in c.config.named_volumes}

    def filtered(self, filters: dict[str, list[str]]) -> list[dict]:
        """`volume ls --filter` (see parse_filters). podman 4.3.1 lists a volume
        that any one of the filters matches, whatever their keys."""
        volumes = self.list()
        if not filters:
            return volumes
        used = self.used() if "dangling" in filters else set()
        def matches(volume: dict, key: str, value: str) -> bool:
            if key == "name":
                return name_matches(volume["Name"], [value])
            if key == "label":
                return labels_match(volume["Labels"], [value])
            if key == "driver":
                return volume["Driver"] == value
            if key == "opt":
                return labels_match(volume["Options"], [value])
            return truth(value, "dangling") == (volume["Name"] not in used)
        for value in filters.get("dangling", []):   # a bad value fails even with no volume to test
            truth(value, "dangling")
        return [v for v in volumes if any(matches(v, key, value) for key, values in filters.items()
                                          for value in values)]

    def prunable(self, filters: dict[str, list[str]]) -> list[str]:
        """The volumes `volume prune` removes: those no container names."""
        used = self.used()
        return [v["Name"] for v in self.list()
                if v["Name"] not in used and ("label" not in filters or labels_match(v["Labels"], filters["label"]))]

    def prune(self, names: list[str]) -> list[str]:
        """Remove these volumes unless a container names one by now; the removed."""
        removed = []
        for name in names:
            try:
                self.remove(name, self.engine.containers.users_of_volume(name))
            except (Conflict, NotFound):   # taken (or removed) meanwhile: not unused any more
                continue
            removed.append(name)
        return removed

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
            raise InUse(f"volume {name!r} is used by container(s) {', '.join(users)}",
                           hint="remove them first, or use -f")
        with self.db.write() as conn:
            conn.execute("DELETE FROM volumes WHERE name = ?", (name,))
        remove_tree(os.path.join(self.layout.volumes, name))


def _json_object(text: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
