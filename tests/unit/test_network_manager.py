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


# ---- a container that moves between two roots on one host keeps its ID ----------

def test_a_lease_is_adopted_only_when_asked_and_only_by_the_same_container(tmp_path, tools, registry):
    source, dest = manager(tmp_path, "src", registry), manager(tmp_path, "dst", registry)
    ip, mac = source.reserve(CONTAINER_A, "ferry")
    with pytest.raises(Conflict, match=f"IP {ip} is already leased to container aaaaaaaaaaaa"):
        dest.reserve(CONTAINER_A, "ferry", ip=ip, mac=mac)                    # the default refuses
    with pytest.raises(Conflict, match=f"IP {ip} is already leased to container aaaaaaaaaaaa"):
        dest.reserve(CONTAINER_B, "ferry", ip=ip, adopt=True)                 # another container
    with pytest.raises(Conflict, match=f"has MAC {mac} in root {source.root}"):
        dest.reserve(CONTAINER_A, "ferry", ip=ip, mac="02:00:00:00:00:99", adopt=True)
    assert dest.reservations() == [] and [lease.root for lease in registry.leases("ferry0")] == [source.root]

    assert dest.reserve(CONTAINER_A, "ferry", ip=ip, mac=mac, adopt=True) == (ip, mac)
    [lease] = registry.leases("ferry0")
    assert (lease.root, lease.container_id, lease.mac) == (dest.root, CONTAINER_A, mac)
    assert (lease.previous_root, lease.scope) == (source.root, dest.root_tag)
    assert dest.reserve(CONTAINER_A, "ferry", ip=ip, adopt=True) == (ip, mac)     # idempotent
    with pytest.raises(Conflict, match=f"IP {ip} is already leased .* \\(root {dest.root}\\)"):
        source.reserve(CONTAINER_B, "ferry", ip=ip)                            # nor anyone else


def test_a_source_that_resumes_before_the_destination_undid_takes_its_lease_back(tmp_path, tools, registry):
    """A destination agent killed mid-restore undoes its side only when it runs again;
    the source resumes (the move failed) and puts its copy back on the wire meanwhile."""
    source, dest = manager(tmp_path, "src", registry), manager(tmp_path, "dst", registry)
    ip, mac = source.reserve(CONTAINER_A, "ferry")
    dest.reserve(CONTAINER_A, "ferry", ip=ip, adopt=True)
    assert source.reserve(CONTAINER_A, "ferry") == (ip, mac)      # the source's attach holds it so
    [lease] = registry.leases("ferry0")
    assert (lease.root, lease.previous_root, lease.scope) == (source.root, "", "")
    dest.release(CONTAINER_A)                                      # the destination's late undo
    [lease] = registry.leases("ferry0")
    assert lease.root == source.root
    other = manager(tmp_path, "other", registry)                   # a third root may not take it
    with pytest.raises(Conflict, match="already leased"):
        other.reserve(CONTAINER_B, "ferry", ip=ip)


def test_a_source_may_not_take_back_a_lease_whose_destination_copy_is_on_the_wire(tmp_path, tools, registry,
                                                                                 monkeypatch):
    """A stopped copy the source kept (--keep-source) started again after the move completed."""
    source, dest = manager(tmp_path, "src", registry), manager(tmp_path, "dst", registry)
    ip, _ = source.reserve(CONTAINER_A, "ferry")
    dest.reserve(CONTAINER_A, "ferry", ip=ip, adopt=True)
    monkeypatch.setattr(link, "is_up", lambda name: name == dest.host_veth(CONTAINER_A))
    with pytest.raises(Conflict, match=f"already leased to container aaaaaaaaaaaa \\(root {dest.root}\\)"):
        source.reserve(CONTAINER_A, "ferry")
    assert [lease.root for lease in registry.leases("ferry0")] == [dest.root]


