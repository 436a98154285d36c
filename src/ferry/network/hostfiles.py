"""The contents of a container's /etc/hosts and /etc/resolv.conf (pure text work)."""

from __future__ import annotations

import ipaddress

HOST_RESOLV_CONF = "/etc/resolv.conf"
# With systemd-resolved the host's resolv.conf names only 127.0.0.53; the real
# upstream servers are listed here.
RESOLVED_UPSTREAM_CONF = "/run/systemd/resolve/resolv.conf"
HOST_GATEWAY_NAME = "host.containers.internal"


def etc_hosts(ip: str, hostname: str, gateway: str) -> str:
    return (f"127.0.0.1\tlocalhost\n"
            f"::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{ip}\t{hostname}\n"
            f"{gateway}\t{HOST_GATEWAY_NAME}\n")


def _is_loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return False


def container_resolv_conf(host_text: str) -> tuple[str, int]:
    """The host's resolv.conf minus loopback nameservers (unreachable from a
    netns); returns the text and how many nameservers it kept."""
    kept, nameservers = [], 0
    for line in host_text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        if fields[0] == "nameserver":
            if len(fields) < 2 or _is_loopback(fields[1]):
                continue
            nameservers += 1
        if fields[0] in ("nameserver", "search", "domain", "options"):
            kept.append(" ".join(fields))
    return "".join(f"{line}\n" for line in kept), nameservers


def read_host_resolv_conf() -> str:
    best = ""
    for path in (HOST_RESOLV_CONF, RESOLVED_UPSTREAM_CONF):
        try:
            with open(path) as f:
                text, nameservers = container_resolv_conf(f.read())
        except OSError:
            continue
        if nameservers:
            return text
        best = best or text
    return best
