"""The nft ruleset text ferry generates and reads back, and the container's host files."""

from __future__ import annotations

import json

from ferry.network import garp, hostfiles, link, nft
from ferry.network.ports import PortMapping

ROOT_TAG = "0123456789ab"
CONTAINER = "c" * 64


def test_skeleton_is_one_table_with_three_hooks_jumping_to_published():
    text = nft.SKELETON
    assert text.startswith("table ip ferry {")
    for hook in ("prerouting", "output", "postrouting"):
        assert f"type nat hook {hook}" in text
    # idempotent: the hook chains are flushed before their jump is added again
    assert text.count("jump published") == 2
    assert text.index("flush chain ip ferry output") < text.index("add rule ip ferry output")


def test_dnat_rule_text():
    rule = nft.dnat_rule(ROOT_TAG, CONTAINER, "10.90.0.2", PortMapping("", 8080, 80, "tcp"))
    assert rule == (f'add rule ip ferry published tcp dport 8080 dnat to 10.90.0.2:80 '
                    f'comment "pub {ROOT_TAG} {CONTAINER} tcp 8080 * 80"')
    scoped = nft.dnat_rule(ROOT_TAG, CONTAINER, "10.90.0.2", PortMapping("127.0.0.1", 5353, 53, "udp"))
    assert "ip daddr 127.0.0.1 udp dport 5353 dnat to 10.90.0.2:53" in scoped
    # nft refuses comments over 128 characters
    assert len(nft.published_comment(ROOT_TAG, CONTAINER, PortMapping("255.255.255.255", 65535, 65535, "udp"))) <= 128


def test_bridge_rules_masquerade_egress_localhost_and_hairpin():
    rules = nft.bridge_rules("ferry0", "10.90.0.0/16")
    assert any("ip saddr 10.90.0.0/16 ip daddr != 10.90.0.0/16 masquerade" in r for r in rules)
    assert any('oifname "ferry0" ip saddr 127.0.0.0/8 masquerade' in r for r in rules)
    assert any('oifname "ferry0" ip saddr 10.90.0.0/16 ct status dnat masquerade' in r for r in rules)
    assert all(r.endswith('comment "bridge ferry0"') for r in rules)


def _listing(*rules) -> str:
    items = [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "ip", "name": "ferry", "handle": 1}}]
    for chain, handle, comment in rules:
        rule = {"family": "ip", "table": "ferry", "chain": chain, "handle": handle, "expr": []}
        if comment is not None:
            rule["comment"] = comment
        items.append({"rule": rule})
    return json.dumps({"nftables": items})


def test_parse_listing_and_ownership():
    mine = nft.published_comment(ROOT_TAG, CONTAINER, PortMapping("", 8080, 80, "tcp"))
    text = _listing(("prerouting", 4, None), ("output", 5, None), ("published", 7, mine),
                    ("published", 8, "hand-made"), ("postrouting", 9, "bridge ferry0"),
                    ("postrouting", 10, "bridge ferry1"))
    rules = nft.parse_listing(text)
    assert [r.handle for r in rules] == [4, 5, 7, 8, 9, 10]
    published = nft.published(rules)
    assert len(published) == 1
    assert published[0].mapping == PortMapping("", 8080, 80, "tcp")
    assert (published[0].root_tag, published[0].container_id, published[0].handle) == (ROOT_TAG, CONTAINER, 7)
    assert [r.handle for r in nft.owned_by_bridge(rules, "ferry0")] == [9]
    assert nft.delete_rules(nft.owned_by_bridge(rules, "ferry1")) == [
        "delete rule ip ferry postrouting handle 10"]
    assert not nft.is_unused(rules)
    assert nft.is_unused([r for r in rules if r.chain in ("prerouting", "output")])


def test_interface_names_fit_and_are_unique_per_container():
    veth = link.host_veth_name("0123456789abcdef" * 4)
    assert veth == "fv0123456789ab" and len(veth) <= 15
    assert link.netns_name("0123456789abcdef" * 4) == "ferry-0123456789ab"
    assert link.parse_alias(link.veth_alias(ROOT_TAG, CONTAINER)) == (ROOT_TAG, CONTAINER)
    assert link.parse_alias("something else") is None


def test_bridge_mac_is_stable_and_locally_administered():
    mac = link.bridge_mac("ferry0", "10.90.0.1")
    assert mac == link.bridge_mac("ferry0", "10.90.0.1") != link.bridge_mac("ferry1", "10.90.0.1")
    assert int(mac[:2], 16) & 0x03 == 0x02


def test_resolv_conf_drops_loopback_nameservers():
    host = ("# generated\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\n"
            "search example.test\noptions edns0 trust-ad\nsortlist 10.0.0.0\n")
    text, count = hostfiles.container_resolv_conf(host)
    assert text == "nameserver 10.255.255.53\nsearch example.test\noptions edns0 trust-ad\n"
    assert count == 1
    assert hostfiles.container_resolv_conf("nameserver 127.0.0.1\n") == ("", 0)


def test_etc_hosts_names_container_and_host():
    text = hostfiles.etc_hosts("10.90.0.2", "web", "10.90.0.1")
    assert "127.0.0.1\tlocalhost\n" in text
    assert "10.90.0.2\tweb\n" in text
    assert "10.90.0.1\thost.containers.internal\n" in text


def test_gratuitous_arp_frame():
    frame = garp.announcement("10.90.0.2", "02:aa:bb:cc:dd:ee")
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == bytes.fromhex("02aabbccddee")
    assert frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x01"   # ARP, request
    sender_ip, target_ip = frame[28:32], frame[38:42]
    assert sender_ip == target_ip == bytes([10, 90, 0, 2])