def test_an_adopted_container_s_netns_and_veth_are_named_apart_from_its_twin(tmp_path, tools, registry):
    source, dest = manager(tmp_path, "src", registry), manager(tmp_path, "dst", registry)
    ip, mac = source.reserve(CONTAINER_A, "ferry")
    dest.reserve(CONTAINER_A, "ferry", ip=ip, adopt=True)
    assert source.netns_name(CONTAINER_A) == link.netns_name(CONTAINER_A) == "ferry-aaaaaaaaaaaa"
    assert dest.netns_name(CONTAINER_A) == f"ferry-aaaaaaaaaaaa-{dest.root_tag}"
    assert source.host_veth(CONTAINER_A) == "fvaaaaaaaaaaaa" != dest.host_veth(CONTAINER_A)
    net = dest.get("ferry")
    attachment = dest._attachment(net, dest.reservation(CONTAINER_A))
    assert (attachment.netns, attachment.host_veth, attachment.ip, attachment.mac) == \
        (dest.netns_name(CONTAINER_A), dest.host_veth(CONTAINER_A), ip, mac)


def test_after_a_move_the_source_s_rm_leaves_the_destination_s_lease(tmp_path, tools, registry):
    source, dest = manager(tmp_path, "src", registry), manager(tmp_path, "dst", registry)
    ip, mac = source.reserve(CONTAINER_A, "ferry")
    dest.reserve(CONTAINER_A, "ferry", ip=ip, adopt=True)
    source.release(CONTAINER_A)                                            # ferry rm on the source
    assert source.reservation(CONTAINER_A) is None
    [lease] = registry.leases("ferry0")
    assert (lease.root, lease.previous_root, lease.ip, lease.mac) == (dest.root, "", ip, mac)
    with pytest.raises(Conflict, match="already leased"):
        source.reserve(CONTAINER_C, "ferry", ip=ip)
    dest.release(CONTAINER_A)                                              # and later on the destination
    assert registry.leases("ferry0") == []


def test_a_move_that_fails_gives_the_lease_back_to_the_source(tmp_path, tools, registry):
    source, dest = manager(tmp_path, "src", registry), manager(tmp_path, "dst", registry)
    ip, mac = source.reserve(CONTAINER_A, "ferry")
    dest.reserve(CONTAINER_A, "ferry", ip=ip, adopt=True)
    dest.release(CONTAINER_A)                                              # the destination's undo
    [lease] = registry.leases("ferry0")
    assert (lease.root, lease.previous_root, lease.scope) == (source.root, "", "")
    assert source.reserve(CONTAINER_A, "ferry") == (ip, mac)               # still the source's


def test_a_move_back_and_forth_hands_the_lease_over_each_way(tmp_path, tools, registry):
    a, b = manager(tmp_path, "a", registry), manager(tmp_path, "b", registry)
    ip, mac = a.reserve(CONTAINER_A, "ferry")
    b.reserve(CONTAINER_A, "ferry", ip=ip, adopt=True)
    a.release(CONTAINER_A)
    a.reserve(CONTAINER_A, "ferry", ip=ip, mac=mac, adopt=True)            # and back to a
    assert a.netns_name(CONTAINER_A) == f"ferry-aaaaaaaaaaaa-{a.root_tag}" != b.netns_name(CONTAINER_A)
    [lease] = registry.leases("ferry0")
    assert (lease.root, lease.previous_root, lease.previous_scope) == (a.root, b.root, b.root_tag)
    b.release(CONTAINER_A)
    [lease] = registry.leases("ferry0")
    assert (lease.root, lease.previous_root, lease.scope) == (a.root, "", a.root_tag)


