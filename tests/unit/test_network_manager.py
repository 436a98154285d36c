"""NetworkManager's bookkeeping across two roots, without root: the registry and
machine locks live in a temp dir and `ip`/`nft` are faked at the chokepoint."""

from __future__ import annotations

import json
import shutil

import pytest

from ferry.network import link
from ferry.network.manager import NetworkManager
from ferry.network.registry import Registry
from ferry.store.db import Database
from ferry.store.layout import Layout
from ferry.util import locks, proc
from ferry.util.errors import Conflict, NotFound, UsageError

HOST_ROUTES = [{"dst": "192.0.2.0/24", "dev": "eth0"}, {"dst": "default", "dev": "eth0"}]
CONTAINER_A, CONTAINER_B, CONTAINER_C = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture
def tools(monkeypatch, tmp_path):
    """Answer the read-only tool calls bookkeeping makes; refuse anything else."""
    calls = []

    def execute(argv, **_):
        calls.append(list(argv))
        if argv[:4] == ["ip", "-j", "-4", "route"]:
            return proc.Result(tuple(argv), 0, json.dumps(HOST_ROUTES), "")
        if argv[:4] == ["ip", "-j", "link", "show"]:
            return proc.Result(tuple(argv), 0, "[]", "")
        if argv[:4] == ["nft", "-j", "-a", "list"]:
            return proc.Result(tuple(argv), 1, "", "Error: No such file or directory")
        raise AssertionError(f"unexpected tool call {argv}")

    monkeypatch.setattr(proc, "_execute", execute)
    # An empty host: no interface or netns exists, so nothing real is ever looked at or deleted.
    for query in ("link_exists", "netns_exists", "is_ferry_bridge"):
        monkeypatch.setattr(link, query, lambda name: False)
    monkeypatch.setattr(link, "interfaces", lambda: ["lo", "eth0"])
    monkeypatch.setattr(locks, "MACHINE_LOCK_DIR", str(tmp_path / "locks"))
    return calls


@pytest.fixture
def registry(tmp_path):
    return Registry(str(tmp_path / "networks"))


def manager(tmp_path, name: str, registry: Registry) -> NetworkManager:
    layout = Layout(str(tmp_path / name))
    return NetworkManager(layout, Database(layout.database), registry)


def test_two_roots_share_the_default_network_without_sharing_ips(tmp_path, tools, registry):
    a, b = manager(tmp_path, "a", registry), manager(tmp_path, "b", registry)
    shape = ("ferry0", "10.90.0.0/16", "10.90.0.1")
    assert (a.default().bridge, a.default().subnet, a.default().gateway) == shape
    assert (b.get("ferry").bridge, b.get("ferry").subnet, b.get("ferry").gateway) == shape
    assert a.default().id == b.default().id
    ip_a, mac_a = a.reserve(CONTAINER_A, "ferry")
    ip_b, mac_b = b.reserve(CONTAINER_B, "ferry")
    assert (ip_a, ip_b) == ("10.90.0.2", "10.90.0.3") and mac_a != mac_b
    assert a.reserve(CONTAINER_A, "ferry") == (ip_a, mac_a)     # kept for the container's lifetime
    with pytest.raises(Conflict, match=f"IP {ip_a} is already leased to container aaaaaaaaaaaa"):
        b.reserve(CONTAINER_C, "ferry", ip=ip_a)
    with pytest.raises(Conflict, match="already used by container"):
        b.reserve(CONTAINER_C, "ferry", mac=mac_a)
    assert b.reservation(CONTAINER_C) is None                   # nothing half-made
    assert b.reserve(CONTAINER_C, "ferry", ip="10.90.7.7", mac="02:00:00:00:07:07") == \
        ("10.90.7.7", "02:00:00:00:07:07")
    assert {lease.ip for lease in registry.leases("ferry0")} == {ip_a, ip_b, "10.90.7.7"}


def test_bad_requests_are_usage_errors(tmp_path, tools, registry):
    a = manager(tmp_path, "a", registry)
    for ip in ("10.88.0.5", "10.90.0.1", "10.90.255.255", "banana"):
        with pytest.raises(UsageError):
            a.reserve(CONTAINER_A, "ferry", ip=ip)
    with pytest.raises(UsageError):
        a.reserve(CONTAINER_A, "ferry", mac="01:00:5e:00:00:01")
    with pytest.raises(NotFound, match="network 'nope' not found"):
        a.reserve(CONTAINER_A, "nope")
    assert a.reservations() == [] and registry.leases("ferry0") == []


