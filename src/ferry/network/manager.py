"""NetworkManager: one root's networks, address leases, netns and published ports.

Each root's database records its networks and its containers' reservations;
what must be unique on a host (an IP on a shared bridge, a host port) is
coordinated through the registry files (one set per host network namespace)
and ferry's nft table under machine locks, taken in the order registry -> nft.

A container that moves between roots keeps its ID, IP and MAC: the destination
reserves it with adopt=True, which takes over a lease the source root on the
same host still holds for that container, and names the container's netns and
veth apart from the source's (its reservation's scope), since both exist until
the move completes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import sys
from typing import NamedTuple

from ferry.network import hostfiles, ipam, link, nft, portholder
from ferry.network.ports import PortMapping, check_distinct, ensure_host_port_free, pick_free_port
from ferry.network.registry import REGISTRY_LOCK, BridgeShape, Lease, Registry, root_is_live, root_tag
from ferry.store.db import Database
from ferry.store.ids import check_name, short
from ferry.store.layout import Layout
from ferry.util import proc
from ferry.util.errors import Conflict, FerryError, InUse, NotFound, UsageError
from ferry.util.locks import machine_lock
from ferry.util.timefmt import utc_now

DDL = """
CREATE TABLE IF NOT EXISTS networks (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    bridge TEXT NOT NULL UNIQUE,
    subnet TEXT NOT NULL,
    gateway TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS network_leases (
    container_id TEXT PRIMARY KEY,
    network TEXT NOT NULL REFERENCES networks(name),
    ip TEXT NOT NULL,
    mac TEXT NOT NULL,
    UNIQUE (network, ip)
)
"""
ADDED_LEASE_COLUMNS = {"scope": "TEXT NOT NULL DEFAULT ''"}
# network create --internal, --label (a JSON object of strings), --ip-range.
ADDED_NETWORK_COLUMNS = {"internal": "INTEGER NOT NULL DEFAULT 0", "labels": "TEXT NOT NULL DEFAULT '{}'",
                         "ip_range": "TEXT NOT NULL DEFAULT ''"}
# The leases of a container's further networks (eth1, eth2...): network_leases
# keeps its first, so records made before several networks read the same.
MORE_DDL = """
CREATE TABLE IF NOT EXISTS network_more_leases (
    container_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    network TEXT NOT NULL REFERENCES networks(name),
    ip TEXT NOT NULL,
    mac TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (container_id, position),
    UNIQUE (container_id, network),
    UNIQUE (network, ip)
)
"""
MAC_ATTEMPTS = 16
NETWORK_MODES = ("bridge", "host", "none")   # names `run --network` takes as modes (podman's)
HOST_HOSTS = "/etc/hosts"


class Network(NamedTuple):
    name: str
    id: str
    bridge: str
    subnet: str
    gateway: str
    created: str
    internal: bool = False     # no route out: neither masquerade nor forwarding beyond its bridge
    labels: tuple[tuple[str, str], ...] = ()
    ip_range: str = ""         # where its addresses come from (a CIDR in the subnet), "" the whole subnet

    @property
    def prefixlen(self) -> int:
        return int(self.subnet.split("/")[1])

    @classmethod
    def from_row(cls, row) -> "Network":
        data = dict(row)
        try:
            labels = json.loads(data.get("labels") or "{}")
        except ValueError:
            labels = {}
        return cls(data["name"], data["id"], data["bridge"], data["subnet"], data["gateway"], data["created"],
                   bool(data.get("internal", 0)),
                   tuple((str(k), str(v)) for k, v in labels.items()) if isinstance(labels, dict) else (),
                   data.get("ip_range") or "")


class Attachment(NamedTuple):
    network: str
    netns: str            # its path is /run/netns/<netns>
    netns_path: str
    interface: str        # "eth0" inside the container
    ip: str
    prefixlen: int
    mac: str
    gateway: str
    host_veth: str


class Reservation(NamedTuple):
    container_id: str
    network: str
    ip: str
    mac: str
    scope: str = ""       # "" or this root's tag: see link.netns_name
    position: int = 0     # its interface: eth0 for the first network, eth1...


def network_id(name: str, bridge: str, subnet: str) -> str:
    """Stable, so roots sharing a bridge show the same ID for the same network."""
    return hashlib.sha256(f"{name}|{bridge}|{subnet}".encode()).hexdigest()


class NetworkManager:
    def __init__(self, layout: Layout, db: Database, registry: Registry | None = None):
        self.layout = layout
        self.db = db
        self.registry = registry or Registry()
        self.root = layout.root
        self.root_tag = root_tag(layout.root)
        db.ensure(DDL)
        db.add_columns("network_leases", ADDED_LEASE_COLUMNS)
        db.add_columns("networks", ADDED_NETWORK_COLUMNS)
        db.ensure(MORE_DDL)

    # ---- networks --------------------------------------------------------
    def list(self) -> list[Network]:
        rows = self.db.read().execute("SELECT * FROM networks ORDER BY name").fetchall()
        return [Network.from_row(row) for row in rows]

    def _find(self, name: str) -> Network | None:
        row = self.db.read().execute("SELECT * FROM networks WHERE name = ?", (name,)).fetchone()
        return Network.from_row(row) if row else None

    def has(self, name: str) -> bool:
        """Whether the network exists here (the default one always may)."""
        return name == ipam.DEFAULT_NETWORK or self._find(name) is not None

    def get(self, name: str) -> Network:
        if name == ipam.DEFAULT_NETWORK:
            return self.default()
        return self._existing(name)

    def _existing(self, name: str) -> Network:
        network = self._find(name)
        if network is None:
            raise NotFound(f"network {name!r} not found", hint="see 'ferry network ls'")
        return network

    def default(self) -> Network:
        """The network containers join unless told otherwise, made on first use."""
        found = self._find(ipam.DEFAULT_NETWORK)
        if found:
            return found
        try:
            return self.create(ipam.DEFAULT_NETWORK)
        except Conflict:
            found = self._find(ipam.DEFAULT_NETWORK)   # another ferry process made it first
            if found:
                return found
            raise

    def create(self, name: str, subnet: str | None = None, gateway: str | None = None,
               *, bridge: str | None = None, internal: bool = False, labels: dict | None = None,
               ip_range: str | None = None) -> Network:
        """Record a network; its bridge is made when the first container attaches."""
        check_name(name, "network")
        if (gateway or ip_range) and not subnet:   # podman's rule: they are parts of a given subnet
            raise UsageError("cannot set gateway or range without subnet", hint="add --subnet CIDR")
        if name in NETWORK_MODES:   # `run --network NAME` would mean the mode
            raise UsageError(f'cannot create network with name "{name}" because it conflicts with a valid '
                             "network mode", hint="choose another name")
        requested = ipam.parse_subnet(subnet) if subnet else None
        if bridge:
            ipam.check_ifname(bridge)
        if gateway and requested:
            ipam.gateway_for(requested, gateway)   # a bad gateway is a UsageError before any lock
        if ip_range:
            parsed_range = ipam.parse_subnet(ip_range)
            if not parsed_range.subnet_of(requested):
                raise UsageError(f"ip range {ip_range} is not inside subnet {requested}",
                                 hint=f"choose a CIDR inside {requested}")
            ip_range = str(parsed_range)
        with machine_lock(REGISTRY_LOCK):
            if self._find(name):
                raise Conflict(f"network {name} already exists",
                               hint="choose another name, or remove it with 'ferry network rm'")
            mine = self.list()
            bridge = bridge or self._pick_bridge(name, mine)
            if any(n.bridge == bridge for n in mine):
                owner = next(n.name for n in mine if n.bridge == bridge)
                raise Conflict(f"bridge {bridge} already carries network {owner} in this root",
                               hint="choose another --interface-name")
            self._refuse_foreign_interface(bridge)
            shape = self._shape_for(name, bridge, requested, gateway, mine)
            network = Network(name, network_id(name, bridge, shape.subnet), bridge, shape.subnet,
                              shape.gateway, utc_now(digits=0), internal, tuple((labels or {}).items()),
                              ip_range or "")
            if internal and self.registry.live_roots(bridge):   # its rules are the bridge's, for all roots
                raise Conflict(f"bridge {bridge} is shared with another ferry root; an internal network needs "
                               "its own", hint="choose another --interface-name")
            self.registry.register(bridge, shape, self.root)
            try:
                with self.db.write() as conn:
                    conn.execute("INSERT INTO networks (name, id, bridge, subnet, gateway, created, internal, "
                                 "labels, ip_range) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 (network.name, network.id, network.bridge, network.subnet,
                                  network.gateway, network.created, int(internal),
                                  json.dumps(dict(network.labels)), network.ip_range))
            except BaseException:
                self.registry.unregister(bridge, self.root)
                if not self.registry.live_roots(bridge):
                    self.registry.forget(bridge)   # or its subnet would stay taken by no one
                raise
        return network

    def _pick_bridge(self, name: str, mine: list[Network]) -> str:
        if name == ipam.DEFAULT_NETWORK:
            return ipam.DEFAULT_BRIDGE
        return ipam.first_free_bridge({ipam.DEFAULT_BRIDGE, *self.registry.bridges(),
                                       *(n.bridge for n in mine), *link.interfaces()})

    def _shape_for(self, name: str, bridge: str, requested, gateway: str | None,
                   mine: list[Network]) -> BridgeShape:
        """Join the bridge's existing shape, or choose a subnet that overlaps nothing."""
        shared = self.registry.shape(bridge)
        if shared and not self.registry.live_roots(bridge):
            self._teardown_bridge(bridge)      # left by roots that no longer exist
            shared = None
        if shared:
            if (requested and str(requested) != shared.subnet) or (gateway and gateway != shared.gateway):
                raise Conflict(f"bridge {bridge} is shared with another ferry root as subnet "
                               f"{shared.subnet} gateway {shared.gateway}",
                               hint=f"use --subnet {shared.subnet}, or another --interface-name")
            return shared
        in_use = [(ipam.parse_subnet(n.subnet), f"network {n.name}") for n in mine]
        for other, other_shape in self.registry.bridges().items():
            if other == bridge or other in {n.bridge for n in mine}:
                continue
            if not self.registry.live_roots(other):
                self._teardown_bridge(other)   # left by roots that no longer exist (or a failed create)
                continue
            in_use.append((ipam.parse_subnet(other_shape.subnet), f"bridge {other}"))
        in_use += [(ipaddress.ip_network(dst, strict=False), f"host route {dst} dev {dev}")
                   for dst, dev in link.routes() if dev != bridge]
        hint = "choose another --subnet"
        if requested is None and name == ipam.DEFAULT_NETWORK:
            requested = ipam.parse_subnet(ipam.DEFAULT_SUBNET)
            hint = f"create it with a free subnet first: 'ferry network create --subnet CIDR {name}'"
        elif requested is None:
            requested = ipam.parse_subnet(ipam.first_free_subnet(ipam.CREATED_SUBNETS,
                                                                 (s for s, _ in in_use)))
        for used, what in in_use:
            if requested.overlaps(used):
                raise Conflict(f"subnet {requested} overlaps {what}", hint=hint)
        return BridgeShape(str(requested), ipam.gateway_for(requested, gateway))

    def remove(self, name: str, *, force: bool = False) -> None:
        """Delete a network; its bridge goes too unless another root still uses it.

        With force, its containers are disconnected and their leases dropped first.
        """
        network = self._existing(name)
        users = self.reservations(name)
        if users and not force:
            raise self._in_use(network, users)
        for reservation in users:
            self.release(reservation.container_id)
        with machine_lock(REGISTRY_LOCK):
            users = self.reservations(name)
            if users:   # a container joined meanwhile
                raise self._in_use(network, users)
            with self.db.write() as conn:
                conn.execute("DELETE FROM networks WHERE name = ?", (name,))
            self.registry.unregister(network.bridge, self.root)
            if not self.registry.live_roots(network.bridge):
                self._teardown_bridge(network.bridge)

    @staticmethod
    def _in_use(network: Network, users: list[Reservation]) -> InUse:
        ids = ", ".join(short(r.container_id) for r in users[:3]) + (" ..." if len(users) > 3 else "")
        return InUse(f"network {network.name} is in use by {len(users)} container(s): {ids}",
                        hint="remove those containers first, or use -f")

    def _teardown_bridge(self, bridge: str) -> list[str]:
        """Bridge, its masquerade rules and its registry records (caller holds the registry lock)."""
        removed = [f"bridge {bridge}"] if link.is_ferry_bridge(bridge) and link.delete_link(bridge) else []
        with machine_lock(nft.NFT_LOCK):
            rules = nft.list_rules()
            removed += self._delete_rules(rules, nft.owned_by_bridge(rules, bridge))
            removed += self._delete_uplink_rules(bridge)
        return removed + self.registry.forget(bridge)

    # ---- leases ----------------------------------------------------------
    def reservation(self, container_id: str) -> Reservation | None:
        row = self.db.read().execute("SELECT * FROM network_leases WHERE container_id = ?",
                                     (container_id,)).fetchone()
        return Reservation(**dict(row)) if row else None

    def reservations(self, network: str | None = None) -> list[Reservation]:
        """Every lease (of a container's first network, and of its further ones)."""
        found = []
        for table in ("network_leases", "network_more_leases"):
            query, params = f"SELECT * FROM {table}", ()
            if network is not None:
                query, params = query + " WHERE network = ?", (network,)
            found += [Reservation(**dict(row)) for row in self.db.read().execute(query, params).fetchall()]
        return found

    def more_reservations(self, container_id: str) -> list[Reservation]:
        """The leases of the container's further networks, eth1 first."""
        rows = self.db.read().execute("SELECT * FROM network_more_leases WHERE container_id = ? ORDER BY position",
                                      (container_id,)).fetchall()
        return [Reservation(**dict(row)) for row in rows]

    def all_reservations(self, container_id: str) -> list[Reservation]:
        """Its first network's lease, then the others'; [] for a container on none."""
        first = self.reservation(container_id)
        return [first, *self.more_reservations(container_id)] if first else []

    def _lease_row(self, container_id: str, position: int) -> Reservation | None:
        if not position:
            return self.reservation(container_id)
        row = self.db.read().execute("SELECT * FROM network_more_leases WHERE container_id = ? AND position = ?",
                                     (container_id, position)).fetchone()
        return Reservation(**dict(row)) if row else None

    def reserve(self, container_id: str, network: str, *, ip: str | None = None,
                mac: str | None = None, adopt: bool = False, scoped: bool = False,
                position: int = 0) -> tuple[str, str]:
        """Give a container its IP and MAC for its whole lifetime (idempotent).

        `adopt` is for a container arriving from another root (a migration keeps
        its ID): a lease of `ip` that another live root on this host holds for
        the same container ID passes to this root (and goes back to it if this
        root lets go first); any other holder is still refused. The container's
        netns and veth get names of this root's own (the source's twin may still
        exist until the move completes). `scoped` gives those names alone: to
        a container restored with the ID it had elsewhere, whose twin may run on.
        `position` 1, 2... reserves its further networks' addresses (eth1...),
        after its first (position 0)."""
        net = self.get(network)
        subnet = ipam.parse_subnet(net.subnet)
        wanted_ip = ipam.check_container_ip(subnet, net.gateway, ip) if ip else None
        wanted_mac = ipam.parse_mac(mac) if mac else None
        if position:
            first = self.reservation(container_id)
            if first is None:
                raise NotFound(f"container {short(container_id)} has no first network", hint="reserve it first")
            if first.network == net.name or any(r.network == net.name and r.position != position
                                                for r in self.more_reservations(container_id)):
                raise Conflict(f"container {short(container_id)} joins network {net.name} already",
                               hint="name each network once")
            scoped = scoped or bool(first.scope)
        with machine_lock(REGISTRY_LOCK):
            current = self._lease_row(container_id, position)
            if current:
                if current.network == net.name and wanted_ip in (None, current.ip) \
                        and wanted_mac in (None, current.mac):
                    self._hold_lease(net, current)
                    return current.ip, current.mac
                raise Conflict(f"container {short(container_id)} already has address {current.ip} "
                               f"on network {current.network}", hint="release it first")
            self.registry.register(net.bridge, BridgeShape(net.subnet, net.gateway), self.root)
            leases = {lease.ip: lease for lease in self.registry.leases(net.bridge)
                      if not self._reclaimable(lease)}
            handed_over = None
            if wanted_ip in leases:
                handed_over = leases.pop(wanted_ip)
                if not (adopt and handed_over.container_id == container_id):
                    raise self._taken(handed_over)
                if wanted_mac not in (None, handed_over.mac):
                    raise Conflict(f"IP {wanted_ip} of container {short(container_id)} has MAC "
                                   f"{handed_over.mac} in root {handed_over.root}, not {wanted_mac}",
                                   hint="keep the container's MAC, or choose another --ip")
                wanted_mac = handed_over.mac
            allocated = wanted_ip or ipam.next_free_ip(self._pool(net, subnet), net.gateway, leases,
                                                       after=self.registry.cursor(net.bridge))
            chosen = Reservation(container_id, net.name, allocated,
                                 self._choose_mac(wanted_mac, leases.values()),
                                 scope=self.root_tag if adopt or scoped else "", position=position)
            if not wanted_ip:
                self.registry.set_cursor(net.bridge, allocated)
            if handed_over:
                self.registry.rewrite(net.bridge, self._lease_of(chosen, previous=handed_over))
            else:
                self._hold_lease(net, chosen)
            try:
                with self.db.write() as conn:
                    if position:
                        conn.execute("INSERT INTO network_more_leases (container_id, position, network, ip, mac, "
                                     "scope) VALUES (?, ?, ?, ?, ?, ?)",
                                     (chosen.container_id, position, chosen.network, chosen.ip, chosen.mac,
                                      chosen.scope))
                    else:
                        conn.execute("INSERT INTO network_leases (container_id, network, ip, mac, scope) "
                                     "VALUES (?, ?, ?, ?, ?)",
                                     (chosen.container_id, chosen.network, chosen.ip, chosen.mac, chosen.scope))
            except BaseException:
                if handed_over:
                    self.registry.rewrite(net.bridge, handed_over)
                else:
                    self.registry.drop(net.bridge, chosen.ip)
                raise
        return chosen.ip, chosen.mac

    def _pool(self, net: Network, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        """Where new addresses come from: this host's pool of the subnet, if it has one."""
        pool = net.ip_range or self.registry.pool(net.bridge)
        if pool:
            try:
                candidate = ipaddress.IPv4Network(pool)
            except ValueError:
                return subnet
            if candidate.subnet_of(subnet):
                return candidate
        return subnet

    def set_pool(self, network: str, pool: str | None) -> Network:
        """Hand out new addresses of this network on this host only from `pool`
        (a CIDR inside its subnet; None: the whole subnet again). Hosts whose
        bridges share one L2 segment have separate lease registries, so each
        needs a pool of its own. An explicit --ip, and an address a container
        brings along when it moves here, may still lie anywhere in the subnet."""
        net = self.get(network)
        subnet = ipam.parse_subnet(net.subnet)
        if pool is not None:
            parsed = ipam.parse_subnet(pool)
            if not parsed.subnet_of(subnet):
                raise UsageError(f"pool {pool} is not inside subnet {net.subnet} of network {net.name}",
                                 hint=f"choose a CIDR inside {net.subnet}")
            pool = str(parsed)
        with machine_lock(REGISTRY_LOCK):
            self.registry.register(net.bridge, BridgeShape(net.subnet, net.gateway), self.root)
            self.registry.set_pool(net.bridge, pool)
        return net

    def _lease_of(self, reservation: Reservation, previous: Lease | None = None) -> Lease:
        lease = Lease(reservation.ip, reservation.mac, self.root, reservation.container_id,
                      scope=reservation.scope)
        if previous is not None:
            lease = lease._replace(previous_root=previous.root, previous_scope=previous.scope)
        return lease

    @staticmethod
    def _choose_mac(wanted: str | None, leases) -> str:
        used = {lease.mac: lease for lease in leases}
        if wanted:
            if wanted in used:
                holder = used[wanted]
                raise Conflict(f"MAC {wanted} is already used by container {short(holder.container_id)} "
                               f"(root {holder.root})", hint="choose another --mac-address")
            return wanted
        for _ in range(MAC_ATTEMPTS):
            mac = ipam.random_mac()
            if mac not in used:
                return mac
        raise Conflict("could not find an unused MAC address", hint="pass --mac-address")

    def _reclaimable(self, lease: Lease) -> bool:
        """A lease of a vanished root, or this root's lease with no reservation behind it
        (a crash between the file and the database row; callers hold the registry lock)."""
        if lease.stale:
            return True
        return lease.root == self.root and not any(r.ip == lease.ip for r in self.all_reservations(lease.container_id))

    @staticmethod
    def _taken(lease: Lease) -> Conflict:
        return Conflict(f"IP {lease.ip} is already leased to container {short(lease.container_id)} "
                        f"(root {lease.root})", hint="choose another --ip, or remove that container")

    def _hold_lease(self, net: Network, reservation: Reservation) -> None:
        """Make sure the host's lease file is ours (it may be gone after a reboot)."""
        existing = self.registry.lease(net.bridge, reservation.ip)
        if existing:
            if existing.root == self.root and existing.container_id == reservation.container_id:
                return
            if existing.container_id == reservation.container_id and existing.previous_root == self.root \
                    and not link.is_up(link.host_veth_name(existing.container_id, existing.scope)):
                # Adopted from this root by a move whose destination copy is not on the
                # wire (its restore keeps the veth down until CRIU has the sockets back):
                # the move failed, and the destination may not have undone its side yet
                # (an agent killed mid-restore). A copy that runs there keeps the lease.
                self.registry.rewrite(net.bridge, self._lease_of(reservation))
                return
            if not self._reclaimable(existing):
                raise self._taken(existing)
            self.registry.drop(net.bridge, reservation.ip)
        self.registry.take(net.bridge, self._lease_of(reservation))

    def _let_go(self, bridge: str, lease: Lease) -> str:
        """Give up a lease this root holds: back to the root it was adopted from
        while that root still claims it (a move that failed), else dropped."""
        if lease.previous_root and lease.previous_root != self.root and root_is_live(lease.previous_root):
            self.registry.rewrite(bridge, Lease(lease.ip, lease.mac, lease.previous_root, lease.container_id,
                                                scope=lease.previous_scope))
            return f"lease {lease.ip} ({short(lease.container_id)}) back to root {lease.previous_root}"
        self.registry.drop(bridge, lease.ip)
        return f"lease {lease.ip} ({short(lease.container_id)})"

    def release(self, container_id: str) -> None:
        """Drop a container's lease and everything made from it (container rm); idempotent."""
        self._release(container_id)

    def _release(self, container_id: str) -> list[str]:
        """A lease file another root holds stays: after a move, the destination's."""
        held = self.all_reservations(container_id)
        removed = self._unpublish(container_id) + self._detach(container_id)
        if not held:
            return removed
        with machine_lock(REGISTRY_LOCK):
            for current in reversed(held):
                net = self._find(current.network)
                gone = f"lease {current.ip} ({short(container_id)})"
                lease = self.registry.lease(net.bridge, current.ip) if net else None
                if lease and lease.container_id == container_id:
                    if lease.root == self.root:
                        gone = self._let_go(net.bridge, lease)
                    elif lease.previous_root == self.root:   # the move is complete: no claim to keep
                        self.registry.rewrite(net.bridge, lease._replace(previous_root="", previous_scope=""))
                removed.append(gone)
            with self.db.write() as conn:
                conn.execute("DELETE FROM network_more_leases WHERE container_id = ?", (container_id,))
                conn.execute("DELETE FROM network_leases WHERE container_id = ?", (container_id,))
        return removed

    # ---- netns and veth --------------------------------------------------
    def _attachment(self, net: Network, reservation: Reservation, first: Reservation | None = None) -> Attachment:
        """`first`: the container's first lease, whose scope names its netns."""
        scope = (first or reservation).scope
        netns = link.netns_name(reservation.container_id, scope)
        return Attachment(network=net.name, netns=netns, netns_path=link.netns_path(netns),
                          interface=f"eth{reservation.position}", ip=reservation.ip,
                          prefixlen=net.prefixlen, mac=reservation.mac, gateway=net.gateway,
                          host_veth=link.host_veth_name(reservation.container_id, reservation.scope,
                                                        reservation.position))

    def _scope(self, container_id: str) -> str:
        """Its lease's scope; a container on no network (--network none, no lease)
        has a netns named with this root's tag always (a twin elsewhere may have one too)."""
        current = self.reservation(container_id)
        return current.scope if current else self.root_tag

    def _host_veths(self, container_id: str) -> list[str]:
        return [link.host_veth_name(container_id, r.scope, r.position) for r in self.all_reservations(container_id)]

    def netns_name(self, container_id: str) -> str:
        """The name of the container's netns (under /run/netns) in this root."""
        return link.netns_name(container_id, self._scope(container_id))

    def host_veth(self, container_id: str) -> str:
        """The name of the container's veth on the host side, in this root."""
        return link.host_veth_name(container_id, self._scope(container_id))

    def attach(self, container_id: str, *, isolated: bool = False) -> Attachment:
        """Make the container's named netns, wired to its bridge with its reserved IP and MAC.

        `isolated` keeps the wire cut until connect(): a container being restored
        must not answer its peers' retransmissions with resets before CRIU has
        put its TCP sockets back. A container on several networks gets one
        interface on each (eth0, eth1...), the default route via the first;
        the first's attachment is returned."""
        held = self.all_reservations(container_id)
        if not held:
            raise NotFound(f"container {short(container_id)} has no network address",
                           hint="reserve one first")
        first = held[0]
        nets = [self.get(r.network) for r in held]
        attachments = [self._attachment(net, r, first) for net, r in zip(nets, held)]
        with machine_lock(REGISTRY_LOCK):
            for net, reservation in zip(nets, held):
                self._hold_lease(net, reservation)
                self._ensure_bridge(net)
            if all(link.link_exists(a.host_veth) and not link.netns_problem(a.netns, a.interface, a.ip)
                   for a in attachments):
                return attachments[0]
            self._detach(container_id, first.scope)        # half-made leftovers of a crash
            try:
                link.create_netns(attachments[0].netns)
                for net, attachment in zip(nets, attachments):
                    link.connect_container(netns=attachment.netns, host_veth=attachment.host_veth,
                                           alias=link.veth_alias(self.root_tag, container_id),
                                           bridge=net.bridge, mac=attachment.mac, ip=attachment.ip,
                                           prefixlen=attachment.prefixlen,
                                           gateway=attachment.gateway if attachment is attachments[0] else None,
                                           carrier=not isolated, ifname=attachment.interface)
            except BaseException:
                self._detach(container_id, first.scope)
                raise
        return attachments[0]

    def attachments(self, container_id: str) -> list[Attachment]:
        """One per network the container joined, eth0 first (made or not)."""
        held = self.all_reservations(container_id)
        return [self._attachment(self.get(r.network), r, held[0]) for r in held]

    def join(self, container_id: str, network: str, *, ip: str | None = None) -> Reservation:
        """`network connect`: one more network for a container on ferry's networks,
        as its next interface (eth1...); a container whose netns exists (it runs)
        gets the interface now, one that is stopped at its next start."""
        held = self.all_reservations(container_id)
        if not held:
            raise Conflict(f"container {short(container_id)} is on no bridge network (host or none mode)",
                           hint="only a container on ferry's networks can join another")
        net = self.get(network)
        if any(r.network == net.name for r in held):
            raise Conflict(f"container {short(container_id)} is already connected to network {net.name!r}",
                           hint=f"disconnect it first: 'ferry network disconnect {net.name} CONTAINER'")
        position = max(r.position for r in held) + 1
        self.reserve(container_id, net.name, ip=ip, position=position)
        joined = self._lease_row(container_id, position)
        attachment = self._attachment(net, joined, held[0])
        if link.netns_exists(attachment.netns):
            try:
                with machine_lock(REGISTRY_LOCK):
                    self._ensure_bridge(net)
                    link.connect_container(netns=attachment.netns, host_veth=attachment.host_veth,
                                           alias=link.veth_alias(self.root_tag, container_id), bridge=net.bridge,
                                           mac=attachment.mac, ip=attachment.ip, prefixlen=attachment.prefixlen,
                                           gateway=None, ifname=attachment.interface)
            except BaseException:
                self.leave(container_id, net.name)
                raise
        return joined

    def leave(self, container_id: str, network: str) -> Reservation:
        """`network disconnect`: the container's interface on `network` gone (now,
        if it runs) and its address given back. Its first network stays: it
        carries the default route and names the container's lease."""
        held = self.all_reservations(container_id)
        found = next((r for r in held if r.network == network), None)
        if found is None:
            raise Conflict(f"container {short(container_id)} is not connected to network {network}",
                           hint="see the container's networks with 'ferry inspect'")
        if not found.position:
            raise Conflict(f"network {network} is the first network of container {short(container_id)}, which "
                           "ferry keeps", hint="remove and re-create the container to change its first network")
        link.delete_link(link.host_veth_name(container_id, found.scope, found.position))   # its peer goes too
        with machine_lock(REGISTRY_LOCK):
            net = self._find(found.network)
            lease = self.registry.lease(net.bridge, found.ip) if net else None
            if lease and lease.container_id == container_id and lease.root == self.root:
                self._let_go(net.bridge, lease)
            with self.db.write() as conn:
                conn.execute("DELETE FROM network_more_leases WHERE container_id = ? AND position = ?",
                             (container_id, found.position))
        return found

    def attach_none(self, container_id: str) -> str:
        """--network none: a netns of the container's own with only `lo`, up
        (runc joins it, so it is external to CRIU, and a restore keeps lo up,
        where podman's restored container has it down). Its path."""
        netns = link.netns_name(container_id, self.root_tag)
        if link.netns_problem(netns, "lo", "127.0.0.1"):
            self._detach(container_id, self.root_tag)
            try:
                link.create_netns(netns)
                link.loopback_only(netns)
            except BaseException:
                self._detach(container_id, self.root_tag)
                raise
        return link.netns_path(netns)

    def verify(self, container_id: str, pid: int | None = None, *, mode: str = "bridge") -> None:
        """Refuse a started or restored container whose network is not really
        there (a netns that lost its mount or interfaces would leave it `Up`
        with only lo): its netns, its address on each interface, its process in
        that netns. `mode` "none": its netns with lo up; "host": nothing to see."""
        if mode == "host":
            return
        if mode == "none":
            problem = link.netns_problem(link.netns_name(container_id, self.root_tag), "lo", "127.0.0.1", pid)
        else:
            held = self.all_reservations(container_id)
            if not held:
                raise NotFound(f"container {short(container_id)} has no network address",
                               hint="reserve one first")
            netns = link.netns_name(container_id, held[0].scope)
            problem = next(filter(None, (link.netns_problem(netns, f"eth{r.position}", r.ip, pid if not r.position
                                                            else None) for r in held)), None)
        if problem:
            raise FerryError(f"container {short(container_id)} has no working network: {problem}",
                             hint="nothing was left running; run the command again, which rebuilds its network")

    def ensure_bridge(self, network: str) -> Network:
        """Make the network's bridge now (attach() makes it on first use)."""
        net = self.get(network)
        with machine_lock(REGISTRY_LOCK):
            self._ensure_bridge(net)
        return net

    def add_uplink(self, network: str, interface: str) -> Network:
        """Make an existing host interface a port of the network's bridge (made if
        need be), so that its containers share one L2 segment with the bridges of
        other hosts on that link: the same subnet, gateway address and gateway MAC
        on each (link.gateway_mac) lets a container move between them with its IP
        and MAC. The gateway MAC is kept off the uplink (nft table bridge ferry):
        each host answers for the gateway on its own side. Idempotent."""
        ipam.check_ifname(interface)
        net = self.get(network)
        with machine_lock(REGISTRY_LOCK):
            if not link.link_exists(interface):
                raise NotFound(f"interface {interface} does not exist", hint="create it first")
            if interface == net.bridge or link.is_ferry_made(interface):
                raise Conflict(f"interface {interface} was made by ferry and cannot be an uplink",
                               hint="use a host interface, e.g. a veth to another host's bridge")
            self._ensure_bridge(net)
            mac = link.link_address(net.bridge) or link.gateway_mac(net.subnet, net.gateway)
            with machine_lock(nft.NFT_LOCK):
                rules = nft.list_rules(nft.BRIDGE_FAMILY)
                present = nft.owned_by_uplinks(rules, net.bridge, interface)
                wanted = nft.uplink_rules(net.bridge, interface, mac)
                if len(present) != len(wanted):
                    nft.apply([nft.UPLINK_SKELETON, *nft.delete_rules(present, nft.BRIDGE_FAMILY), *wanted],
                              desc=f"keep the gateway MAC of {net.bridge} off {interface}")
            link.enslave(interface, net.bridge)
        return net

    @staticmethod
    def _delete_uplink_rules(bridge: str) -> list[str]:
        """The uplink filter of a bridge, and its table once empty (caller holds the nft lock)."""
        rules = nft.list_rules(nft.BRIDGE_FAMILY)
        doomed = nft.owned_by_uplinks(rules, bridge)
        if not doomed:
            return []
        lines = nft.delete_rules(doomed, nft.BRIDGE_FAMILY)
        if not [r for r in rules if r not in doomed]:
            lines = [nft.delete_table(nft.BRIDGE_FAMILY)]
        nft.apply(lines, desc=f"delete the uplink filter of {bridge}")
        return [f"nft rule {r.comment}" for r in doomed]

    def _ensure_bridge(self, net: Network) -> None:
        self._refuse_foreign_interface(net.bridge)
        self.registry.register(net.bridge, BridgeShape(net.subnet, net.gateway), self.root)
        if not link.link_exists(net.bridge):
            try:
                link.create_bridge(net.bridge, net.gateway, net.prefixlen)
            except BaseException:
                link.delete_link(net.bridge)
                raise
        link.enable_routing(net.bridge)
        with machine_lock(nft.NFT_LOCK):
            lines = self._bridge_rules_if_missing(nft.list_rules(), net)
            if lines:
                nft.apply([nft.SKELETON, *lines], desc=f"add masquerade rules for {net.bridge}")

    @staticmethod
    def _refuse_foreign_interface(bridge: str) -> None:
        if link.link_exists(bridge) and not link.is_ferry_bridge(bridge):
            raise Conflict(f"interface {bridge} exists and was not made by ferry",
                           hint="choose another --interface-name")

    @staticmethod
    def _bridge_rules_if_missing(rules: list[nft.Rule], net: Network) -> list[str]:
        wanted = nft.bridge_rules(net.bridge, net.subnet, internal=net.internal)
        present = nft.owned_by_bridge(rules, net.bridge)
        if len(present) == len(wanted):
            return []
        return nft.delete_rules(present) + wanted

    def connect(self, container_id: str) -> None:
        """Restore the wires that attach(isolated=True) or disconnect() left cut
        (none for a container without a lease: --network none or host)."""
        for veth in self._host_veths(container_id):
            link.set_carrier(veth)

    def connect_argv(self, container_id: str) -> list[str]:
        """connect() as a command, for CRIU to run at the right moment of a restore
        (the first wire: see connect_argvs)."""
        return link.carrier_argv(self.host_veth(container_id))

    def connect_argvs(self, container_id: str) -> list[list[str]]:
        """connect() as commands, one per wire ([] for a container without a lease)."""
        return [link.carrier_argv(veth) for veth in self._host_veths(container_id)]

    def disconnect(self, container_id: str) -> None:
        """Cut the container's wire, keeping its netns and address (connect() undoes it).
        A container frozen for a move must be cut before its copy elsewhere goes
        on the wire: its netns would still answer ARP for the same IP and MAC,
        and pull the segment's frames back to itself. Idempotent."""
        for veth in self._host_veths(container_id):
            if link.link_exists(veth):
                link.set_carrier(veth, up=False)

    def announce(self, container_id: str, *, wait: bool = True) -> None:
        """Send a gratuitous ARP from the attached container (after a restore or a
        migration), so the bridge and its peers relearn where its MAC lives.
        Without `wait` it goes out in the background: a restore's caller (and its
        clients) need not wait the 60 ms a Python start costs."""
        held = self.all_reservations(container_id)
        netns = link.netns_name(container_id, held[0].scope if held else "")
        if not held or not link.netns_exists(netns):
            raise NotFound(f"container {short(container_id)} is not attached to a network",
                           hint="attach it first")
        for current in held:
            argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "ferry.network.garp",
                    f"eth{current.position}", current.ip, current.mac]
            desc = f"announce {current.ip} of container {short(container_id)}"
            if wait:
                proc.run(argv, desc=desc)
            else:
                proc.spawn(argv, desc=desc, new_session=True)

    def detach(self, container_id: str) -> None:
        """Delete the container's netns and veth (its lease stays); idempotent."""
        self._detach(container_id)

    def _detach(self, container_id: str, scope: str | None = None) -> list[str]:
        """The netns and veth of this root's container (named by its reservation's
        scope unless given), never those of its twin in another root."""
        if scope is None:
            scope = self._scope(container_id)
        removed = []
        veth, netns = link.host_veth_name(container_id, scope), link.netns_name(container_id, scope)
        for other in [link.host_veth_name(container_id, r.scope, r.position)
                      for r in self.more_reservations(container_id)] + [veth]:
            if link.delete_link(other):
                removed.append(f"veth {other}")
        if link.delete_netns(netns):
            removed.append(f"netns {netns}")
        return removed

    # ---- published ports -------------------------------------------------
    def publish(self, container_id: str, ports: list[PortMapping]) -> list[PortMapping]:
        """DNAT host ports to the container, replacing what it published before.

        Returns the mappings with chosen host ports filled in.
        """
        current = self.reservation(container_id)
        if current is None:
            raise NotFound(f"container {short(container_id)} has no network address",
                           hint="reserve one before publishing ports")
        net = self.get(current.network)
        check_distinct(ports)
        with machine_lock(nft.NFT_LOCK):
            rules = nft.list_rules()
            published = nft.published(rules)
            own = [p for p in published if self._owns(p, container_id)]
            others = [p for p in published if not self._owns(p, container_id)]
            taken = {(p.mapping.protocol, p.mapping.host_port) for p in others}
            portholder.release(self.root_tag, {container_id})   # what it published before: its ports are free
            resolved = []
            for mapping in ports:
                if mapping.host_port == 0:
                    mapping = mapping._replace(host_port=pick_free_port(mapping, taken))
                else:
                    self._check_not_published(mapping, others)
                    ensure_host_port_free(mapping)
                taken.add((mapping.protocol, mapping.host_port))
                resolved.append(mapping)
            held = portholder.bind(resolved)
            lines = [nft.SKELETON, *self._bridge_rules_if_missing(rules, net),
                     *nft.delete_rules(r for r in rules if r.handle in {p.handle for p in own}),
                     *(nft.dnat_rule(self.root_tag, container_id, current.ip, m) for m in resolved)]
            try:
                nft.apply(lines, desc=f"publish ports of container {short(container_id)}")
            except BaseException:
                for sock in held:
                    sock.close()
                raise
            portholder.keep(self.root_tag, container_id, held)
        return resolved

    def _owns(self, rule: nft.PublishedRule, container_id: str) -> bool:
        return rule.root_tag == self.root_tag and rule.container_id == container_id

    def _check_not_published(self, mapping: PortMapping, others: list[nft.PublishedRule]) -> None:
        for other in others:
            if other.mapping.overlaps(mapping):
                where = "" if other.root_tag == self.root_tag else " of another ferry root"
                raise Conflict(f"port {mapping.host_side} is already in use by container "
                               f"{short(other.container_id)}{where}",
                               hint="publish another host port")

    def unpublish(self, container_id: str) -> None:
        """Remove the container's DNAT rules; idempotent."""
        self._unpublish(container_id)

    def _unpublish(self, container_id: str) -> list[str]:
        with machine_lock(nft.NFT_LOCK):
            portholder.release(self.root_tag, {container_id})
            rules = nft.list_rules()
            doomed = {p.handle for p in nft.published(rules) if self._owns(p, container_id)}
            return self._delete_rules(rules, [r for r in rules if r.handle in doomed])

    @staticmethod
    def _delete_rules(rules: list[nft.Rule], doomed: list[nft.Rule]) -> list[str]:
        """Delete rules, and the table once only the skeleton would be left (caller holds the nft lock)."""
        lines = nft.delete_rules(doomed)
        if rules and nft.is_unused([r for r in rules if r not in doomed]):
            lines = [nft.delete_table()]
        if lines:
            nft.apply(lines, desc="delete ferry's nftables rules")
        return [f"nft rule {r.comment}" for r in doomed]

    # ---- recovery --------------------------------------------------------
    def prune(self, live_container_ids: set[str]) -> list[str]:
        """Remove this root's leftovers of containers not in the set (after a crash)."""
        removed = []
        for reservation in self.reservations():
            if reservation.container_id not in live_container_ids:
                removed += self._release(reservation.container_id)
        with machine_lock(nft.NFT_LOCK):
            removed += portholder.release(self.root_tag, set(portholder.holders(self.root_tag).values())
                                          - set(live_container_ids))
            rules = nft.list_rules()
            doomed = {p.handle for p in nft.published(rules)
                      if p.root_tag == self.root_tag and p.container_id not in live_container_ids}
            removed += self._delete_rules(rules, [r for r in rules if r.handle in doomed])
        for veth, (tag, container_id) in link.veth_owners().items():
            if tag == self.root_tag and container_id not in live_container_ids:
                scoped = veth != link.host_veth_name(container_id)
                removed += self._detach(container_id, self.root_tag if scoped else "")
                if link.delete_link(veth):   # a further network's (eth1...)
                    removed.append(f"veth {veth}")
        live_prefixes = {c[:link.ID_CHARS] for c in live_container_ids}
        for netns in link.ferry_netns():   # --network none's, named with this root's tag, no veth
            prefix = netns[len(link.NETNS_PREFIX):].split("-")[0]
            if netns.endswith(f"-{self.root_tag}") and prefix not in live_prefixes and link.delete_netns(netns):
                removed.append(f"netns {netns}")
        with machine_lock(REGISTRY_LOCK):
            for bridge in self.registry.bridges():
                for lease in self.registry.leases(bridge):
                    if lease.root == self.root and lease.container_id not in live_container_ids:
                        removed += self._detach(lease.container_id, lease.scope)
                        removed.append(self._let_go(bridge, lease))
        return removed

    # ---- files for the container -----------------------------------------
    def etc_hosts(self, attachment: Attachment, hostname: str) -> str:
        return hostfiles.etc_hosts(attachment.ip, hostname, attachment.gateway)

    def resolv_conf(self, mode: str = "bridge") -> str:
        """The host's (loopback servers left out, unreachable from a netns); on
        the host's network the host's own file; on none, no server (podman
        makes no file; the mount CRIU restores is there, empty)."""
        if mode == "host":
            return hostfiles.read_host_file(hostfiles.HOST_RESOLV_CONF)
        if mode == "none":
            return ""
        return hostfiles.read_host_resolv_conf()

    def hosts_file(self, container_id: str, hostname: str, mode: str = "bridge") -> str:
        """/etc/hosts for the container in its network mode: on several
        networks its name on each address, as podman lists them."""
        if mode == "host":
            return hostfiles.etc_hosts_host_network(hostfiles.read_host_file(HOST_HOSTS), link.host_address())
        if mode == "none":
            return hostfiles.etc_hosts_no_network(hostname)
        attachments = self.attachments(container_id)
        if len(attachments) == 1:
            return self.etc_hosts(attachments[0], hostname)
        return hostfiles.etc_hosts_extra(hostname, [a.ip for a in attachments], attachments[0].gateway)
