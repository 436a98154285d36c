"""The network layer against the real kernel: two state roots share the default
bridge, busybox httpd serves inside container netns, and ports are published
through nftables. Traffic stays on loopback and in netns these tests create."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import require

from ferry.cli import main as cli_main
from ferry.cli import networks as cli_networks
from ferry.engine.core import Engine
from ferry.network import garp, link, nft
from ferry.network.ports import parse_port
from ferry.network.registry import REGISTRY_DIR, Registry, root_tag
from ferry.store.ids import new_id
from ferry.util.errors import Conflict, FerryError

BUSYBOX = "/bin/busybox"
PAGE = "hello from ferry's network test\n"
DEADLINE = 10.0
POLL = 0.05


@pytest.fixture(scope="module", autouse=True)
def host_ready():
    require("netns")
    require("nftables")
    if not os.access(BUSYBOX, os.X_OK):
        pytest.skip(f"{BUSYBOX} is missing (Debian package busybox-static)")
    # The first `ip netns add` on a machine makes /run/netns a shared mount that
    # stays; make it before no_leaks takes its snapshot so it is not counted.
    name = f"fytest-warm-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "del", name], check=True)


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _nft_table_exists() -> bool:
    return subprocess.run(["nft", "list", "table", "ip", nft.TABLE], capture_output=True).returncode == 0


def assert_nothing_left(root_paths: list[str]) -> None:
    """Nothing ferry made for these roots may remain: veths, nft rules, registry files,
    and once no root on the machine uses ferry networking, no bridge and no nft table.
    (Checked by owner, so another engineer's concurrent tests do not count.)"""
    tags = {root_tag(path) for path in root_paths}
    assert not [v for v, (tag, _) in link.veth_owners().items() if tag in tags], "leaked veths"
    assert not [p for p in nft.published(nft.list_rules()) if p.root_tag in tags], "leaked nft rules"
    registry = Registry()
    for bridge in registry.bridges():
        assert not set(root_paths) & set(registry.live_roots(bridge)), f"{bridge} still lists a test root"
        assert not [lease for lease in registry.leases(bridge) if lease.root in root_paths], "leaked leases"
    assert not [name for name in _links() if name.startswith("fyt")], "leaked client veth"
    if not registry.bridges():
        assert not [name for name in _links() if link.is_ferry_bridge(name)], "leaked bridge"
        assert not _nft_table_exists(), "ferry's nft table left behind"


@pytest.fixture
def roots(tmp_path):
    """Two state roots (two 'hosts') on this machine; everything torn down afterwards."""
    paths = [str(tmp_path / name) for name in ("rootA", "rootB")]
    managers = [Engine(path).networks for path in paths]
    yield managers
    for manager in managers:
        manager.prune(set())
        for network in manager.list():
            manager.remove(network.name, force=True)
    assert_nothing_left(paths)


@contextlib.contextmanager
def httpd(netns: str, www: str):
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write(PAGE)
    server = subprocess.Popen(["ip", "netns", "exec", netns, BUSYBOX, "httpd", "-f", "-p", "80", "-h", www],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield server
    finally:
        server.kill()
        server.wait(timeout=DEADLINE)


FETCH = ("import sys, urllib.request;"
         "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())")


def fetch(url: str, netns: str | None = None) -> str:
    """GET url from the host, or from inside `netns` (a fresh python joined to it)."""
    if netns is None:
        return urllib.request.urlopen(url, timeout=3).read().decode()
    done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", FETCH, url],
                          capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 0, f"GET {url} from {netns} failed: {done.stderr.strip()[-300:]}"
    return done.stdout


def wait_for_page(url: str) -> str:
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return fetch(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except ConnectionRefusedError:
        return True
    return False


def ip_json(*argv: str) -> list:
    return json.loads(subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, check=True).stdout)


@contextlib.contextmanager
def client_behind_host():
    """A netns that reaches the host over its own /30 veth, like a remote client would."""
    used = [ipaddress.ip_network(r["dst"], strict=False) for r in ip_json("-4", "route", "show", "table", "all")
            if r.get("dst", "default") != "default"]
    link_net = next(net for net in (ipaddress.ip_network(f"10.123.{n}.0/30") for n in range(0, 256, 4))
                    if not any(net.overlaps(u) for u in used))
    host_ip, client_ip = (str(a) for a in link_net.hosts())
    tag = secrets.token_hex(3)
    netns, host_end = f"fytest-{tag}", f"fyt{tag}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        for argv in (["ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", netns],
                     ["ip", "addr", "add", f"{host_ip}/30", "dev", host_end],
                     ["ip", "link", "set", host_end, "up"],
                     ["ip", "-n", netns, "addr", "add", f"{client_ip}/30", "dev", "eth0"],
                     ["ip", "-n", netns, "link", "set", "eth0", "up"],
                     ["ip", "-n", netns, "link", "set", "lo", "up"]):
            subprocess.run(argv, check=True)
        yield netns, host_ip
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], check=True)


