"""Machine-wide records of shared bridges, kept as files under /run/ferry/networks.

Several state roots on one machine may attach containers to one bridge, so
what must be unique per bridge lives here rather than in any root's database:

    <bridge>/network.json      the bridge's subnet and gateway, which every root must agree on
    <bridge>/roots/<root tag>  a root that has a network on this bridge
    <bridge>/leases/<ip>       which root's container holds an IP (and its MAC)

Callers hold machine_lock(REGISTRY_LOCK). A record whose root directory has
gone (a deleted test root, say) is stale and may be reclaimed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass

from ferry.store.layout import Layout
from ferry.util.fs import atomic_write

REGISTRY_DIR = "/run/ferry/networks"
REGISTRY_LOCK = "networks"
ROOT_TAG_CHARS = 12


def root_tag(root: str) -> str:
    """A short, stable name for a state root (its path may be long)."""
    return hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:ROOT_TAG_CHARS]


def root_is_live(root: str) -> bool:
    return os.path.exists(Layout(root).database)


@dataclass(frozen=True)
class BridgeShape:
    subnet: str
    gateway: str


@dataclass(frozen=True)
class Lease:
    ip: str
    mac: str
    root: str
    container_id: str

    @property
    def stale(self) -> bool:
        return not root_is_live(self.root)


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _listdir(path: str) -> list[str]:
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


class Registry:
    def __init__(self, base: str = REGISTRY_DIR):
        self.base = base

    def _dir(self, bridge: str, *parts: str) -> str:
        return os.path.join(self.base, bridge, *parts)

    # ---- bridges -------------------------------------------------------
    def bridges(self) -> dict[str, BridgeShape]:
        found = {}
        for bridge in _listdir(self.base):
            shape = self.shape(bridge)
            if shape:
                found[bridge] = shape
        return found

    def shape(self, bridge: str) -> BridgeShape | None:
        data = _read_json(self._dir(bridge, "network.json"))
        return BridgeShape(data["subnet"], data["gateway"]) if data else None

    def register(self, bridge: str, shape: BridgeShape, root: str) -> None:
        os.makedirs(self._dir(bridge, "roots"), mode=0o755, exist_ok=True)
        os.makedirs(self._dir(bridge, "leases"), mode=0o755, exist_ok=True)
        if self.shape(bridge) != shape:
            atomic_write(self._dir(bridge, "network.json"), json.dumps(asdict(shape)))
        marker = self._dir(bridge, "roots", root_tag(root))
        if _read_json(marker) != {"root": root}:
            atomic_write(marker, json.dumps({"root": root}))

    def cursor(self, bridge: str) -> str | None:
        """The address allocated last on this bridge, by any root."""
        try:
            with open(self._dir(bridge, "cursor")) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def set_cursor(self, bridge: str, ip: str) -> None:
        atomic_write(self._dir(bridge, "cursor"), ip)

    def unregister(self, bridge: str, root: str) -> None:
        try:
            os.unlink(self._dir(bridge, "roots", root_tag(root)))
        except FileNotFoundError:
            pass

    def live_roots(self, bridge: str) -> list[str]:
        roots = []
        for tag in _listdir(self._dir(bridge, "roots")):
            data = _read_json(self._dir(bridge, "roots", tag))
            if data and root_is_live(data["root"]):
                roots.append(data["root"])
        return roots

    def forget(self, bridge: str) -> list[str]:
        """Delete a bridge's records (stale leases included); return the leases dropped."""
        dropped = [f"lease {lease.ip} ({lease.container_id[:12]})" for lease in self.leases(bridge)]
        shutil.rmtree(self._dir(bridge), ignore_errors=True)
        return dropped

    # ---- leases --------------------------------------------------------
    def leases(self, bridge: str) -> list[Lease]:
        found = []
        for ip in _listdir(self._dir(bridge, "leases")):
            data = _read_json(self._dir(bridge, "leases", ip))
            if data:
                found.append(Lease(**data))
        return found

    def lease(self, bridge: str, ip: str) -> Lease | None:
        data = _read_json(self._dir(bridge, "leases", ip))
        return Lease(**data) if data else None

    def take(self, bridge: str, lease: Lease) -> None:
        """Create the lease file; FileExistsError if someone holds the IP."""
        path = self._dir(bridge, "leases", lease.ip)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(lease), f)
            f.flush()
            os.fsync(f.fileno())

    def drop(self, bridge: str, ip: str) -> None:
        try:
            os.unlink(self._dir(bridge, "leases", ip))
        except FileNotFoundError:
            pass
