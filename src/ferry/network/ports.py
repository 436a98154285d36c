"""Published ports: podman's -p syntax, and what the host already uses.

parse_port is pure. The host checks (is a port bound, pick a free one) open
and close a socket, which is the kernel's own answer to "is this port free".
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from typing import NamedTuple

from ferry.util.errors import Conflict, UsageError
from ferry.util.records import checked
from ferry.util.strictjson import exact_keys, shown

PROTOCOLS = ("tcp", "udp")
PORT_SYNTAX = "[[IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|udp], e.g. -p 8080:80"
ALL_ADDRESSES = ("", "0.0.0.0")
FREE_PORT_ATTEMPTS = 100
PORT_KEYS = ("host_ip", "host_port", "container_port", "protocol")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _canonical_ipv4(text: str) -> bool:
    try:
        return str(ipaddress.IPv4Address(text)) == text and text not in ALL_ADDRESSES
    except ValueError:
        return False


@checked
class PortMapping(NamedTuple):
    """One published port. Every instance is valid: its fields go into nft
    rules, and an archive may carry them (a protocol of "tcp dport 1 ...\n"
    once injected nft commands)."""
    host_ip: str        # "" means all host addresses
    host_port: int      # 0 until publish() picks a free one
    container_port: int
    protocol: str       # "tcp" | "udp"

    def _check(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be tcp or udp, not {shown(self.protocol)}")
        for name, low in (("host_port", 0), ("container_port", 1)):
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= 65535:
                raise ValueError(f"{name} must be a whole number from {low} to 65535, not {shown(value)}")
        if not isinstance(self.host_ip, str) or (self.host_ip and not _canonical_ipv4(self.host_ip)):
            raise ValueError(f"host_ip must be empty or an IPv4 address, not {shown(self.host_ip)}")

    @classmethod
    def from_dict(cls, data) -> "PortMapping":
        """From its JSON form, strictly (ValueError)."""
        exact_keys(data, PORT_KEYS, "port")
        return cls(data["host_ip"], data["host_port"], data["container_port"], data["protocol"])

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in PORT_KEYS}

    def __str__(self) -> str:
        host = f"{self.host_ip}:" if self.host_ip else ""
        return f"{host}{self.host_port}->{self.container_port}/{self.protocol}"

    @property
    def host_side(self) -> str:
        """How the host sees it: [IP:]PORT/PROTO."""
        return f"{self.host_ip + ':' if self.host_ip else ''}{self.host_port}/{self.protocol}"

    def overlaps(self, other: "PortMapping") -> bool:
        """True when both would catch the same packets on the host."""
        return (self.protocol == other.protocol and self.host_port == other.host_port
                and (not self.host_ip or not other.host_ip or self.host_ip == other.host_ip))


def _bad(spec: str, why: str) -> UsageError:
    return UsageError(f"invalid port mapping {spec!r}: {why}", hint=f"use {PORT_SYNTAX}")


def _port_number(spec: str, text: str, what: str) -> int:
    if "-" in text:
        raise UsageError(f"invalid port mapping {spec!r}: port ranges are not supported",
                         hint="publish each port with its own -p")
    if not text.isdigit():
        raise _bad(spec, f"{what} {text!r} is not a number")
    number = int(text)
    if not 1 <= number <= 65535:
        raise _bad(spec, f"{what} {number} is outside 1-65535")
    return number


def _host_ip(spec: str, text: str) -> str:
    if text.startswith("["):
        raise UsageError(f"invalid port mapping {spec!r}: IPv6 host addresses are not supported",
                         hint="publish on an IPv4 address, or omit the address")
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise _bad(spec, f"{text!r} is not an IPv4 address") from None
    return "" if str(address) in ALL_ADDRESSES else str(address)


def parse_port(spec: str) -> PortMapping:
    """Parse one -p value. An omitted host port is 0: publish() picks a free one."""
    text = spec.strip()
    protocol = "tcp"
    if "/" in text:
        text, protocol = text.rsplit("/", 1)
        protocol = protocol.lower()
        if protocol not in PROTOCOLS:
            raise _bad(spec, f"protocol {protocol!r} is not supported (use tcp or udp)")
    if "]" in text:  # keep "[::1]:8080:80" whole, so the error names IPv6
        raise UsageError(f"invalid port mapping {spec!r}: IPv6 host addresses are not supported",
                         hint="publish on an IPv4 address, or omit the address")
    parts = text.split(":")
    if len(parts) > 3 or not parts[-1]:
        raise _bad(spec, "expected at most IP:HOST_PORT:CONTAINER_PORT")
    container_port = _port_number(spec, parts[-1], "container port")
    host_port = 0
    if len(parts) >= 2 and parts[-2]:
        host_port = _port_number(spec, parts[-2], "host port")
    host_ip = _host_ip(spec, parts[0]) if len(parts) == 3 else ""
    return PortMapping(host_ip, host_port, container_port, protocol)


def check_distinct(ports: Iterable[PortMapping]) -> None:
    """One request must not publish the same host port twice."""
    seen: list[PortMapping] = []
    for mapping in ports:
        if mapping.host_port and any(mapping.overlaps(s) for s in seen):
            raise UsageError(f"port {mapping.host_side} is published twice in one request",
                             hint="give each -p its own host port")
        seen.append(mapping)


def _socket_type(protocol: str) -> int:
    return socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM


def _bind(host_ip: str, port: int, protocol: str) -> int:
    """Bind and release a socket; return the port the kernel gave."""
    with socket.socket(socket.AF_INET, _socket_type(protocol)) as probe:
        # A TCP port whose old connections sit in TIME_WAIT is free to listen on.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host_ip or "0.0.0.0", port))
        return probe.getsockname()[1]


def _claimable(mapping: PortMapping) -> int:
    """Bind-test the host port (0: let the kernel choose); translate refusals into one-line errors."""
    try:
        return _bind(mapping.host_ip, mapping.host_port, mapping.protocol)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise Conflict(f"port {mapping.host_side} is already in use "
                           f"by a process on this host",
                           hint="stop that process or publish another host port") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise UsageError(f"cannot publish on {mapping.host_ip}: it is not an address of "
                             f"this host", hint="use one of the host's addresses, or omit it") from None
        raise


def ensure_host_port_free(mapping: PortMapping) -> None:
    """Conflict when a host process has bound the port; UsageError for a foreign IP."""
    _claimable(mapping)


def pick_free_port(mapping: PortMapping, taken: set[tuple[str, int]]) -> int:
    """A port the kernel says is free and no published mapping holds.

    `taken` holds (protocol, port) pairs already published or chosen.
    """
    for _ in range(FREE_PORT_ATTEMPTS):
        port = _claimable(mapping._replace(host_port=0))
        if (mapping.protocol, port) not in taken:
            return port
    raise Conflict(f"found no free host port for {mapping.container_port}/{mapping.protocol} "
                   f"after {FREE_PORT_ATTEMPTS} tries", hint="publish an explicit host port")