def test_adopting_without_a_holder_takes_the_ip_with_names_of_its_own(tmp_path, tools, registry):
    """Another host (its own registry) or a source root since deleted: nothing to hand over."""
    gone = manager(tmp_path, "gone", registry)
    ip, mac = gone.reserve(CONTAINER_A, "ferry")
    gone.db.close()
    shutil.rmtree(tmp_path / "gone")
    dest = manager(tmp_path, "dst", registry)
    assert dest.reserve(CONTAINER_A, "ferry", ip=ip, mac=mac, adopt=True) == (ip, mac)
    [lease] = registry.leases("ferry0")
    assert (lease.root, lease.previous_root) == (dest.root, "")
    assert dest.netns_name(CONTAINER_A).endswith(dest.root_tag)
    assert dest.reserve(CONTAINER_B, "ferry", ip="10.90.3.3", adopt=True)[0] == "10.90.3.3"


def test_prune_of_an_adopted_lease_without_its_row_hands_it_back(tmp_path, tools, registry):
    source, dest = manager(tmp_path, "src", registry), manager(tmp_path, "dst", registry)
    ip, _ = source.reserve(CONTAINER_A, "ferry")
    dest.reserve(CONTAINER_A, "ferry", ip=ip, adopt=True)
    with dest.db.write() as conn:                          # a crash lost the destination's row
        conn.execute("DELETE FROM network_leases WHERE container_id = ?", (CONTAINER_A,))
    assert dest.prune(set()) == [f"lease {ip} (aaaaaaaaaaaa) back to root {source.root}"]
    assert [lease.root for lease in registry.leases("ferry0")] == [source.root]


def test_a_database_of_an_older_ferry_gains_the_scope_column(tmp_path, tools, registry):
    import sqlite3
    layout = Layout(str(tmp_path / "old"))
    manager(tmp_path, "old", registry).db.close()
    with sqlite3.connect(layout.database) as conn:
        conn.execute("DROP TABLE network_leases")
        conn.execute("CREATE TABLE network_leases (container_id TEXT PRIMARY KEY, network TEXT NOT NULL, "
                     "ip TEXT NOT NULL, mac TEXT NOT NULL, UNIQUE (network, ip))")
        conn.execute("INSERT INTO network_leases VALUES (?, 'ferry', '10.90.0.9', '02:00:00:00:00:09')",
                     (CONTAINER_A,))
    again = manager(tmp_path, "old", registry)
    assert again.reservation(CONTAINER_A).scope == ""
    assert again.netns_name(CONTAINER_A) == "ferry-aaaaaaaaaaaa"
    again.reserve(CONTAINER_B, "ferry", adopt=True)
    assert again.reservation(CONTAINER_B).scope == again.root_tag


# ---- uplinks: a bridge that shares its L2 segment with other hosts' bridges -------

