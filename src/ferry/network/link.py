"""Kernel network objects through iproute2: bridges, named netns, veth pairs, sysctls.

Names derive from the 64-hex container ID, so they are unique across state
roots on one machine and fit the 15-character interface limit.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
from typing import Iterable

from ferry.network.ipam import random_mac
from ferry.util import proc

NETNS_DIR = "/run/netns"
NETNS_PREFIX = "ferry-"
HOST_VETH_PREFIX = "fv"
ID_CHARS = 12
CONTAINER_IFNAME = "eth0"
SYSCTL_DIR = "/proc/sys/net/ipv4"
# The alias marks a host veth as ferry's and names its owner, so prune can
# find a crashed container's leftovers without any other record.
ALIAS_PREFIX = "ferry"
BRIDGE_ALIAS = "ferry:bridge"


def netns_name(container_id: str, scope: str = "") -> str:
    """The container's named netns. A container that arrived by migration keeps
    its ID, and its twin on the source may still exist until the move completes:
    on this machine (two roots), or on another simulated host, which shares
    /run/netns. Such a container's names carry a scope (its root's tag)."""
    base = f"{NETNS_PREFIX}{container_id[:ID_CHARS]}"
    return f"{base}-{scope}" if scope else base


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def host_veth_name(container_id: str, scope: str = "", position: int = 0) -> str:
    """fv + 12 hex: the ID's prefix, or with a scope a digest of both (15 characters
    at most); the veth's alias names the owner either way. The veths of a
    container's further networks (position 1, 2...: eth1, eth2...) have digests too."""
    if position:
        return HOST_VETH_PREFIX + hashlib.sha256(f"{scope}:{container_id}:{position}".encode()).hexdigest()[:ID_CHARS]
    if scope:
        return HOST_VETH_PREFIX + hashlib.sha256(f"{scope}:{container_id}".encode()).hexdigest()[:ID_CHARS]
    return f"{HOST_VETH_PREFIX}{container_id[:ID_CHARS]}"


def veth_alias(root_tag: str, container_id: str) -> str:
    return f"{ALIAS_PREFIX}:{root_tag}:{container_id}"


def parse_alias(alias: str) -> tuple[str, str] | None:
    """(root_tag, container_id) of a ferry veth alias."""
    parts = alias.split(":")
    if len(parts) == 3 and parts[0] == ALIAS_PREFIX:
        return parts[1], parts[2]
    return None


def gateway_mac(subnet: str, gateway: str) -> str:
    """The bridge's MAC: a function of the network's subnet and gateway address
    only, so that every host's bridge for that network has the same one (an
    anycast gateway) whatever the bridge is called there, and a container that
    moves keeps a right ARP entry for its gateway. Set when the bridge is made,
    it never follows its ports' addresses either. Locally administered, unicast."""
    return random_mac(hashlib.sha256(f"ferry gateway|{subnet}|{gateway}".encode()).digest()[:6])


# Interfaces are looked up in the netns this process runs in, never through
# /sys/class/net: sysfs shows the netns of whoever mounted it, so a command run
# with `nsenter --net` (a simulated host) would see the machine's interfaces there.

def link_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


def netns_exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def netns_mounted(name: str) -> bool:
    """Whether /run/netns/NAME holds a namespace, not just the empty file that
    stays behind when its mount vanishes (seen here: HOST-NOTES)."""
    try:
        return os.stat(netns_path(name)).st_dev == os.stat("/proc/self/ns/net").st_dev   # on nsfs
    except OSError:
        return False


