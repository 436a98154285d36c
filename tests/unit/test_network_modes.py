"""--network host, --network none and several networks without root: the typed
config's new fields (written only when used, forged ones refused), the runtime
spec's namespaces per mode, and `run`'s refusals as podman 4.3.1 gives them."""

from __future__ import annotations

import json
import os

import pytest

from ferry.engine.config import MAX_NETWORKS, ContainerConfig, NetworkLink
from ferry.engine.containers import RunOptions, _networks
from ferry.network import hostfiles
from ferry.network.ports import PortMapping
from ferry.runtime import spec
from ferry.util.errors import NotFound, UsageError
from tests.unit.fakehost import containers, engine, host  # noqa: F401  (fixtures)
from tests.unit.test_container_config import CONFIG
from tests.unit.test_runtime_spec import profile  # noqa: F401  (fixture)

SEVERAL = CONFIG._replace(more_networks=(NetworkLink("blue", "10.93.0.4", "02:42:0a:5d:00:04"),
                                         NetworkLink("red", "", "")))
HOST = CONFIG._replace(network="host", network_mode="host", ip="", mac="", ports=())
NONE = CONFIG._replace(network="none", network_mode="none", ip="", mac="", ports=())


# ---- the typed config -------------------------------------------------------------------

def test_old_records_read_the_same_and_the_keys_are_written_only_when_used():
    data = CONFIG.to_dict()
    assert "network_mode" not in data and "more_networks" not in data
    assert ContainerConfig.from_dict(data).network_mode == "bridge"
    assert not CONFIG.host_network
    assert CONFIG.joined == (NetworkLink("ferry", CONFIG.ip, CONFIG.mac),)


@pytest.mark.parametrize("config", [SEVERAL, HOST, NONE])
def test_each_mode_round_trips(config):
    assert ContainerConfig.from_json(config.to_json()) == config


def test_several_networks_are_listed_first_first():
    assert [j.network for j in SEVERAL.joined] == ["ferry", "blue", "red"]
    assert SEVERAL.to_dict()["more_networks"][0] == {"network": "blue", "ip": "10.93.0.4",
                                                     "mac": "02:42:0a:5d:00:04"}


def test_host_networking_is_visible_to_a_restore_s_privilege_rule():
    assert HOST.host_network and HOST.network_mode == "host"
    assert HOST.to_dict()["network_mode"] == "host"
    assert HOST.joined == () and NONE.joined == ()
    assert not NONE.host_network


def forged(**changes) -> str:
    data = CONFIG.to_dict()
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize("text,message", [
    (forged(network_mode="bridge"), "written only when not bridge"),
    (forged(network_mode="container:abc"), "is not one of"),
    (forged(network_mode=1), "is not one of"),
    (forged(network_mode="host"), "has no network, address"),             # keeps an address and ports
    (forged(network_mode="none", network="none", ip="", mac="", ports=[],
            more_networks=[{"network": "blue", "ip": "", "mac": ""}]), "has no network, address"),
    (forged(more_networks=[]), "written only when not empty"),
    (forged(more_networks=[{"network": "ferry", "ip": "", "mac": ""}]), "joined twice"),
    (forged(more_networks=[{"network": "blue", "ip": "10.90.0.7", "mac": ""}]), "same address"),
    (forged(more_networks=[{"network": "blue", "ip": "", "mac": "", "bridge": "eth0"}]), "bridge"),
    (forged(more_networks=[{"network": "../x", "ip": "", "mac": ""}]), "not a valid name"),
    (forged(more_networks=[{"network": "blue", "ip": "10.93.0.256", "mac": ""}]), "not an IPv4"),
    (forged(more_networks=[{"network": "blue", "ip": "", "mac": "zz"}]), "not a MAC"),
    (forged(more_networks={"network": "blue"}), "must be a list"),
    (forged(more_networks=[{"network": f"n{i}", "ip": "", "mac": ""} for i in range(MAX_NETWORKS)]),
     "at most"),
])
def test_forged_network_fields_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        ContainerConfig.from_json(text)


def test_a_host_config_cannot_be_given_an_address_later():
    with pytest.raises(ValueError):
        HOST._replace(ports=(PortMapping("", 8080, 80, "tcp"),))


# ---- the runtime spec ----------------------------------------------------------------------