@pytest.fixture
def uplink_host(monkeypatch, tmp_path):
    """A host with interface up0 and nothing of ferry's: ip and nft calls are recorded
    and answered; the bridge and the uplink rules appear as they are made."""
    state = {"links": {"lo", "up0"}, "bridge_rules": [], "applied": [], "batches": []}

    def execute(argv, **kwargs):
        argv = list(argv)
        if argv[:4] == ["ip", "-j", "-4", "route"]:
            return proc.Result(tuple(argv), 0, "[]", "")
        if argv[:2] == ["ip", "-batch"]:
            lines = kwargs["input"].splitlines()
            state["batches"].append(lines)
            if lines[0].startswith("link add name "):
                state["links"].add(lines[0].split()[3])
            return proc.Result(tuple(argv), 0, "", "")
        if argv[:6] == ["nft", "-j", "-a", "list", "table", "bridge"]:
            if not state["bridge_rules"]:
                return proc.Result(tuple(argv), 1, "", "Error: No such file or directory")
            listing = {"nftables": [{"rule": {"chain": c, "handle": h, "comment": m}}
                                    for c, h, m in state["bridge_rules"]]}
            return proc.Result(tuple(argv), 0, json.dumps(listing), "")
        if argv[:4] == ["nft", "-j", "-a", "list"]:
            return proc.Result(tuple(argv), 1, "", "Error: No such file or directory")
        if argv[:3] == ["nft", "-f", "-"]:
            script = kwargs["input"]
            state["applied"].append(script)
            for line in script.splitlines():
                if line.startswith("add rule bridge ferry"):
                    chain = line.split()[4]
                    comment = line.split('comment "')[1].rstrip('"')
                    state["bridge_rules"].append((chain, len(state["bridge_rules"]) + 10, comment))
                if line == "delete table bridge ferry":
                    state["bridge_rules"].clear()
            return proc.Result(tuple(argv), 0, "", "")
        if argv[:3] == ["ip", "link", "del"]:
            state["links"].discard(argv[3])
            return proc.Result(tuple(argv), 0, "", "")
        raise AssertionError(f"unexpected tool call {argv}")

    monkeypatch.setattr(proc, "_execute", execute)
    monkeypatch.setattr(link, "link_exists", lambda name: name in state["links"])
    monkeypatch.setattr(link, "is_ferry_bridge", lambda name: name == "ferry0" and name in state["links"])
    monkeypatch.setattr(link, "is_ferry_made", lambda name: name.startswith(("ferry", "fv")))
    monkeypatch.setattr(link, "link_address", lambda name: None)
    monkeypatch.setattr(link, "netns_exists", lambda name: False)
    monkeypatch.setattr(link, "interfaces", lambda: sorted(state["links"]))
    monkeypatch.setattr(link, "enable_routing", lambda bridge: None)
    monkeypatch.setattr(locks, "MACHINE_LOCK_DIR", str(tmp_path / "locks"))
    return state


def test_an_uplink_joins_the_bridge_with_the_gateway_mac_kept_off_it(tmp_path, uplink_host, registry):
    a = manager(tmp_path, "a", registry)
    net = a.add_uplink("ferry", "up0")
    mac = link.gateway_mac(net.subnet, net.gateway)
    assert uplink_host["batches"][0][0] == f"link add name ferry0 address {mac} type bridge"
    assert uplink_host["batches"][-1] == ["link set up0 master ferry0", "link set up0 up"]
    assert [m for _, _, m in uplink_host["bridge_rules"]] == ["uplink ferry0 up0"] * 2
    assert f'iifname "up0" ether saddr {mac} drop' in uplink_host["applied"][-1]
    filters = [script for script in uplink_host["applied"] if "table bridge ferry" in script]
    a.add_uplink("ferry", "up0")                                      # idempotent: no new rules
    assert [script for script in uplink_host["applied"] if "table bridge ferry" in script] == filters
    assert len(uplink_host["bridge_rules"]) == 2
    assert registry.shape("ferry0") is not None

    for bad, needle in (("nope0", "interface nope0 does not exist"),
                        ("ferry0", "was made by ferry"), ("fvaaaaaaaaaaaa", "was made by ferry")):
        uplink_host["links"].add("fvaaaaaaaaaaaa")
        with pytest.raises((NotFound, Conflict), match=needle):
            a.add_uplink("ferry", bad)
    with pytest.raises(UsageError):
        a.add_uplink("ferry", "bad name")

    a.remove("ferry")                                                 # the bridge goes, its filter too
    assert "ferry0" not in uplink_host["links"] and uplink_host["bridge_rules"] == []
    assert uplink_host["applied"][-1].strip() == "delete table bridge ferry"


