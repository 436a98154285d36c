"""Simulated hosts (scripts/simhosts): network namespaces on one L2 segment, each
with its own state root, lease registry and bridge, and the anycast gateway.
Busybox containers on two hosts reach each other, the client and their gateway;
a container checkpointed on host 1 comes back on host 2 with its IP, MAC and an
established TCP connection of the client; `down` leaves nothing. Traffic stays
inside the namespaces these tests make."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from bench.busybox import make_oci_archive
from tests.conftest import require

from ferry.network import link, registry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIMHOSTS = os.path.join(REPO, "scripts", "simhosts")
# One prefix per pytest process, not the default: two test runs (or a developer's
# own harness) may have simulated hosts up at the same time.
PREFIX = f"fs{os.getpid() % 1_000_000}"
TIMEOUT = 120
DEADLINE = 20.0
PAGE = "hello from busybox\n"
COUNTER_SCRIPT = 'n=0\nwhile read line; do n=$((n+1)); echo "$n:$line"; done\n'
# A TCP server whose state lives in its process: each line comes back numbered.
ECHO_SERVER = ("printf '#!/bin/sh\\n%s' \"$COUNTER\" > /tmp/counter && chmod +x /tmp/counter "
               "&& exec nc -ll -p 7000 -e /tmp/counter")
# The client's side of one connection, held open while the server moves:
# each line of stdin is sent, and the reply line printed.
DRIVER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
print("port", s.getsockname()[1], flush=True)
for line in sys.stdin:
    s.sendall(line.encode())
    reply = b""
    while not reply.endswith(b"\\n"):
        chunk = s.recv(100)
        if not chunk:
            print("EOF", flush=True)
            sys.exit(1)
        reply += chunk
    print(reply.decode().strip(), flush=True)
"""


@pytest.fixture(scope="module", autouse=True)
def host_ready():
    for key in ("runc", "criu", "overlayfs", "netns", "nftables"):
        require(key)
    for tool in ("/bin/busybox", "/usr/bin/nsenter"):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"{tool} is missing")
    # The first `ip netns add` on a machine makes /run/netns a shared mount that
    # stays; make it before no_leaks takes its snapshot so it is not counted.
    name = f"fytest-warm-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "del", name], check=True)


