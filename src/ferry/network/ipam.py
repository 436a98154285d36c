"""Address management as pure functions: subnets, gateways, the next free IP, MACs.

Nothing here touches the host; the manager feeds in what is leased and taken.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Iterable

from ferry.util.errors import Conflict, UsageError

DEFAULT_NETWORK = "ferry"
DEFAULT_BRIDGE = "ferry0"
# podman uses 10.88.0.0/16 for its default network and 10.89.N.0/24 for created
# ones; ferry stays clear of both because they share benchmark machines.
DEFAULT_SUBNET = "10.90.0.0/16"
CREATED_SUBNETS = tuple(f"10.{second}.0.0/16" for second in range(91, 255))
BRIDGE_PREFIX = "ferry"
MAX_IFNAME = 15               # IFNAMSIZ - 1
LARGEST_PREFIX = 8            # wider subnets would swallow whole private ranges
SMALLEST_PREFIX = 29          # network, broadcast, gateway and a few containers
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]+\Z")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
LOCALLY_ADMINISTERED = 0x02
MULTICAST = 0x01


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        subnet = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UsageError(f"invalid subnet {text!r}", hint="use CIDR notation, e.g. 10.91.0.0/16") from None
    if subnet.version != 4:
        raise UsageError(f"subnet {text} is IPv6; ferry networks are IPv4 only",
                         hint="use an IPv4 CIDR, e.g. 10.91.0.0/16")
    if str(subnet) != text.strip():
        raise UsageError(f"subnet {text!r} has host bits set", hint=f"did you mean {subnet}?")
    if not LARGEST_PREFIX <= subnet.prefixlen <= SMALLEST_PREFIX:
        raise UsageError(f"subnet {text} must have a prefix length from /{LARGEST_PREFIX} "
                         f"to /{SMALLEST_PREFIX}", hint="e.g. 10.91.0.0/16")
    return subnet


def _address(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise UsageError(f"invalid {what} {text!r}", hint="use an IPv4 address, e.g. 10.90.0.5") from None


def check_host_address(subnet: ipaddress.IPv4Network, text: str, what: str) -> ipaddress.IPv4Address:
    """An address usable by a host on `subnet`: inside it, and not its network or broadcast."""
    address = _address(text, what)
    if address not in subnet:
        raise UsageError(f"{what} {address} is outside subnet {subnet}",
                         hint=f"choose an address in {subnet}")
    if address in (subnet.network_address, subnet.broadcast_address):
        raise UsageError(f"{what} {address} is the network or broadcast address of {subnet}",
                         hint=f"choose a host address in {subnet}")
    return address


def gateway_for(subnet: ipaddress.IPv4Network, requested: str | None) -> str:
    if requested:
        return str(check_host_address(subnet, requested, "gateway"))
    return str(subnet.network_address + 1)


def check_container_ip(subnet: ipaddress.IPv4Network, gateway: str, text: str) -> str:
    address = check_host_address(subnet, text, "IP")
    if str(address) == gateway:
        raise UsageError(f"IP {address} is the gateway of subnet {subnet}",
                         hint="choose another address")
    return str(address)


def next_free_ip(subnet: ipaddress.IPv4Network, gateway: str, taken: Iterable[str],
                 after: str | None = None) -> str:
    """The first host address after `after` (wrapping round) that is neither the
    gateway nor taken. Rotating, as DHCP servers do, keeps an address just freed
    by `rm` from going to the next new container while its checkpoint waits to
    be restored with it."""
    unavailable = set(taken) | {gateway}
    first, count = int(subnet.network_address) + 1, max(subnet.num_addresses - 2, 0)
    start = 0
    if after is not None and ipaddress.IPv4Address(after) in subnet:
        start = (int(ipaddress.IPv4Address(after)) - first + 1) % count if count else 0
    for step in range(count):   # host addresses only: no network, no broadcast
        address = str(ipaddress.IPv4Address(first + (start + step) % count))
        if address not in unavailable:
            return address
    raise Conflict(f"subnet {subnet} has no free address left",
                   hint="remove unused containers, or use a network with a larger subnet")


def random_mac(entropy: bytes | None = None) -> str:
    """A locally administered unicast MAC (the bits every virtual NIC should carry)."""
    octets = bytearray(entropy if entropy is not None else os.urandom(6))
    if len(octets) != 6:
        raise ValueError("a MAC needs 6 bytes")
    octets[0] = (octets[0] | LOCALLY_ADMINISTERED) & ~MULTICAST & 0xFF
    return ":".join(f"{b:02x}" for b in octets)


def parse_mac(text: str) -> str:
    mac = text.strip().lower().replace("-", ":")
    if not MAC_RE.match(mac):
        raise UsageError(f"invalid MAC address {text!r}", hint="use six hex octets, e.g. 02:42:0a:5a:00:05")
    if int(mac[:2], 16) & MULTICAST or mac == "00:00:00:00:00:00":
        raise UsageError(f"MAC address {mac} is not a unicast address",
                         hint="the first octet must be even, e.g. 02:...")
    return mac


def check_ifname(name: str) -> str:
    if not name or len(name) > MAX_IFNAME or not IFNAME_RE.match(name):
        raise UsageError(f"invalid interface name {name!r}",
                         hint=f"use at most {MAX_IFNAME} letters, digits, '_', '.' or '-'")
    return name


def first_free_subnet(candidates: Iterable[str], used: Iterable[ipaddress.IPv4Network]) -> str:
    used = list(used)
    for text in candidates:
        candidate = ipaddress.IPv4Network(text)
        if not any(candidate.overlaps(other) for other in used):
            return text
    raise Conflict("no free subnet left for a new network", hint="pass --subnet CIDR")


def first_free_bridge(used: Iterable[str], limit: int = 1000) -> str:
    used = set(used)
    for number in range(1, limit):
        name = f"{BRIDGE_PREFIX}{number}"
        if name not in used:
            return name
    raise Conflict("no free bridge name left", hint="pass --interface-name NAME")