def _namespaces(profile, monkeypatch, **fields) -> list[dict]:
    monkeypatch.setattr(spec, "SECCOMP_PROFILE", profile)
    oci = spec.build(spec.ContainerSpec(container_id="a" * 64, hostname="h", rootfs="/r",
                                        process=spec.ProcessSpec(args=("sh",)), **fields))
    return oci["linux"]["namespaces"]


def test_the_spec_joins_ferry_s_netns_on_a_bridge_or_none(profile, monkeypatch):
    found = _namespaces(profile, monkeypatch, netns_path="/run/netns/ferry-aaaa")
    assert {"type": "network", "path": "/run/netns/ferry-aaaa"} in found


def test_the_spec_of_host_networking_has_no_network_namespace(profile, monkeypatch):
    found = _namespaces(profile, monkeypatch, host_network=True)
    assert "network" not in {n["type"] for n in found}
    assert {"pid", "ipc", "uts", "mount"} <= {n["type"] for n in found}
    with pytest.raises(ValueError):
        _namespaces(profile, monkeypatch, host_network=True, netns_path="/run/netns/x")


# ---- run's choices and refusals (podman 4.3.1's, checked on this machine) ----------------------

@pytest.mark.parametrize("given,expected", [
    (None, ("bridge", [])),
    ("none", ("none", [])),
    (("host",), ("host", [])),
    (("a", "b"), ("bridge", ["a", "b"])),
    ("a,b", ("bridge", ["a", "b"])),
    (("a,b", "a"), ("bridge", ["a", "b"])),
    (("bridge",), ("bridge", ["ferry"])),
])
def test_network_flags(given, expected):
    assert _networks(given) == expected


@pytest.mark.parametrize("given,ip,mac,message", [
    (("none", "a"), None, None, "cannot set multiple networks without bridge network mode, selected mode none"),
    (("host", "a"), None, None, "selected mode host"),
    ("a,host", None, None, "selected mode host"),
    (("a", "b"), "10.0.0.2", None, "--ip can only be set for a single network"),
    ("a,b", None, "02:00:00:00:00:01", "--mac-address can only be set for a single network"),
    ("none", "10.0.0.2", None, "--ip can only be set when the network mode is bridge"),
    ("host", None, "02:00:00:00:00:01", "--mac-address can only be set when the network mode is bridge"),
    (",".join(f"n{i}" for i in range(MAX_NETWORKS + 1)), None, None, "at most"),
])
def test_bad_combinations_are_refused(given, ip, mac, message):
    with pytest.raises(UsageError, match=message):
        _networks(given, ip, mac)


def test_run_on_several_networks_reserves_an_address_on_each(containers, engine):
    engine.networks.create("blue", "10.93.0.0/24")
    container = containers.create(RunOptions(image="busy:1", name="web", network=("ferry", "blue"),
                                             ports=("8080:80",)))
    config = container.config
    assert [j.network for j in config.joined] == ["ferry", "blue"]
    assert all(j.ip and j.mac for j in config.joined)
    assert config.more_networks[0].ip.startswith("10.93.0.")
    held = engine.networks.all_reservations(container.id)
    assert [(r.network, r.ip, r.position) for r in held] == [(j.network, j.ip, i) for i, j in enumerate(config.joined)]
    attachments = engine.networks.attachments(container.id)
    assert [a.interface for a in attachments] == ["eth0", "eth1"]
    assert len({a.host_veth for a in attachments}) == 2
    containers.remove(container.id)
    assert engine.networks.reservations() == []


def test_an_unknown_network_is_refused_before_anything_is_made(containers, engine):
    with pytest.raises(NotFound, match="nope"):
        containers.create(RunOptions(image="busy:1", name="web", network=("ferry", "nope")))
    assert containers.list(all_states=True) == [] and engine.networks.reservations() == []


@pytest.mark.parametrize("mode", ["host", "none"])
def test_host_and_none_take_no_address_and_drop_ports(containers, engine, mode):
    container = containers.create(RunOptions(image="busy:1", name="web", network=mode, ports=("8080:80",)))
    assert container.config.network_mode == mode and container.config.network == mode
    assert container.config.ports == () and container.config.ip == ""
    assert engine.networks.reservations() == []
    containers.remove(container.id)


@pytest.mark.parametrize("name", ["host", "none", "bridge"])
def test_a_network_cannot_take_a_mode_s_name(engine, name):
    with pytest.raises(UsageError, match="conflicts with a valid network mode"):
        engine.networks.create(name)