@pytest.fixture(scope="module")
def busybox_archive(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("simhosts-image")
    return make_oci_archive(str(workdir / "busybox-oci.tar"), str(workdir))


def simhosts(*args: str, base: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([SIMHOSTS, *args, "--base", base, "--prefix", PREFIX], capture_output=True,
                          text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"simhosts {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def parse(stdout: str) -> dict[str, dict[str, str]]:
    """simhosts' lines: `NAME key=value ...` -> {NAME: {key: value}}."""
    lines = {}
    for line in stdout.splitlines():
        name, *fields = line.split()
        lines[name] = dict(field.split("=", 1) for field in fields)
    return lines


@dataclass
class Host:
    name: str
    netns: str
    root: str
    url: str
    token: str
    ip: str
    pool: str

    def ferry(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The ferry CLI on this host: in its netns only (nsenter --net, not ip netns exec)."""
        done = subprocess.run(in_netns(self.netns, [sys.executable, "-m", "ferry", "--root", self.root, *args]),
                              capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError(f"ferry {' '.join(args)} on {self.name} exited {done.returncode}: "
                                 f"{done.stderr.strip()}")
        return done

    def inspect(self, name: str) -> dict:
        return json.loads(self.ferry("inspect", name).stdout)[0]

    def leases(self) -> dict[str, registry.Lease]:
        inode = os.stat(f"/run/netns/{self.netns}").st_ino
        return {lease.ip: lease for lease in registry.Registry(registry.registry_dir_for(inode)).leases("ferry0")}


def in_netns(netns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{netns}", *argv]


@dataclass
class Sim:
    base: str
    hosts: list[Host]
    client: dict[str, str]
    inodes: list[int]
    containers: set[str]


@pytest.fixture
def sim(tmp_path, busybox_archive):
    """Two simulated hosts with busybox loaded, and a client; `down` checked to leave nothing."""
    base = str(tmp_path / "sim")
    lines = parse(simhosts("up", "2", base=base).stdout)
    hosts = [Host(name, **{k: lines[name][k] for k in ("netns", "root", "url", "token", "ip", "pool")})
             for name in ("h1", "h2")]
    inodes = [os.stat(f"/run/netns/{h.netns}").st_ino for h in hosts]
    made = Sim(base, hosts, lines["client"], inodes, set())
    try:
        for host in hosts:
            host.ferry("load", "-i", busybox_archive)
        yield made
    finally:
        done = simhosts("down", base=base, check=False)
        assert done.returncode == 0 and "left behind" not in done.stderr, done.stderr
        assert_nothing_left(made)


def assert_nothing_left(sim: Sim) -> None:
    leaked = [n for n in os.listdir("/run/netns") if n.startswith(f"{PREFIX}-")]
    assert not leaked, f"leaked netns {leaked}"
    assert not [n for n in os.listdir("/run/netns") for c in sim.containers if n.startswith(f"ferry-{c[:12]}")], \
        "leaked container netns"
    assert not os.path.exists(sim.base), f"state dir left, holding {os.listdir(sim.base)}"
    for inode in sim.inodes:
        assert not os.path.exists(os.path.dirname(registry.registry_dir_for(inode))), "host registry left"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        assert sim.base.encode() not in cmdline, f"process {pid} left: {cmdline!r}"


def run_busybox(sim: Sim, host: Host, name: str, *command: str, env: tuple[str, ...] = ()) -> dict:
    args = [arg for pair in (("-e", e) for e in env) for arg in pair]
    host.ferry("run", "-d", "--name", name, *args, "busybox", *command)
    info = host.inspect(name)
    sim.containers.add(info["Id"])
    return info


def address(info: dict) -> tuple[str, str]:
    return info["NetworkSettings"]["IPAddress"], info["NetworkSettings"]["MacAddress"]


FETCH = ("import sys, urllib.request;"
         "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())")


def fetch_from(netns: str, url: str) -> str:
    """GET url from inside netns (a python of its own there), retrying until the server answers."""
    deadline = time.monotonic() + DEADLINE
    while True:
        done = subprocess.run(in_netns(netns, [sys.executable, "-c", FETCH, url]),
                              capture_output=True, text=True, timeout=TIMEOUT)
        if done.returncode == 0 or time.monotonic() > deadline:
            assert done.returncode == 0, f"GET {url} from {netns}: {done.stderr.strip()}"
            return done.stdout
        time.sleep(0.1)


def exec_fetch(host: Host, container: str, url: str) -> str:
    """GET url from inside a container (its own netns), retrying until it answers."""
    deadline = time.monotonic() + DEADLINE
    while True:
        # (no -T: Debian 12's busybox 1.35 wget crashes with it)
        done = host.ferry("exec", container, "wget", "-q", "-O", "-", url, check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            assert done.returncode == 0, f"GET {url} from {container} on {host.name}: {done.stderr.strip()}"
            return done.stdout
        time.sleep(0.1)


def test_up_prints_one_parseable_line_per_host_and_status_repeats_them(sim):
    h1, h2 = sim.hosts
    assert (h1.netns, h1.ip, h1.url, h1.pool) == (f"{PREFIX}-h1", "10.77.0.11", "http://10.77.0.11:7070",
                                                  "10.90.1.0/24")
    assert (h2.root, h2.token) == (os.path.join(sim.base, "h2"), os.path.join(sim.base, "h2", "token"))
    assert sim.client == {"netns": f"{PREFIX}-client", "ip": "10.90.255.254", "lan_ip": "10.77.0.200"}
    assert oct(os.stat(h1.token).st_mode & 0o777) == "0o600"
    again = parse(simhosts("status", base=sim.base).stdout)
    assert again["h1"]["root"] == h1.root and again["client"] == sim.client
    refused = simhosts("up", "1", base=sim.base, check=False)
    assert refused.returncode == 1 and "are up already" in refused.stderr


def test_containers_on_two_hosts_share_one_lan_and_each_host_s_gateway(sim, tmp_path):
    h1, h2 = sim.hosts
    ip1, mac1 = address(run_busybox(sim, h1, "web1", "httpd", "-f", "-p", "80", "-h", "/var/www"))
    ip2, _ = address(run_busybox(sim, h2, "web2", "httpd", "-f", "-p", "80", "-h", "/var/www"))
    # Each host hands out addresses from its own pool, and keeps its own leases.
    assert ip1.startswith("10.90.1.") and ip2.startswith("10.90.2.")
    assert set(h1.leases()) == {ip1} and set(h2.leases()) == {ip2}
    assert h1.leases()[ip1].mac == mac1

    client = sim.client["netns"]
    assert fetch_from(client, f"http://{ip1}/") == PAGE                     # client -> container on h1
    assert fetch_from(client, f"http://{ip2}/") == PAGE                     # client -> container on h2
    assert exec_fetch(h2, "web2", f"http://{ip1}/") == PAGE                 # h2's container -> h1's
    assert exec_fetch(h1, "web1", f"http://{ip2}/") == PAGE                 # and back, over the LAN

    # The anycast gateway: the same address and MAC on both hosts' bridges, and
    # each container reaches the gateway of its own host.
    gateway_mac = link.gateway_mac("10.90.0.0/16", "10.90.0.1")
    for host in (h1, h2):
        bridge = json.loads(subprocess.run(["ip", "-n", host.netns, "-j", "addr", "show", "ferry0"],
                                           capture_output=True, text=True, check=True).stdout)[0]
        assert bridge["address"] == gateway_mac
        assert "10.90.0.1" in {a["local"] for a in bridge["addr_info"]}
    www = tmp_path / "gateway-www"
    www.mkdir()
    for host, container in ((h1, "web1"), (h2, "web2")):
        (www / "index.html").write_text(f"gateway of {host.name}\n")
        server = subprocess.Popen(in_netns(host.netns, ["busybox", "httpd", "-f", "-p", "10.90.0.1:8080",
                                                        "-h", str(www)]),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert exec_fetch(host, container, "http://10.90.0.1:8080/") == f"gateway of {host.name}\n"
        finally:
            server.kill()
            server.wait(timeout=DEADLINE)
        neighbours = host.ferry("exec", container, "ip", "neigh", "show", "10.90.0.1").stdout
        assert gateway_mac in neighbours, neighbours

    # The agents (when ferry serve exists) listen on the LAN, and the client reaches them.
    for host in (h1, h2):
        if parse(simhosts("status", base=sim.base).stdout)[host.name]["agent"] == "running":
            probe = "import socket, sys; socket.create_connection((sys.argv[1], 7070), timeout=5).close()"
            subprocess.run(in_netns(client, [sys.executable, "-c", probe, host.ip]), check=True, timeout=TIMEOUT)


def test_a_container_checkpointed_on_h1_runs_on_h2_with_its_ip_and_tcp_connection(sim, tmp_path):
    h1, h2 = sim.hosts
    info = run_busybox(sim, h1, "echo", "sh", "-c", ECHO_SERVER, env=(f"COUNTER={COUNTER_SCRIPT}",))
    ip, mac = address(info)
    client = subprocess.Popen(in_netns(sim.client["netns"], [sys.executable, "-u", "-c", DRIVER, ip, "7000"]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def say(line: str) -> str:
            client.stdin.write(line + "\n")
            client.stdin.flush()
            return client.stdout.readline().strip()

        deadline = time.monotonic() + DEADLINE
        first = client.stdout.readline().strip()
        while not first.startswith("port") and time.monotonic() < deadline:   # nc may still be starting
            client.wait(timeout=TIMEOUT)
            client = subprocess.Popen(client.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            first = client.stdout.readline().strip()
        assert first.startswith("port"), client.stderr.read()
        assert say("a") == "1:a"

        archive = str(tmp_path / "echo.tar.zst")
        h1.ferry("container", "checkpoint", "echo", "--tcp-established", "--file", archive)
        assert h1.inspect("echo")["State"]["Status"] == "exited"
        h2.ferry("container", "restore", "--file", archive, "--tcp-established")
        moved = h2.inspect("echo")
        sim.containers.add(moved["Id"])
        assert address(moved) == (ip, mac)                                 # the same IP and MAC, on h2
        assert ip in h2.leases() and ip in h1.leases()                     # each host its own registry

        assert say("b") == "2:b"             # the same connection, to the same process, now on h2
        h1.ferry("rm", "echo")               # the source's copy goes; h2's address is not touched
        assert ip not in h1.leases() and ip in h2.leases()
        assert say("c") == "3:c"
    finally:
        client.stdin.close()
        client.kill()
        client.wait(timeout=DEADLINE)


def test_down_removes_a_partial_up_and_may_run_again(tmp_path):
    base = str(tmp_path / "partial")
    up = subprocess.Popen([SIMHOSTS, "up", "3", "--base", base, "--prefix", PREFIX],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + DEADLINE
    while not os.path.exists(f"/run/netns/{PREFIX}-h2") and up.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(up.pid, signal.SIGKILL)                     # a harness killed halfway
    up.wait(timeout=DEADLINE)
    inodes = [os.stat(f"/run/netns/{n}").st_ino for n in os.listdir("/run/netns")
              if n.startswith(f"{PREFIX}-h")]
    assert inodes, "up made no host before it was killed"
    for _ in range(2):
        done = simhosts("down", base=base, check=False)
        assert done.returncode == 0 and "left behind" not in done.stderr, done.stderr
        assert_nothing_left(Sim(base, [], {}, inodes, set()))
    assert simhosts("status", base=base, check=False).returncode == 1


# Setup (a) of a migration, two state roots on one host, inside simulated host 1
# (so that it shares h1's bridge, not the machine's): the destination root adopts
# the source's lease for the same container ID, the two copies' netns and veths
# coexist on the bridge, the source's wire is cut before the destination's goes
# up, and the source's rm leaves the destination's netns, veth and lease alone.
TWO_ROOTS = """
import os, subprocess, sys, time
from ferry.engine.core import Engine
from ferry.network import link
source_root, dest_root, client_netns, www = sys.argv[1:5]
source, dest = Engine(source_root).networks, Engine(dest_root).networks
cid = "5" * 64
ip, mac = source.reserve(cid, "ferry")
before = source.attach(cid)
try:
    dest.reserve(cid, "ferry", ip=ip, mac=mac)
    raise AssertionError("a lease another root holds was taken without adopt")
except Exception as refused:
    assert "already leased" in str(refused), refused
assert dest.reserve(cid, "ferry", ip=ip, mac=mac, adopt=True) == (ip, mac)
after = dest.attach(cid, isolated=True)
assert (after.ip, after.mac) == (before.ip, before.mac)
assert after.netns != before.netns and after.host_veth != before.host_veth
assert link.netns_exists(before.netns) and link.netns_exists(after.netns)
source.disconnect(cid)
dest.connect(cid)
server = subprocess.Popen(["ip", "netns", "exec", after.netns, "busybox", "httpd", "-f", "-p", "80", "-h", www])
fetch = ("import sys, urllib.request;"
         "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())")
try:
    deadline = time.monotonic() + 20
    while True:
        got = subprocess.run(["nsenter", f"--net=/run/netns/{client_netns}", sys.executable, "-c", fetch,
                              f"http://{ip}/"], capture_output=True, text=True)
        if got.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got.stdout == "the destination's copy\\n", got.stderr
finally:
    server.kill()
    server.wait()
source.release(cid)                                  # the source's rm after the move
assert not link.netns_exists(before.netns) and not link.link_exists(before.host_veth)
assert link.netns_exists(after.netns) and link.link_exists(after.host_veth)
lease = dest.registry.lease("ferry0", ip)
assert (lease.root, lease.previous_root) == (dest.root, ""), lease
dest.release(cid)
assert not link.netns_exists(after.netns) and dest.registry.lease("ferry0", ip) is None
print("ok")
"""


def test_two_roots_on_one_host_hand_a_container_s_address_over(sim, tmp_path):
    h1 = sim.hosts[0]
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("the destination's copy\n")
    dest_root = os.path.join(sim.base, "h1-second-root")
    sim.containers.add("5" * 64)
    try:
        done = subprocess.run(in_netns(h1.netns, [sys.executable, "-c", TWO_ROOTS, h1.root, dest_root,
                                                  sim.client["netns"], str(www)]),
                              capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    finally:
        for root in (h1.root, dest_root):                   # whatever a failure left
            cleanup = "import sys; from ferry.engine.core import Engine; Engine(sys.argv[1]).networks.prune(set())"
            subprocess.run(in_netns(h1.netns, [sys.executable, "-c", cleanup, root]), capture_output=True,
                           timeout=TIMEOUT, cwd=REPO)
        subprocess.run(["rm", "-rf", "--one-file-system", dest_root], check=True)