def netns_problem(name: str, ifname: str, ip: str, pid: int | None = None) -> str | None:
    """What is missing of a container's network, or None: its netns mounted,
    `ifname` with `ip` in it, and (given the pid of a live process) that process in it."""
    path = netns_path(name)
    if not netns_mounted(name):
        return f"its network namespace {path} is gone"
    if pid is not None:
        try:
            theirs, ours = os.stat(f"/proc/{pid}/ns/net"), os.stat(path)
        except OSError:   # the process has exited already: nothing to compare
            theirs = ours = None
        if theirs is not None and (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            return f"its process is not in its network namespace {path}"
    done = proc.run(["ip", "-n", name, "-j", "-4", "addr", "show", "dev", ifname],
                    desc=f"read the addresses of {ifname} in {name}", check=False)
    try:
        addresses = [a.get("local") for link in json.loads(done.stdout or "[]") for a in link.get("addr_info", [])]
    except (ValueError, AttributeError, TypeError):
        addresses = []
    if done.returncode != 0 or ip not in addresses:
        return f"{ifname} with {ip} is missing in {path}"
    return None


def _batch(lines: Iterable[str], desc: str, netns: str | None = None) -> None:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    proc.run(argv, desc=desc, input="\n".join(lines) + "\n")


def _link_info(name: str) -> dict:
    """`ip -j link show dev NAME`'s record, or {} when there is no such interface."""
    if not link_exists(name):
        return {}
    result = proc.run(["ip", "-j", "link", "show", "dev", name], desc=f"look at interface {name}", check=False)
    try:
        found = json.loads(result.stdout or "[]") if result.returncode == 0 else []
    except ValueError:
        return {}
    return found[0] if found and isinstance(found[0], dict) else {}


def is_ferry_bridge(name: str) -> bool:
    """Only bridges ferry made (marked by their alias) are ever changed or deleted."""
    return _link_info(name).get("ifalias") == BRIDGE_ALIAS


def is_ferry_made(name: str) -> bool:
    """A bridge or a container's host veth (their aliases start with ferry's mark)."""
    return str(_link_info(name).get("ifalias", "")).startswith(f"{ALIAS_PREFIX}:")


def is_up(name: str) -> bool:
    """Whether an interface exists and is administratively up."""
    return "UP" in _link_info(name).get("flags", [])


def link_address(name: str) -> str | None:
    """An interface's MAC address, as the kernel has it now."""
    return _link_info(name).get("address")


def enslave(interface: str, bridge: str) -> None:
    """Make an existing interface a port of `bridge`, up."""
    _batch([f"link set {interface} master {bridge}", f"link set {interface} up"],
           desc=f"connect {interface} to bridge {bridge}")


def create_bridge(bridge: str, gateway: str, prefixlen: int) -> None:
    subnet = str(ipaddress.IPv4Interface(f"{gateway}/{prefixlen}").network)
    _batch([f"link add name {bridge} address {gateway_mac(subnet, gateway)} type bridge",
            f"link set {bridge} alias {BRIDGE_ALIAS}",
            f"addr add {gateway}/{prefixlen} dev {bridge}",
            f"link set {bridge} up"], desc=f"create bridge {bridge}")


def delete_link(name: str) -> bool:
    """Delete an interface (a veth takes its peer along); False if it was not there."""
    if not link_exists(name):
        return False
    result = proc.run(["ip", "link", "del", name], desc=f"delete interface {name}", check=False)
    if result.returncode != 0 and link_exists(name):
        proc.run(["ip", "link", "del", name], desc=f"delete interface {name}")
    return True


def create_netns(name: str) -> None:
    proc.run(["ip", "netns", "add", name], desc=f"create network namespace {name}")


def delete_netns(name: str) -> bool:
    if not netns_exists(name):
        return False
    proc.run(["ip", "netns", "del", name], desc=f"delete network namespace {name}")
    return True


def connect_container(*, netns: str, host_veth: str, alias: str, bridge: str, mac: str,
                      ip: str, prefixlen: int, gateway: str | None, carrier: bool = True,
                      ifname: str = CONTAINER_IFNAME) -> None:
    """A veth from `bridge` into `netns` as `ifname` with a fixed MAC, its address,
    `lo` and (given a gateway: the first network's) a default route via it.
    Without `carrier` the host end stays down, so no frame reaches the netns
    until set_carrier()."""
    _batch([f"link add {host_veth} type veth peer name {ifname} address {mac} netns {netns}",
            f"link set {host_veth} alias {alias}",
            f"link set {host_veth} master {bridge}"]
           + ([f"link set {host_veth} up"] if carrier else []), desc=f"connect {netns} to bridge {bridge}")
    _batch(["link set lo up",
            f"addr add {ip}/{prefixlen} dev {ifname}",
            f"link set {ifname} up"]
           + ([f"route add default via {gateway} dev {ifname}"] if gateway else []),
           desc=f"configure {ifname} in {netns}", netns=netns)


def loopback_only(netns: str) -> None:
    """`lo` up in a netns of its own: a container on no network (podman's --network none)."""
    _batch(["link set lo up"], desc=f"bring lo up in {netns}", netns=netns)


def host_address() -> str:
    """The host's address on its default route's interface (podman's
    host.containers.internal with host networking), or 127.0.0.1."""
    result = proc.run(["ip", "-j", "-4", "route", "show", "default"], desc="find the default route", check=False)
    try:
        dev = next((r.get("dev") for r in json.loads(result.stdout or "[]") if r.get("dev")), None)
        if dev:
            done = proc.run(["ip", "-j", "-4", "addr", "show", "dev", dev], desc=f"read the addresses of {dev}",
                            check=False)
            for entry in json.loads(done.stdout or "[]"):
                for address in entry.get("addr_info", []):
                    if address.get("local"):
                        return address["local"]
    except (ValueError, AttributeError, TypeError):
        pass
    return "127.0.0.1"


def set_carrier(host_veth: str, up: bool = True) -> None:
    state = "up" if up else "down"
    proc.run(carrier_argv(host_veth, up), desc=f"bring {host_veth} {state}")


def carrier_argv(host_veth: str, up: bool = True) -> list[str]:
    """The command that brings the wire up (or down), for a hook another program runs."""
    import shutil
    return [shutil.which("ip", path=proc.TOOL_PATH) or "ip", "link", "set", host_veth, "up" if up else "down"]


def veth_owners() -> dict[str, tuple[str, str]]:
    """Host veths ferry made: {ifname: (root_tag, container_id)}."""
    result = proc.run(["ip", "-j", "link", "show", "type", "veth"], desc="list veth interfaces")
    owners = {}
    for link in json.loads(result.stdout or "[]"):
        owner = parse_alias(link.get("ifalias", ""))
        if owner:
            owners[link["ifname"]] = owner
    return owners


def ferry_netns() -> list[str]:
    if not os.path.isdir(NETNS_DIR):
        return []
    return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(NETNS_PREFIX))


def routes() -> list[tuple[str, str]]:
    """(destination CIDR, device) of the host's IPv4 routes, default route left out."""
    result = proc.run(["ip", "-j", "-4", "route", "show", "table", "all"], desc="list routes")
    found = []
    for route in json.loads(result.stdout or "[]"):
        dst, dev = route.get("dst", ""), route.get("dev", "")
        if dst and dst != "default" and route.get("type", "unicast") == "unicast":
            found.append((dst if "/" in dst else f"{dst}/32", dev))
    return found


def write_sysctl(key: str, value: str) -> None:
    """Set net.ipv4.<key> (as a path under /proc/sys/net/ipv4) if it differs."""
    path = os.path.join(SYSCTL_DIR, key)
    with open(path) as f:
        if f.read().strip() == value:
            return
    with open(path, "w") as f:
        f.write(value)


def enable_routing(bridge: str) -> None:
    # Forwarding carries published ports and container egress; route_localnet
    # lets DNAT'd 127.0.0.1 traffic (curl 127.0.0.1:PORT) leave and return via the bridge.
    write_sysctl("ip_forward", "1")
    write_sysctl(f"conf/{bridge}/route_localnet", "1")
