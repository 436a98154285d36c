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


def etc_hosts_extra(hostname: str, addresses: list[str], gateway: str) -> str:
    """A container on several networks: its name on each of its addresses, as podman lists them."""
    return ("127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            + "".join(f"{ip}\t{hostname}\n" for ip in addresses)
            + f"{gateway}\t{HOST_GATEWAY_NAME}\n")


def with_address(text: str, ip: str, hostname: str) -> str:
    """A network joined: the container's name on its new address, after the
    other lines, which stay as they are (the user's own edits too), as podman adds it."""
    if any(_names(line, ip, hostname) for line in text.splitlines()):
        return text
    return text + ("\n" if text and not text.endswith("\n") else "") + f"{ip}\t{hostname}\n"


def without_address(text: str, ip: str, hostname: str) -> str:
    """A network left: the lines naming the container on that address go, the others stay."""
    return "".join(line for line in text.splitlines(keepends=True) if not _names(line, ip, hostname))


def _names(line: str, ip: str, hostname: str) -> bool:
    words = line.split("#", 1)[0].split()
    return words[:1] == [ip] and hostname in words[1:]


def etc_hosts_no_network(hostname: str) -> str:
    """--network none: only loopback to name itself on."""
    return (f"127.0.0.1\tlocalhost\n"
            f"::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"127.0.0.1\t{hostname}\n")


def etc_hosts_host_network(host_hosts: str, host_ip: str) -> str:
    """--network host: the host's own /etc/hosts, and the host's address as
    host.containers.internal, as podman writes it (no line for the hostname)."""
    text = host_hosts if host_hosts.endswith("\n") or not host_hosts else host_hosts + "\n"
    return text + f"{host_ip}\t{HOST_GATEWAY_NAME}\n"


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


def read_host_file(path: str) -> str:
    """The host's /etc/hosts or /etc/resolv.conf as it is ("" when missing): a
    container on the host's network reaches what the host does, loopback too."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def with_added_hosts(hosts_text: str, added: tuple[tuple[str, str], ...]) -> str:
    """--add-host lines first, in the order given, as podman writes them."""
    return "".join(f"{ip}\t{name}\n" for name, ip in added) + hosts_text


def with_dns(resolv_text: str, servers: tuple[str, ...], search: tuple[str, ...],
             options: tuple[str, ...]) -> str:
    """The container's resolv.conf with --dns, --dns-search and --dns-option
    each replacing the host's lines of its kind, in podman's order (search,
    nameservers, options); unchanged when none is given."""
    if not (servers or search or options):
        return resolv_text
    kept: dict[str, list[str]] = {"search": [], "nameserver": [], "options": []}
    for line in resolv_text.splitlines():
        fields = line.split()
        if fields and fields[0] in ("search", "domain"):
            kept["search"] = fields[1:]
        elif fields and fields[0] == "nameserver":
            kept["nameserver"] += fields[1:2]
        elif fields and fields[0] == "options":
            kept["options"] += fields[1:]
    search_line = list(search) if search else kept["search"]
    lines = [f"search {' '.join(search_line)}"] if search_line else []
    lines += [f"nameserver {server}" for server in (servers or tuple(kept["nameserver"]))]
    option_line = list(options) if options else kept["options"]
    lines += [f"options {' '.join(option_line)}"] if option_line else []
    return "".join(f"{line}\n" for line in lines)