def test_two_roots_share_the_default_network_and_publish_ports(roots, tmp_path):
    a, b = roots
    assert a.default().id == b.default().id and a.default().bridge == b.default().bridge == "ferry0"
    ctr_a, ctr_b = new_id(), new_id()
    ip_a, mac_a = a.reserve(ctr_a, "ferry")
    ip_b, _ = b.reserve(ctr_b, "ferry")
    assert ip_a != ip_b
    with pytest.raises(Conflict, match=f"IP {ip_a} is already leased to container {ctr_a[:12]}"):
        b.reserve(new_id(), "ferry", ip=ip_a)

    att_a, att_b = a.attach(ctr_a), b.attach(ctr_b)
    assert att_a.netns != att_b.netns and os.path.exists(att_a.netns_path)
    inside = {i["ifname"]: i for i in ip_json("-n", att_a.netns, "addr")}
    assert inside["eth0"]["address"] == mac_a and "UP" in inside["lo"]["flags"]
    assert f"{ip_a}/16" in {f"{x['local']}/{x['prefixlen']}" for x in inside["eth0"]["addr_info"]}
    assert ip_json("-n", att_a.netns, "route", "show", "default")[0]["gateway"] == att_a.gateway
    assert ip_json("link", "show", att_a.host_veth)[0]["master"] == "ferry0"

    with httpd(att_a.netns, str(tmp_path / "www")):
        assert wait_for_page(f"http://{ip_a}/") == PAGE                  # host -> container IP

        port = free_port()
        assert a.publish(ctr_a, [parse_port(f"{port}:80")]) == [parse_port(f"{port}:80")]
        assert fetch(f"http://127.0.0.1:{port}/") == PAGE                 # host localhost -> DNAT
        assert fetch(f"http://{att_b.gateway}:{port}/", netns=att_b.netns) == PAGE   # other netns on the bridge
        with client_behind_host() as (client, host_ip):
            assert fetch(f"http://{host_ip}:{port}/", netns=client) == PAGE         # a client routed via the host

        with pytest.raises(Conflict, match=f"port {port}/tcp is already in use by container {ctr_a[:12]}"):
            b.publish(ctr_b, [parse_port(f"{port}:80")])
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            with pytest.raises(Conflict, match="already in use by a process on this host"):
                b.publish(ctr_b, [parse_port(f"{taken}:80")])

        local_only, udp = free_port(), free_port()
        chosen = a.publish(ctr_a, [parse_port(f"{port}:80"), parse_port("80"),   # replaces, adds
                                   parse_port(f"127.0.0.1:{local_only}:80"), parse_port(f"{udp}:80/udp")])
        assert chosen[1].host_port not in (0, port)
        assert fetch(f"http://127.0.0.1:{chosen[1].host_port}/") == PAGE
        assert fetch(f"http://127.0.0.1:{local_only}/") == PAGE
        assert {(p.mapping.protocol, p.mapping.host_port) for p in nft.published(nft.list_rules())} == \
            {("tcp", port), ("tcp", chosen[1].host_port), ("tcp", local_only), ("udp", udp)}

        a.unpublish(ctr_a)
        a.unpublish(ctr_a)                                                   # idempotent
        assert all(refused("127.0.0.1", p) for p in (port, chosen[1].host_port, local_only))
        assert not [p for p in nft.published(nft.list_rules()) if p.container_id == ctr_a]

    for manager, ctr in ((a, ctr_a), (b, ctr_b)):
        manager.detach(ctr)
        manager.release(ctr)
    a.remove("ferry")
    assert link.link_exists("ferry0")                                   # root B still uses it
    b.remove("ferry")
    for attachment in (att_a, att_b):
        assert not link.netns_exists(attachment.netns) and not link.link_exists(attachment.host_veth)
    assert not [lease for lease in Registry().leases("ferry0") if lease.container_id in (ctr_a, ctr_b)]
    others = Registry().live_roots("ferry0")      # roots outside this test may share the bridge
    assert link.link_exists("ferry0") == bool(others)
    if not others:
        assert not os.path.exists(os.path.join(REGISTRY_DIR, "ferry0"))


def announced_on_bridge(announce, ip: str, mac: str) -> bool:
    """Whether `announce()` puts a gratuitous ARP for ip/mac on ferry0."""
    expected = garp.announcement(ip, mac)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(garp.ETH_P_ARP)) as sniffer:
        sniffer.bind(("ferry0", 0))
        sniffer.settimeout(POLL)
        announce()
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                frame = sniffer.recv(2048)
            except TimeoutError:
                continue
            if frame[:len(expected)] == expected:
                return True
    return False


