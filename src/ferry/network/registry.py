"""Records of shared bridges, kept as files under /run/ferry/networks, one set per host.

Several state roots on one host may attach containers to one bridge, so
what must be unique per bridge lives here rather than in any root's database:

    <bridge>/network.json      the bridge's subnet and gateway, which every root must agree on
    <bridge>/roots/<root tag>  a root that has a network on this bridge
    <bridge>/leases/<ip>       which root's container holds an IP (and its MAC)
    <bridge>/cursor            the address allocated last
    <bridge>/pool              optional: the part of the subnet this host allocates from

A host is a network namespace: bridges live in one, so their records do too.
Commands in the machine's initial netns use /run/ferry/networks; a command in
another netns (a simulated host entered with `nsenter --net`, which shares
this filesystem) uses /run/ferry/netns/netns-<inode>/networks, so two such
hosts never see each other's leases (registry_dir()).

Callers hold machine_lock(REGISTRY_LOCK). A record whose root directory has
gone (a deleted test root, say) is stale and may be reclaimed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import NamedTuple

from ferry.store.layout import Layout
from ferry.util.fs import atomic_write

REGISTRY_DIR = "/run/ferry/networks"
NETNS_REGISTRY_BASE = "/run/ferry/netns"
NETNS_REGISTRY_PREFIX = "netns-"
OWN_NETNS = "/proc/self/ns/net"
INITIAL_NETNS = "/proc/1/ns/net"
# The kernel's own initial netns always has this inode (PROC_NET_INIT_INO in
# include/linux/proc_ns.h): the answer when PID 1's netns cannot be read, which
# happens even to root when PID 1 is not dumpable (seen on the project's VMs).
INIT_NET_INODE = 0xEFFFFFF9
REGISTRY_LOCK = "networks"
ROOT_TAG_CHARS = 12


def netns_inode(path: str = OWN_NETNS) -> int | None:
    """The inode naming a network namespace (what `ls -iL /run/netns` and
    `readlink /proc/PID/ns/net` show), or None when it cannot be read."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def registry_dir_for(inode: int) -> str:
    """The registry of the host that is network namespace `inode` (not the initial one)."""
    return os.path.join(NETNS_REGISTRY_BASE, f"{NETNS_REGISTRY_PREFIX}{inode}", "networks")


def registry_dir() -> str:
    """This host's registry: today's path in the initial netns (that of PID 1,
    or the kernel's first one when PID 1's cannot be read), and a directory of
    its own in any other."""
    own, initial = netns_inode(OWN_NETNS), netns_inode(INITIAL_NETNS)
    if own is None or own == (initial if initial is not None else INIT_NET_INODE):
        return REGISTRY_DIR
    return registry_dir_for(own)


def root_tag(root: str) -> str:
    """A short, stable name for a state root (its path may be long)."""
    return hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:ROOT_TAG_CHARS]


def root_is_live(root: str) -> bool:
    return os.path.exists(Layout(root).database)


class BridgeShape(NamedTuple):
    subnet: str
    gateway: str


class Lease(NamedTuple):
    """Which root's container holds an IP. `scope` says how its holder names the
    container's netns and veth (link.netns_name). After a same-machine migration
    the destination root holds the lease and `previous_*` names the source, which
    gets it back if the destination lets go before the source gave it up."""
    ip: str
    mac: str
    root: str
    container_id: str
    scope: str = ""
    previous_root: str = ""
    previous_scope: str = ""

    @property
    def stale(self) -> bool:
        return not root_is_live(self.root)

    @classmethod
    def from_json(cls, data: dict) -> Lease | None:
        try:
            return cls(**{name: str(data[name]) for name in cls._fields if name in data})
        except TypeError:   # a required field missing: not a lease ferry wrote
            return None


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _listdir(path: str) -> list[str]:
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


class Registry:
    def __init__(self, base: str | None = None):
        self.base = base if base is not None else registry_dir()

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
            atomic_write(self._dir(bridge, "network.json"), json.dumps(shape._asdict()))
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

    def pool(self, bridge: str) -> str | None:
        """The part of the bridge's subnet this host hands out by itself, if set:
        hosts that share one L2 segment each allocate from a pool of their own."""
        try:
            with open(self._dir(bridge, "pool")) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def set_pool(self, bridge: str, pool: str | None) -> None:
        if pool is None:
            try:
                os.unlink(self._dir(bridge, "pool"))
            except FileNotFoundError:
                pass
            return
        atomic_write(self._dir(bridge, "pool"), pool, mode=0o644)

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
            lease = None if ip.startswith(".") else self.lease(bridge, ip)   # dot: an atomic write's temp
            if lease:
                found.append(lease)
        return found

    def lease(self, bridge: str, ip: str) -> Lease | None:
        data = _read_json(self._dir(bridge, "leases", ip))
        return Lease.from_json(data) if isinstance(data, dict) else None

    def take(self, bridge: str, lease: Lease) -> None:
        """Create the lease file; FileExistsError if someone holds the IP."""
        path = self._dir(bridge, "leases", lease.ip)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(lease._asdict(), f)
            f.flush()
            os.fsync(f.fileno())

    def rewrite(self, bridge: str, lease: Lease) -> None:
        """Replace the lease file of lease.ip in one step (a handover between roots)."""
        atomic_write(self._dir(bridge, "leases", lease.ip), json.dumps(lease._asdict()), mode=0o644)

    def drop(self, bridge: str, ip: str) -> None:
        try:
            os.unlink(self._dir(bridge, "leases", ip))
        except FileNotFoundError:
            pass
