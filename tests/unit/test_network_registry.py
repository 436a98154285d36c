"""The lease registry is one per host: the machine's initial network namespace
keeps /run/ferry/networks, and every other netns (a simulated host entered with
`nsenter --net`, same filesystem) gets a directory of its own. Without root:
the netns are stood in for by files whose inodes differ, and `ip`/`nft` are
faked at the chokepoint."""

from __future__ import annotations

import json
import os

import pytest

from ferry.network import registry as registry_module
from ferry.network.manager import NetworkManager
from ferry.network.registry import Lease, Registry
from ferry.store.db import Database
from ferry.store.layout import Layout
from tests.unit.test_network_manager import tools  # noqa: F401 (the fixture)

CONTAINER_A, CONTAINER_B = "a" * 64, "b" * 64


@pytest.fixture
def netns(monkeypatch, tmp_path):
    """Three 'network namespaces' (files: only their inodes matter) and a switch
    that puts this process in one of them; PID 1 is in `initial`."""
    names = {}
    for name in ("initial", "host1", "host2"):
        names[name] = tmp_path / "ns" / name
        names[name].parent.mkdir(exist_ok=True)
        names[name].write_text(name)
    monkeypatch.setattr(registry_module, "INITIAL_NETNS", str(names["initial"]))
    monkeypatch.setattr(registry_module, "REGISTRY_DIR", str(tmp_path / "run" / "networks"))
    monkeypatch.setattr(registry_module, "NETNS_REGISTRY_BASE", str(tmp_path / "run" / "netns"))

    def enter(name: str) -> int:
        monkeypatch.setattr(registry_module, "OWN_NETNS", str(names[name]))
        return os.stat(names[name]).st_ino
    enter("initial")
    return enter


def test_the_initial_netns_keeps_today_s_path(netns):
    assert registry_module.registry_dir() == registry_module.REGISTRY_DIR
    assert Registry().base == registry_module.REGISTRY_DIR


def test_another_netns_gets_a_directory_named_after_its_inode(netns, tmp_path):
    inode = netns("host1")
    expected = str(tmp_path / "run" / "netns" / f"netns-{inode}" / "networks")
    assert registry_module.registry_dir() == expected == registry_module.registry_dir_for(inode)
    assert Registry().base == expected
    assert registry_module.registry_dir() != registry_module.registry_dir_for(netns("host2"))


def test_when_pid_1_cannot_be_read_the_kernel_s_first_netns_is_the_initial_one(netns, monkeypatch, tmp_path):
    """Without root, or when PID 1 is not dumpable, /proc/1/ns/net cannot be read;
    the kernel's initial netns has a fixed inode."""
    monkeypatch.setattr(registry_module, "INITIAL_NETNS", str(tmp_path / "no-such-file"))
    host1 = netns("host1")
    assert registry_module.registry_dir() == registry_module.registry_dir_for(host1)
    monkeypatch.setattr(registry_module, "INIT_NET_INODE", host1)
    assert registry_module.registry_dir() == registry_module.REGISTRY_DIR
    assert registry_module.INIT_NET_INODE != 0xEFFFFFF9        # (patched here only)


def test_an_explicit_base_wins(netns, tmp_path):
    netns("host1")
    assert Registry(str(tmp_path / "mine")).base == str(tmp_path / "mine")


def _manager(tmp_path, name: str) -> NetworkManager:
    layout = Layout(str(tmp_path / name))
    return NetworkManager(layout, Database(layout.database))


def test_two_hosts_do_not_see_each_other_s_leases(netns, tools, tmp_path):
    """Each simulated host hands out addresses from its own registry; a machine-wide
    one would make the second host refuse (or think it owns) the first's address."""
    netns("host1")
    h1 = _manager(tmp_path, "h1")
    ip, mac = h1.reserve(CONTAINER_A, "ferry", ip="10.90.1.5")
    netns("host2")
    h2 = _manager(tmp_path, "h2")
    assert h2.reserve(CONTAINER_B, "ferry", ip="10.90.1.5") == ("10.90.1.5", h2.reservation(CONTAINER_B).mac)
    assert [lease.root for lease in h1.registry.leases("ferry0")] == [h1.root]
    assert [lease.root for lease in h2.registry.leases("ferry0")] == [h2.root]
    assert h1.registry.base != h2.registry.base
    assert not os.path.exists(registry_module.REGISTRY_DIR)        # the initial host's is untouched
    netns("initial")
    assert Registry().leases("ferry0") == []


def test_lease_records_of_every_version_are_read(tmp_path):
    registry = Registry(str(tmp_path))
    leases = tmp_path / "ferry0" / "leases"
    leases.mkdir(parents=True)
    old = {"ip": "10.90.0.2", "mac": "02:00:00:00:00:02", "root": "/r", "container_id": CONTAINER_A}
    (leases / "10.90.0.2").write_text(json.dumps(old))
    (leases / "10.90.0.3").write_text(json.dumps({**old, "ip": "10.90.0.3", "scope": "0123456789ab",
                                                   "previous_root": "/s", "from_the_future": 1}))
    (leases / "10.90.0.4").write_text(json.dumps({"ip": "10.90.0.4"}))          # not a lease
    (leases / "10.90.0.5").write_text("[]")
    (leases / ".tmp-x-10.90.0.6").write_text(json.dumps({**old, "ip": "10.90.0.6"}))
    assert registry.leases("ferry0") == [
        Lease("10.90.0.2", "02:00:00:00:00:02", "/r", CONTAINER_A),
        Lease("10.90.0.3", "02:00:00:00:00:02", "/r", CONTAINER_A, scope="0123456789ab", previous_root="/s")]


def test_rewrite_replaces_a_lease_in_one_step(tmp_path):
    registry = Registry(str(tmp_path))
    lease = Lease("10.90.0.2", "02:00:00:00:00:02", "/r", CONTAINER_A)
    registry.take("ferry0", lease)
    with pytest.raises(FileExistsError):
        registry.take("ferry0", lease)
    moved = Lease("10.90.0.2", "02:00:00:00:00:02", "/s", CONTAINER_A, scope="0123456789ab", previous_root="/r")
    registry.rewrite("ferry0", moved)
    assert registry.leases("ferry0") == [moved]
    assert os.stat(tmp_path / "ferry0" / "leases" / "10.90.0.2").st_mode & 0o777 == 0o644
