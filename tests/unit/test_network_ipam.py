"""Address management as pure functions, and the machine-wide lease files in a temp dir."""

from __future__ import annotations

import ipaddress
import os

import pytest

from ferry.network import ipam
from ferry.network.registry import BridgeShape, Lease, Registry, root_tag
from ferry.util.errors import Conflict, UsageError

SUBNET = ipaddress.IPv4Network("10.90.0.0/16")


def test_next_free_ip_skips_network_gateway_and_leases():
    assert ipam.next_free_ip(SUBNET, "10.90.0.1", []) == "10.90.0.2"
    assert ipam.next_free_ip(SUBNET, "10.90.0.1", ["10.90.0.2", "10.90.0.4"]) == "10.90.0.3"
    assert ipam.next_free_ip(SUBNET, "10.90.0.2", []) == "10.90.0.1"   # gateway need not be .1


def test_next_free_ip_never_hands_out_broadcast():
    tiny = ipaddress.IPv4Network("10.90.0.0/29")   # hosts .1 - .6, broadcast .7
    taken = [f"10.90.0.{n}" for n in range(2, 6)]
    assert ipam.next_free_ip(tiny, "10.90.0.1", taken) == "10.90.0.6"
    with pytest.raises(Conflict, match="no free address"):
        ipam.next_free_ip(tiny, "10.90.0.1", taken + ["10.90.0.6"])


@pytest.mark.parametrize("text,needle", [
    ("10.91.0.0/33", "invalid subnet"),
    ("nonsense", "invalid subnet"),
    ("10.91.0.1/16", "has host bits set"),
    ("fd00::/64", "IPv6"),
    ("10.0.0.0/7", "prefix length"),
    ("10.91.0.0/30", "prefix length"),
])
def test_bad_subnets(text, needle):
    with pytest.raises(UsageError, match=needle):
        ipam.parse_subnet(text)


def test_gateway_and_container_ip_checks():
    assert ipam.gateway_for(SUBNET, None) == "10.90.0.1"
    assert ipam.gateway_for(SUBNET, "10.90.255.254") == "10.90.255.254"
    for bad, needle in [("10.91.0.1", "outside subnet"), ("10.90.0.0", "network or broadcast"),
                        ("10.90.255.255", "network or broadcast"), ("x", "invalid gateway")]:
        with pytest.raises(UsageError, match=needle):
            ipam.gateway_for(SUBNET, bad)
    assert ipam.check_container_ip(SUBNET, "10.90.0.1", "10.90.3.4") == "10.90.3.4"
    with pytest.raises(UsageError, match="is the gateway"):
        ipam.check_container_ip(SUBNET, "10.90.0.1", "10.90.0.1")
    with pytest.raises(UsageError, match="outside subnet"):
        ipam.check_container_ip(SUBNET, "10.90.0.1", "10.88.0.5")


def test_random_mac_is_locally_administered_unicast():
    for entropy in (b"\xff" * 6, b"\x00" * 6, b"\x01\x02\x03\x04\x05\x06", None):
        mac = ipam.random_mac(entropy)
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01, mac
        assert ipam.parse_mac(mac) == mac
    assert ipam.random_mac(b"\xff" * 6) == "fe:ff:ff:ff:ff:ff"
    assert len({ipam.random_mac() for _ in range(50)}) == 50


@pytest.mark.parametrize("text", ["01:00:5e:00:00:01", "00:00:00:00:00:00", "zz:00:00:00:00:00", "02:00:00"])
def test_bad_macs(text):
    with pytest.raises(UsageError):
        ipam.parse_mac(text)


def test_parse_mac_normalises():
    assert ipam.parse_mac("02-AA-bb-CC-dd-EE") == "02:aa:bb:cc:dd:ee"


def test_subnet_and_bridge_picking_avoid_whats_used():
    used = [ipaddress.IPv4Network("10.91.0.0/16"), ipaddress.IPv4Network("10.92.3.0/24")]
    assert ipam.first_free_subnet(ipam.CREATED_SUBNETS, used) == "10.93.0.0/16"
    assert all(not ipaddress.IPv4Network(s).overlaps(ipaddress.IPv4Network("10.88.0.0/15"))
               for s in ipam.CREATED_SUBNETS + (ipam.DEFAULT_SUBNET,))   # podman's ranges
    assert ipam.first_free_bridge({"ferry0", "ferry1", "ferry3"}) == "ferry2"
    with pytest.raises(UsageError):
        ipam.check_ifname("a-name-longer-than-15")


def test_registry_leases_are_exclusive(tmp_path):
    registry = Registry(str(tmp_path / "networks"))
    registry.register("ferry0", BridgeShape("10.90.0.0/16", "10.90.0.1"), str(tmp_path / "rootA"))
    lease = Lease("10.90.0.2", "02:00:00:00:00:01", str(tmp_path / "rootA"), "a" * 64)
    registry.take("ferry0", lease)
    with pytest.raises(FileExistsError):
        registry.take("ferry0", Lease("10.90.0.2", "02:00:00:00:00:02", str(tmp_path / "rootB"), "b" * 64))
    assert registry.leases("ferry0") == [lease]
    assert lease.stale   # rootA has no database, so nothing holds it any more
    assert registry.live_roots("ferry0") == []
    os.makedirs(tmp_path / "rootA")
    (tmp_path / "rootA" / "ferry.db").write_text("")
    assert not lease.stale and registry.live_roots("ferry0") == [str(tmp_path / "rootA")]
    assert registry.shape("ferry0") == BridgeShape("10.90.0.0/16", "10.90.0.1")
    registry.drop("ferry0", "10.90.0.2")
    registry.drop("ferry0", "10.90.0.2")   # idempotent
    assert registry.leases("ferry0") == []
    assert registry.forget("ferry0") == [] and registry.bridges() == {}


def test_root_tag_is_short_and_stable():
    assert root_tag("/var/lib/ferry") == root_tag("/var/lib/ferry/") != root_tag("/tmp/x")
    assert len(root_tag("/tmp/x")) == 12


def test_next_free_ip_rotates_after_the_last_allocation():
    import ipaddress
    net = ipaddress.IPv4Network("10.90.0.0/29")   # hosts .1 to .6, gateway .1
    assert ipam.next_free_ip(net, "10.90.0.1", []) == "10.90.0.2"
    assert ipam.next_free_ip(net, "10.90.0.1", [], after="10.90.0.3") == "10.90.0.4"
    # an address just freed (.4) is not handed out again before the others
    assert ipam.next_free_ip(net, "10.90.0.1", ["10.90.0.5"], after="10.90.0.4") == "10.90.0.6"
    assert ipam.next_free_ip(net, "10.90.0.1", ["10.90.0.2"], after="10.90.0.6") == "10.90.0.3"
    assert ipam.next_free_ip(net, "10.90.0.1", [], after="192.168.0.1") == "10.90.0.2"
    with pytest.raises(Conflict):
        ipam.next_free_ip(net, "10.90.0.1", [f"10.90.0.{i}" for i in range(2, 7)], after="10.90.0.2")