# ---- the files the container sees ----------------------------------------------------------

def test_hosts_files_per_mode():
    assert hostfiles.etc_hosts_no_network("c1").splitlines()[-1] == "127.0.0.1\tc1"
    several = hostfiles.etc_hosts_extra("c1", ["10.90.0.2", "10.93.0.2"], "10.90.0.1").splitlines()
    assert several[2:] == ["10.90.0.2\tc1", "10.93.0.2\tc1", "10.90.0.1\thost.containers.internal"]
    assert hostfiles.etc_hosts_host_network("127.0.0.1 localhost", "192.0.2.2") == \
        "127.0.0.1 localhost\n192.0.2.2\thost.containers.internal\n"


# ---- a restore's hook and the wires ----------------------------------------------------------------

def _restore_seeing_the_hook(containers, host, tmp_path, container) -> str:
    from ferry.engine.containers import RestoreFrom
    from ferry.store.layout import CRIU_RESTORE_HOOK
    images, work = tmp_path / "images", tmp_path / "work"
    images.mkdir()
    work.mkdir()
    (images / "inventory.img").write_bytes(b"x")
    seen = {}
    original = host._monitor

    def monitor(argv):
        with open(os.path.join(containers.dir(container.id), CRIU_RESTORE_HOOK)) as f:
            seen["hook"] = f.read()
        return original(argv)
    host._monitor = monitor
    containers.start(container.name, restore=RestoreFrom(str(images), str(work), tcp_established=True))
    return seen["hook"]


def test_a_restore_s_hook_connects_every_wire_of_several_networks(containers, engine, host, tmp_path):
    engine.networks.create("blue", "10.93.0.0/24")
    container = containers.create(RunOptions(image="busy:1", name="web", network="ferry,blue"))
    veths = [a.host_veth for a in engine.networks.attachments(container.id)]
    hook = _restore_seeing_the_hook(containers, host, tmp_path, container)
    assert f"link set {veths[0]} up && exec " in hook and hook.rstrip().endswith(f"link set {veths[1]} up")
    assert all(host.links[veth]["up"] for veth in veths)
    containers.remove(container.id, force=True)
    assert not [veth for veth in veths if veth in host.links]


@pytest.mark.parametrize("mode", ["host", "none"])
def test_a_restore_of_host_or_none_has_no_wire_to_connect(containers, host, tmp_path, mode):
    container = containers.create(RunOptions(image="busy:1", name="web", network=mode))
    hook = _restore_seeing_the_hook(containers, host, tmp_path, container)
    assert "exit 0" in hook and "link set" not in hook
    spec = json.load(open(os.path.join(containers.dir(container.id), "config.json")))
    network = [n for n in spec["linux"]["namespaces"] if n["type"] == "network"]
    if mode == "host":
        assert network == []
    else:
        assert network == [{"type": "network", "path": f"/run/netns/{containers.networks.netns_name(container.id)}"}]
    containers.remove(container.id, force=True)


# ---- a restore's new addresses ---------------------------------------------------------------------

def test_a_restore_readdresses_the_interface_whose_address_is_taken():
    from ferry.engine.checkpoints import RestoreOptions, _readdressed
    from ferry.util.errors import Conflict
    clash = Conflict("IP 10.93.0.4 is already leased to container abc (root /r)")
    config = _readdressed(SEVERAL, clash, RestoreOptions())
    assert config.more_networks[0] == NetworkLink("blue", "", "")
    assert (config.ip, config.mac) == (SEVERAL.ip, SEVERAL.mac)
    with pytest.raises(Conflict, match="10.93.0.4") as refused:
        _readdressed(SEVERAL, clash, RestoreOptions(tcp_established=True))
    assert "TCP connections" in refused.value.hint


def test_a_network_a_container_joined_second_is_in_use(containers, engine):
    from ferry.engine.networks import remove_network
    from ferry.util.errors import Conflict
    engine.networks.create("blue", "10.93.0.0/24")
    container = containers.create(RunOptions(image="busy:1", name="web", network="ferry,blue"))
    with pytest.raises(Conflict, match="network blue is in use by 1 container"):
        engine.networks.remove("blue")
    remove_network(engine, "blue", force=True)   # podman's -f: its containers go first
    assert containers.list(all_states=True) == [] and engine.networks.reservations() == []
    assert not engine.networks.has("blue") and container.id not in str(engine.networks.reservations())
