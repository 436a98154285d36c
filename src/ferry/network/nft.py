"""ferry's nftables table `ip ferry`: published ports (DNAT) and per-bridge
masquerading; and `bridge ferry`, made only for a bridge with an uplink, which
keeps the bridge's gateway MAC off that uplink.

Every rule carries a comment naming its owner, so that a container's or a
bridge's rules can be found and deleted exactly, whichever root made them.
The text builders are pure; list_rules() and apply() run `nft`. Callers hold
machine_lock(NFT_LOCK) around a read-decide-apply sequence.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Iterable, NamedTuple

from ferry.network.ipam import IFNAME_RE, MAC_RE, MAX_IFNAME
from ferry.network.ports import PortMapping
from ferry.util import proc
from ferry.util.errors import ToolError

FAMILY = "ip"
TABLE = "ferry"
BRIDGE_FAMILY = "bridge"      # the uplink filter's table: bridge ferry
NFT_LOCK = "nft"
PUBLISHED_CHAIN = "published"
POSTROUTING_CHAIN = "postrouting"
FORWARD_CHAIN = "forward"     # an internal network's bridge: nothing forwarded in or out
PUBLISHED_TAG = "pub"
BRIDGE_TAG = "bridge"
UPLINK_TAG = "uplink"
ANY_HOST_IP = "*"
LOCALHOST_NET = "127.0.0.0/8"
TAG_RE = re.compile(r"^[0-9a-f]{1,64}\Z")

# Declaring an existing table or chain is a no-op, and the two hook chains hold
# only ferry's jump, so flushing and re-adding it makes the skeleton idempotent.
SKELETON = f"""table {FAMILY} {TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
  }}
  chain {PUBLISHED_CHAIN} {{
  }}
  chain {POSTROUTING_CHAIN} {{
    type nat hook postrouting priority srcnat; policy accept;
  }}
  chain {FORWARD_CHAIN} {{
    type filter hook forward priority filter; policy accept;
  }}
}}
flush chain {FAMILY} {TABLE} prerouting
add rule {FAMILY} {TABLE} prerouting fib daddr type local jump {PUBLISHED_CHAIN}
flush chain {FAMILY} {TABLE} output
add rule {FAMILY} {TABLE} output fib daddr type local jump {PUBLISHED_CHAIN}"""


# A bridge with an uplink shares its L2 segment with other hosts' bridges, which
# have the same gateway MAC (link.gateway_mac). Frames from that MAC must not
# cross the uplink: other hosts' bridges would take them for their own (the
# kernel logs "received packet ... with own address as source address") and
# the LAN's switch would learn the MAC on a port where it does not belong.
UPLINK_SKELETON = f"""table {BRIDGE_FAMILY} {TABLE} {{
  chain prerouting {{
    type filter hook prerouting priority filter; policy accept;
  }}
  chain output {{
    type filter hook output priority filter; policy accept;
  }}
}}"""


class Rule(NamedTuple):
    chain: str
    handle: int
    comment: str


class PublishedRule(NamedTuple):
    handle: int
    root_tag: str
    container_id: str
    mapping: PortMapping


# ---- pure text builders -------------------------------------------------

def published_comment(root_tag: str, container_id: str, mapping: PortMapping) -> str:
    return (f"{PUBLISHED_TAG} {root_tag} {container_id} {mapping.protocol} {mapping.host_port} "
            f"{mapping.host_ip or ANY_HOST_IP} {mapping.container_port}")


def dnat_rule(root_tag: str, container_id: str, container_ip: str, mapping: PortMapping) -> str:
    """The rule as nft text. Every value in it is checked here, because it is
    a script: PortMapping validates itself, and the rest must be what it says."""
    if not isinstance(mapping, PortMapping):
        raise TypeError("dnat_rule needs a PortMapping")
    container_ip = str(ipaddress.IPv4Address(container_ip))
    if not TAG_RE.match(root_tag) or not TAG_RE.match(container_id):
        raise ValueError("root tag and container ID must be lowercase hex")
    match = f"ip daddr {mapping.host_ip} " if mapping.host_ip else ""
    return (f"add rule {FAMILY} {TABLE} {PUBLISHED_CHAIN} {match}{mapping.protocol} dport "
            f"{mapping.host_port} dnat to {container_ip}:{mapping.container_port} "
            f"comment \"{published_comment(root_tag, container_id, mapping)}\"")


def bridge_comment(bridge: str) -> str:
    return f"{BRIDGE_TAG} {bridge}"


def bridge_rules(bridge: str, subnet: str, *, internal: bool = False) -> list[str]:
    """Masquerade what leaves a bridge's subnet, and what was DNAT'd into it
    from localhost (127/8 may not go on a wire) or from the subnet itself
    (hairpin: the reply must come back through the host to be un-NAT'd).
    An internal network's bridge instead forwards nothing to or from another
    interface: its containers reach each other only (podman's --internal)."""
    if not IFNAME_RE.match(bridge) or len(bridge) > MAX_IFNAME:
        raise ValueError(f"not an interface name: {bridge!r}")
    subnet = str(ipaddress.IPv4Network(subnet))
    tag = f"comment \"{bridge_comment(bridge)}\""
    if internal:
        head = f"add rule {FAMILY} {TABLE} {FORWARD_CHAIN}"
        return [f"{head} iifname \"{bridge}\" oifname != \"{bridge}\" drop {tag}",
                f"{head} oifname \"{bridge}\" iifname != \"{bridge}\" drop {tag}"]
    head = f"add rule {FAMILY} {TABLE} {POSTROUTING_CHAIN}"
    return [
        f"{head} ip saddr {subnet} ip daddr != {subnet} masquerade {tag}",
        f"{head} oifname \"{bridge}\" ip saddr {LOCALHOST_NET} masquerade {tag}",
        f"{head} oifname \"{bridge}\" ip saddr {subnet} ct status dnat masquerade {tag}",
    ]


def uplink_comment(bridge: str, interface: str) -> str:
    return f"{UPLINK_TAG} {bridge} {interface}"


def uplink_rules(bridge: str, interface: str, gateway_mac: str) -> list[str]:
    """Keep the bridge's own (gateway) MAC on this side of an uplink, both ways."""
    for name in (bridge, interface):
        if not IFNAME_RE.match(name) or len(name) > MAX_IFNAME:
            raise ValueError(f"not an interface name: {name!r}")
    if not MAC_RE.match(gateway_mac):
        raise ValueError(f"not a MAC address: {gateway_mac!r}")
    tag = f"comment \"{uplink_comment(bridge, interface)}\""
    head = f"add rule {BRIDGE_FAMILY} {TABLE}"
    return [f"{head} prerouting iifname \"{interface}\" ether saddr {gateway_mac} drop {tag}",
            f"{head} output oifname \"{interface}\" ether saddr {gateway_mac} drop {tag}"]


def owned_by_uplinks(rules: Iterable[Rule], bridge: str, interface: str | None = None) -> list[Rule]:
    """The uplink filter's rules of a bridge (of one of its uplinks, if named)."""
    if interface is not None:
        return [r for r in rules if r.comment == uplink_comment(bridge, interface)]
    return [r for r in rules if r.comment.startswith(f"{UPLINK_TAG} {bridge} ")]


def delete_rules(rules: Iterable[Rule], family: str = FAMILY) -> list[str]:
    return [f"delete rule {family} {TABLE} {rule.chain} handle {rule.handle}" for rule in rules]


def delete_table(family: str = FAMILY) -> str:
    return f"delete table {family} {TABLE}"


def parse_listing(text: str) -> list[Rule]:
    """Rules of `nft -j -a list table` output."""
    rules = []
    for item in json.loads(text).get("nftables", []):
        rule = item.get("rule")
        if rule:
            rules.append(Rule(rule["chain"], int(rule["handle"]), rule.get("comment", "")))
    return rules


def parse_published(rule: Rule) -> PublishedRule | None:
    fields = rule.comment.split()
    if rule.chain != PUBLISHED_CHAIN or len(fields) != 7 or fields[0] != PUBLISHED_TAG:
        return None
    _, root_tag, container_id, protocol, host_port, host_ip, container_port = fields
    if not (host_port.isdigit() and container_port.isdigit()):
        return None
    try:
        mapping = PortMapping("" if host_ip == ANY_HOST_IP else host_ip, int(host_port),
                              int(container_port), protocol)
    except ValueError:
        return None   # not a rule ferry wrote
    return PublishedRule(rule.handle, root_tag, container_id, mapping)


def published(rules: Iterable[Rule]) -> list[PublishedRule]:
    return [p for p in (parse_published(r) for r in rules) if p is not None]


def owned_by_bridge(rules: Iterable[Rule], bridge: str) -> list[Rule]:
    return [r for r in rules if r.chain in (POSTROUTING_CHAIN, FORWARD_CHAIN) and r.comment == bridge_comment(bridge)]


def is_unused(rules: Iterable[Rule]) -> bool:
    """Only the skeleton's jumps are left: the table can go."""
    return all(r.chain not in (PUBLISHED_CHAIN, POSTROUTING_CHAIN, FORWARD_CHAIN) for r in rules)


# ---- running nft ---------------------------------------------------------

def list_rules(family: str = FAMILY) -> list[Rule]:
    """ferry's rules (of its ip table, or of `family`'s), or [] when the table does not exist."""
    result = proc.run(["nft", "-j", "-a", "list", "table", family, TABLE],
                      desc="list ferry's nftables rules", check=False)
    if result.returncode != 0:
        if "No such file or directory" in result.stderr:
            return []
        raise ToolError("list ferry's nftables rules", result.returncode, proc.tail(result.stderr))
    return parse_listing(result.stdout)


def apply(lines: Iterable[str], desc: str) -> None:
    """Apply statements as one atomic nft transaction."""
    script = "\n".join(lines) + "\n"
    proc.run(["nft", "-f", "-"], desc=desc, input=script)