def test_hosts_on_one_segment_allocate_from_pools_of_their_own(tmp_path, tools):
    """Two hosts, two registries: without pools both would hand out 10.90.0.2."""
    h1 = manager(tmp_path, "h1", Registry(str(tmp_path / "host1")))
    h2 = manager(tmp_path, "h2", Registry(str(tmp_path / "host2")))
    h1.set_pool("ferry", "10.90.1.0/24")
    h2.set_pool("ferry", "10.90.2.0/24")
    assert [h1.reserve(c, "ferry")[0] for c in (CONTAINER_A, CONTAINER_B)] == ["10.90.1.1", "10.90.1.2"]
    assert h2.reserve(CONTAINER_C, "ferry")[0] == "10.90.2.1"
    assert h2.reserve("d" * 64, "ferry", ip="10.90.1.1", adopt=True)[0] == "10.90.1.1"   # arrived from h1
    with pytest.raises(UsageError, match="not inside subnet 10.90.0.0/16"):
        h1.set_pool("ferry", "10.91.0.0/24")
    with pytest.raises(UsageError, match="invalid subnet"):
        h1.set_pool("ferry", "banana")
    h1.set_pool("ferry", None)
    assert h1.registry.pool("ferry0") is None
    assert h1.reserve("e" * 64, "ferry")[0] == "10.90.1.3"        # after the cursor, in the whole subnet


def test_create_keeps_internal_labels_and_ip_range(tmp_path, tools, registry):
    a = manager(tmp_path, "a", registry)
    made = a.create("inner", subnet="10.97.0.0/24", gateway="10.97.0.1", internal=True,
                    labels={"tier": "db", "bare": ""}, ip_range="10.97.0.128/25")
    again = a.get("inner")
    assert again == made and (again.internal, dict(again.labels), again.ip_range) == \
        (True, {"tier": "db", "bare": ""}, "10.97.0.128/25")
    assert a.reserve(CONTAINER_A, "inner")[0] == "10.97.0.129"   # from the range, not the subnet's start
    plain = a.create("plain")
    assert (plain.internal, plain.labels, plain.ip_range) == (False, (), "")


@pytest.mark.parametrize("kwargs, needle", [
    ({"gateway": "10.97.0.1"}, "cannot set gateway or range without subnet"),
    ({"ip_range": "10.97.0.0/25"}, "cannot set gateway or range without subnet"),
    ({"subnet": "10.97.0.0/24", "ip_range": "10.98.0.0/25"}, "is not inside subnet"),
    ({"subnet": "10.97.0.0/24", "ip_range": "banana"}, "invalid subnet"),
])
def test_create_refuses_a_gateway_or_range_it_cannot_place(tmp_path, tools, registry, kwargs, needle):
    a = manager(tmp_path, "a", registry)
    with pytest.raises(UsageError, match=needle):
        a.create("inner", **kwargs)
    assert a.list() == [] and registry.bridges() == {}


def test_join_and_leave_a_stopped_container_s_further_network(tmp_path, tools, registry):
    a = manager(tmp_path, "a", registry)
    a.create("blue", subnet="10.97.0.0/24")
    with pytest.raises(Conflict, match="is on no bridge network"):
        a.join(CONTAINER_A, "blue")
    a.reserve(CONTAINER_A, "ferry")
    joined = a.join(CONTAINER_A, "blue", ip="10.97.0.9")
    assert (joined.network, joined.ip, joined.position) == ("blue", "10.97.0.9", 1)
    assert [r.network for r in a.all_reservations(CONTAINER_A)] == ["ferry", "blue"]
    with pytest.raises(Conflict, match="already connected to network 'blue'"):
        a.join(CONTAINER_A, "blue")
    with pytest.raises(NotFound, match="network 'nope' not found"):
        a.join(CONTAINER_A, "nope")
    with pytest.raises(Conflict, match="in use by 1 container"):
        a.remove("blue")
    with pytest.raises(Conflict, match="is the first network"):
        a.leave(CONTAINER_A, "ferry")
    assert a.leave(CONTAINER_A, "blue").ip == "10.97.0.9"
    assert [r.network for r in a.all_reservations(CONTAINER_A)] == ["ferry"]
    assert registry.lease("ferry1", "10.97.0.9") is None        # the address is free again
    with pytest.raises(Conflict, match="is not connected to network blue"):
        a.leave(CONTAINER_A, "blue")
    a.remove("blue")
