"""The nft ruleset text ferry generates and reads back, and the container's host files."""

from __future__ import annotations

import json

import pytest

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


def test_a_scope_names_a_container_apart_from_its_twin_in_another_root():
    """A migrated container keeps its ID; its copy in each root gets names of its own."""
    other_tag = "ba9876543210"
    assert link.netns_name(CONTAINER, ROOT_TAG) == f"ferry-cccccccccccc-{ROOT_TAG}"
    names = {link.host_veth_name(CONTAINER), link.host_veth_name(CONTAINER, ROOT_TAG),
             link.host_veth_name(CONTAINER, other_tag)}
    assert len(names) == 3 and all(len(n) <= 15 and n.startswith("fv") for n in names)
    assert link.host_veth_name(CONTAINER, ROOT_TAG) == link.host_veth_name(CONTAINER, ROOT_TAG)
    assert link.netns_name(CONTAINER, "") == link.netns_name(CONTAINER)


def test_gateway_mac_is_one_per_subnet_and_gateway_whatever_the_bridge():
    """The anycast gateway: every host's bridge for a network gets the same MAC."""
    mac = link.gateway_mac("10.90.0.0/16", "10.90.0.1")
    # Pinned: hosts running different ferry versions must still agree on it.
    assert mac == link.gateway_mac("10.90.0.0/16", "10.90.0.1") == "ee:21:c8:97:f6:ee"
    assert len({mac, link.gateway_mac("10.91.0.0/16", "10.91.0.1"),
                link.gateway_mac("10.90.0.0/16", "10.90.0.254")}) == 3
    for subnet in (f"10.{n}.0.0/16" for n in range(90, 255)):
        first = int(link.gateway_mac(subnet, subnet.replace(".0/16", ".1"))[:2], 16)
        assert first & 0x02 and not first & 0x01          # locally administered, unicast


def test_bridge_is_made_with_the_gateway_mac(monkeypatch):
    batches = []
    monkeypatch.setattr(link, "_batch", lambda lines, desc, netns=None: batches.append(list(lines)))
    link.create_bridge("ferry7", "10.97.0.1", 16)
    assert batches[0][0] == f"link add name ferry7 address {link.gateway_mac('10.97.0.0/16', '10.97.0.1')} type bridge"


def test_uplink_rules_keep_the_gateway_mac_off_the_uplink_both_ways():
    mac = "6a:fb:91:03:b6:c7"
    assert nft.uplink_rules("ferry0", "up0", mac) == [
        f'add rule bridge ferry prerouting iifname "up0" ether saddr {mac} drop comment "uplink ferry0 up0"',
        f'add rule bridge ferry output oifname "up0" ether saddr {mac} drop comment "uplink ferry0 up0"']
    assert nft.UPLINK_SKELETON.startswith("table bridge ferry {")
    for bad in (("ferry0", 'up0" accept', mac), ("ferry0", "x" * 16, mac), ("ferry0", "up0", "ff:ff")):
        with pytest.raises(ValueError):
            nft.uplink_rules(*bad)
    rules = [nft.Rule("prerouting", 3, "uplink ferry0 up0"), nft.Rule("output", 4, "uplink ferry0 up0"),
             nft.Rule("output", 5, "uplink ferry0 up1"), nft.Rule("output", 6, "uplink ferry01 up0")]
    assert [r.handle for r in nft.owned_by_uplinks(rules, "ferry0")] == [3, 4, 5]
    assert [r.handle for r in nft.owned_by_uplinks(rules, "ferry0", "up0")] == [3, 4]
    assert nft.delete_rules(rules[:1], nft.BRIDGE_FAMILY) == ["delete rule bridge ferry prerouting handle 3"]
    assert nft.delete_table(nft.BRIDGE_FAMILY) == "delete table bridge ferry"


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


def test_an_internal_bridge_forwards_nothing_beyond_itself_and_masquerades_nothing():
    rules = nft.bridge_rules("ferry3", "10.97.0.0/24", internal=True)
    assert rules == ['add rule ip ferry forward iifname "ferry3" oifname != "ferry3" drop comment "bridge ferry3"',
                     'add rule ip ferry forward oifname "ferry3" iifname != "ferry3" drop comment "bridge ferry3"']
    listed = nft.parse_listing(_listing(("forward", 4, "bridge ferry3"), ("postrouting", 5, "bridge ferry0")))
    assert [r.handle for r in nft.owned_by_bridge(listed, "ferry3")] == [4]
    assert not nft.is_unused(listed[:1])   # the table stays while an internal bridge's rules do
    with pytest.raises(ValueError):
        nft.bridge_rules('x" accept', "10.97.0.0/24", internal=True)