def test_create_picks_free_subnets_and_refuses_overlaps(tmp_path, tools, registry):
    a, b = manager(tmp_path, "a", registry), manager(tmp_path, "b", registry)
    a.default()
    first = a.create("blue")
    assert (first.bridge, first.subnet, first.gateway) == ("ferry1", "10.91.0.0/16", "10.91.0.1")
    with pytest.raises(Conflict, match="already exists"):
        a.create("blue")
    with pytest.raises(Conflict, match="overlaps host route 192.0.2.0/24 dev eth0"):
        a.create("lan", subnet="192.0.2.0/25")
    with pytest.raises(Conflict, match="overlaps bridge ferry1"):
        b.create("other", subnet="10.91.128.0/17")
    with pytest.raises(Conflict, match="shared with another ferry root as subnet 10.91.0.0/16"):
        b.create("blue", subnet="10.92.0.0/16", bridge="ferry1")
    joined = b.create("blue", bridge="ferry1")                 # same bridge: same network
    assert (joined.id, joined.subnet) == (first.id, first.subnet)
    with pytest.raises(UsageError, match="outside subnet"):
        a.create("green", subnet="10.93.0.0/16", gateway="10.94.0.1")
    assert [n.name for n in a.list()] == ["blue", "ferry"]


def test_remove_refuses_in_use_and_keeps_shared_bridge(tmp_path, tools, registry):
    a, b = manager(tmp_path, "a", registry), manager(tmp_path, "b", registry)
    a.reserve(CONTAINER_A, "ferry")
    b.reserve(CONTAINER_B, "ferry")
    with pytest.raises(Conflict, match="in use by 1 container"):
        a.remove("ferry")
    a.remove("ferry", force=True)
    assert a.reservations() == [] and a.list() == []
    assert registry.shape("ferry0") is not None                 # root b still uses the bridge
    assert [lease.container_id for lease in registry.leases("ferry0")] == [CONTAINER_B]
    b.release(CONTAINER_B)
    b.release(CONTAINER_B)                                      # idempotent
    b.remove("ferry")
    assert registry.bridges() == {}


def test_leases_of_a_vanished_root_are_reclaimed(tmp_path, tools, registry):
    a, b = manager(tmp_path, "a", registry), manager(tmp_path, "b", registry)
    ip, _ = a.reserve(CONTAINER_A, "ferry")
    a.db.close()
    shutil.rmtree(tmp_path / "a")
    assert b.reserve(CONTAINER_B, "ferry", ip=ip)[0] == ip


def test_prune_drops_leases_of_dead_containers_only(tmp_path, tools, registry):
    a = manager(tmp_path, "a", registry)
    a.reserve(CONTAINER_A, "ferry")
    b_ip, _ = a.reserve(CONTAINER_B, "ferry")
    removed = a.prune({CONTAINER_B})
    assert removed == ["lease 10.90.0.2 (aaaaaaaaaaaa)"]
    assert [r.container_id for r in a.reservations()] == [CONTAINER_B]
    assert [lease.ip for lease in registry.leases("ferry0")] == [b_ip]


def test_attach_and_publish_need_a_reservation(tmp_path, tools, registry):
    a = manager(tmp_path, "a", registry)
    with pytest.raises(NotFound, match="has no network address"):
        a.attach(CONTAINER_A)
    with pytest.raises(NotFound, match="has no network address"):
        a.publish(CONTAINER_A, [])


def test_a_bridge_record_no_live_root_holds_frees_its_subnet(tmp_path, tools, registry):
    """A create that failed after registering (a full /run), or a root deleted
    with its networks, once left a bridge's subnet taken by no one."""
    from ferry.network.registry import BridgeShape
    registry.register("ferry7", BridgeShape("10.97.0.0/16", "10.97.0.1"), str(tmp_path / "gone"))
    assert "ferry7" in registry.bridges()
    a = manager(tmp_path, "a", registry)
    created = a.create("blue", "10.97.0.0/24")
    assert created.subnet == "10.97.0.0/24"
    assert "ferry7" not in registry.bridges()