def test_stop_start_keeps_ip_and_mac(roots, tmp_path):
    a, _ = roots
    ctr = new_id()
    ip, mac = a.reserve(ctr, "ferry", ip="10.90.200.7", mac="02:aa:00:00:00:07")
    first = a.attach(ctr)
    assert a.attach(ctr) == first                                          # idempotent
    a.detach(ctr)
    a.detach(ctr)
    assert not os.path.exists(first.netns_path) and not link.link_exists(first.host_veth)
    again = a.attach(ctr)
    assert (again.ip, again.mac) == (ip, mac) == ("10.90.200.7", "02:aa:00:00:00:07")
    assert ip_json("-n", again.netns, "link", "show", "eth0")[0]["address"] == mac
    assert announced_on_bridge(lambda: a.announce(ctr), ip, mac)
    with httpd(again.netns, str(tmp_path / "www")):
        assert wait_for_page(f"http://{ip}/") == PAGE


def test_prune_recovers_after_a_crash(roots):
    a, b = roots
    lost, kept = new_id(), new_id()
    for ctr in (lost, kept):
        a.reserve(ctr, "ferry")
        a.attach(ctr)
    a.publish(lost, [parse_port("80")])
    other = new_id()
    b.reserve(other, "ferry")
    b.attach(other)
    # A crash lost the database row; the netns, veth, nft rule and lease file remain.
    with a.db.write() as conn:
        conn.execute("DELETE FROM network_leases WHERE container_id = ?", (lost,))
    removed = a.prune({kept})
    assert {f"netns {link.netns_name(lost)}", f"veth {link.host_veth_name(lost)}"} <= set(removed)
    assert any(r.startswith("nft rule pub") for r in removed) and any(r.startswith("lease ") for r in removed)
    assert not link.netns_exists(link.netns_name(lost))
    assert link.netns_exists(link.netns_name(kept)) and link.netns_exists(link.netns_name(other))
    assert a.prune({kept}) == []
    assert b.prune({other}) == []


def _cli_wired() -> bool:
    parser = cli_main.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return "network" in commands.choices


@pytest.fixture
def network_cli(ferry_cli, capsys):
    """`ferry network ...` as a real subprocess once cli/main.py registers it; until
    then, in-process through a parser built from build_parser() plus register()."""
    if _cli_wired():
        def run(*argv):
            done = ferry_cli(*argv)
            return done.returncode, done.stdout, done.stderr
        return run

    def run_in_process(*argv):
        parser = cli_main.build_parser()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        cli_networks.register(commands)
        try:
            args = parser.parse_args(list(argv))
            code = args.handler(args)
        except FerryError as error:
            cli_main.render.error(error.message, hint=error.hint)
            code = cli_main.exit_code_for(error)
        out, err = capsys.readouterr()
        return code, out, err
    return run_in_process


@pytest.fixture
def cli_root(tmp_path):
    path = str(tmp_path / "root")
    yield path
    manager = Engine(path).networks
    for network in manager.list():
        manager.remove(network.name, force=True)
    assert_nothing_left([path])


def test_network_cli(network_cli, cli_root):
    root = ["--root", cli_root]
    code, out, err = network_cli(*root, "network", "create", "--subnet", "10.97.0.0/24", "blue")
    assert (code, out.strip()) == (0, "blue"), err
    code, out, err = network_cli(*root, "network", "ls")
    assert code == 0 and out.splitlines()[0].split() == ["NETWORK", "ID", "NAME", "DRIVER"]   # podman's
    assert {line.split()[1] for line in out.splitlines()[1:]} == {"blue", "ferry"}
    code, out, _ = network_cli(*root, "network", "ls", "--format", "json")
    assert code == 0 and {n["name"] for n in json.loads(out)} == {"blue", "ferry"}
    code, out, _ = network_cli(*root, "network", "inspect", "blue")
    (blue,) = json.loads(out)
    assert blue["driver"] == "bridge" and blue["subnets"] == [{"subnet": "10.97.0.0/24", "gateway": "10.97.0.1"}]
    assert blue["network_interface"].startswith("ferry") and len(blue["id"]) == 64 and blue["created"]

    for argv, needle in [(("create", "--subnet", "10.97.0.0/33", "bad"), "invalid subnet"),
                         (("create", "--subnet", "10.97.0.0/24", "twin"), "overlaps network blue"),
                         (("create", "blue"), "network blue already exists"),
                         (("create", "--interface-name", "lo", "loopy"), "interface lo exists and was not made by ferry"),
                         (("inspect", "nope"), "network 'nope' not found"),
                         (("rm", "nope"), "network 'nope' not found")]:
        code, out, err = network_cli(*root, "network", *argv)
        assert code != 0 and out == "" and len(err.strip().splitlines()) == 1 and needle in err, (argv, err)

    code, out, err = network_cli(*root, "network", "rm", "blue", "ferry")
    assert (code, out.split()) == (0, ["blue", "ferry"]), err
    code, out, _ = network_cli(*root, "network", "ls", "--format", "json")
    assert [n["name"] for n in json.loads(out)] == ["ferry"]             # the default comes back
    assert network_cli(*root, "network", "rm", "ferry")[0] == 0
