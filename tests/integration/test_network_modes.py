"""`ferry run --network none`, `--network host` and several networks against
the real kernel, runc and CRIU: what the container sees from inside, before
and after a checkpoint and restore in place and an export restored under a
new name; and the exit codes of bad combinations beside podman 4.3.1's.
Traffic goes only to loopback and to the netns ferry made."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import urllib.request

import pytest

from bench.busybox import make_oci_archive
from tests.support.cli import Ferry, busybox_root, free_port, leftovers
from tests.support.podman import Sides, private_podman

DEADLINE = 30.0
PAGE = "hello from several networks\n"


@pytest.fixture(scope="module")
def ferry(tmp_path_factory):
    with busybox_root(tmp_path_factory.mktemp("network-modes")) as ferry:
        yield ferry


def run(ferry, name: str, *args: str) -> dict:
    ferry("run", "-d", "--name", name, *args)
    container = ferry.inspect(name)
    ferry.seen.add(container["Id"])
    return container


def restored(ferry, name: str) -> dict:
    container = ferry.inspect(name)
    ferry.seen.add(container["Id"])
    return container


def inside(ferry, name: str, *command: str) -> str:
    return ferry("exec", name, *command).stdout


def interfaces(ferry, name: str) -> set[str]:
    lines = inside(ferry, name, "cat", "/proc/net/dev").splitlines()[2:]
    return {line.split(":")[0].strip() for line in lines}


def lo_is_up(ferry, name: str) -> bool:
    return "inet 127.0.0.1/8" in inside(ferry, name, "ip", "addr", "show", "lo")


def get(url: str, deadline: float = DEADLINE) -> str:
    """The page, retried until the deadline (a restored server's wire comes up with it)."""
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


# ---- --network none --------------------------------------------------------------------------

def test_none_has_only_lo_up_through_checkpoint_and_restore(ferry):
    container = run(ferry, "nw-none", "--network", "none", "busybox", "sleep", "1000")
    assert container["HostConfig"]["NetworkMode"] == "none"
    assert "Networks" not in container["NetworkSettings"] and container["NetworkSettings"]["IPAddress"] == ""

    def check(name: str) -> None:
        assert interfaces(ferry, name) == {"lo"}
        assert lo_is_up(ferry, name)   # podman's restored copy has lo down; ferry's netns keeps it up
        hosts = inside(ferry, name, "cat", "/etc/hosts")
        assert f"127.0.0.1\t{ferry.inspect(name)['Config']['Hostname']}" in hosts
        assert "nameserver" not in inside(ferry, name, "cat", "/etc/resolv.conf")
    check("nw-none")
    ferry("container", "checkpoint", "nw-none")
    ferry("container", "restore", "nw-none")
    check("nw-none")
    archive = str(ferry.workdir / "none.tar")
    ferry("container", "checkpoint", "--export", archive, "nw-none")
    ferry("container", "restore", "--name", "nw-none2", "--import", archive)
    restored(ferry, "nw-none2")
    check("nw-none2")
    for name in ("nw-none", "nw-none2"):
        ferry("rm", "-f", name)


def test_none_drops_published_ports_as_podman_does(ferry):
    done = ferry("run", "-d", "--name", "nw-nonep", "--network", "none", "-p", f"{free_port()}:80",
                 "busybox", "sleep", "1000")
    ferry.seen.add(ferry.inspect("nw-nonep")["Id"])
    assert "Port mappings have been discarded" in done.stderr
    assert ferry.inspect("nw-nonep")["HostConfig"]["PortBindings"] == {}
    ferry("rm", "-f", "nw-nonep")


# ---- --network host --------------------------------------------------------------------------

def test_host_shares_the_host_s_network_through_checkpoint_and_restore(ferry):
    port = free_port()
    container = run(ferry, "nw-host", "--network", "host", "busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}",
                    "-h", "/etc")
    assert container["HostConfig"]["NetworkMode"] == "host"
    assert container["Config"]["Hostname"] == os.uname().nodename   # podman's: the host's name

    def check(name: str) -> None:
        pid = ferry.inspect(name)["State"]["Pid"]
        assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
        assert "host.containers.internal" in inside(ferry, name, "cat", "/etc/hosts")
        with open("/etc/resolv.conf") as f:
            assert inside(ferry, name, "cat", "/etc/resolv.conf") == f.read()
        assert get(f"http://127.0.0.1:{port}/hostname")   # its listening socket is the host's
    check("nw-host")
    ferry("container", "checkpoint", "nw-host")
    ferry("container", "restore", "nw-host")
    check("nw-host")
    archive = str(ferry.workdir / "host.tar")
    ferry("container", "checkpoint", "--export", archive, "nw-host")
    # The host's network is a grant: an unverified archive gets it with --allow-privileges.
    ferry("container", "restore", "--name", "nw-host2", "--import", archive, "--allow-privileges")
    restored(ferry, "nw-host2")
    check("nw-host2")
    for name in ("nw-host", "nw-host2"):
        ferry("rm", "-f", name)


# ---- several networks ---------------------------------------------------------------------------

@pytest.fixture
def two_networks(ferry):
    names = [f"nwm-{secrets.token_hex(3)}-{x}" for x in "ab"]
    for name in names:
        ferry("network", "create", name)
    yield names
    for name in names:
        ferry("network", "rm", "-f", name, check=False)


def addresses(container: dict) -> dict[str, str]:
    return {name: n["IPAddress"] for name, n in container["NetworkSettings"]["Networks"].items()}


def test_several_networks_one_interface_each_reachable_through_checkpoint_and_restore(ferry, two_networks):
    port = free_port()
    first, second = two_networks
    container = run(ferry, "nw-multi", "--network", first, "--network", second, "-p", f"127.0.0.1:{port}:80",
                    "busybox", "sh", "-c", f"mkdir /www && echo '{PAGE.strip()}' > /www/index.html && "
                                           "exec httpd -f -p 80 -h /www")
    assert container["HostConfig"]["NetworkMode"] == "bridge"
    assert list(addresses(container)) == [first, second] and all(addresses(container).values())
    assert container["NetworkSettings"]["IPAddress"] == ""   # podman's, for several networks

    def check(name: str) -> None:
        shown = ferry.inspect(name)
        assert interfaces(ferry, name) == {"lo", "eth0", "eth1"}
        ips = list(addresses(shown).values())
        text = inside(ferry, name, "ip", "addr")
        assert all(f"inet {ip}/" in text for ip in ips)
        hosts = inside(ferry, name, "cat", "/etc/hosts")
        assert all(f"{ip}\t{shown['Config']['Hostname']}" in hosts for ip in ips)
        for ip in ips:
            assert get(f"http://{ip}/") == PAGE
        assert get(f"http://127.0.0.1:{port}/") == PAGE   # published on the first network's address
    check("nw-multi")
    before = addresses(ferry.inspect("nw-multi"))
    ferry("container", "checkpoint", "nw-multi")
    ferry("container", "restore", "nw-multi")
    assert addresses(ferry.inspect("nw-multi")) == before
    check("nw-multi")
    archive = str(ferry.workdir / "multi.tar")
    ferry("container", "checkpoint", "--export", archive, "nw-multi")
    ferry("rm", "-f", "nw-multi")   # its addresses and port are free again: the copy takes them
    ferry("container", "restore", "--name", "nw-multi2", "--import", archive)
    copy = restored(ferry, "nw-multi2")
    assert addresses(copy) == before
    check("nw-multi2")
    ferry("rm", "-f", "nw-multi2")


def test_a_restore_beside_the_original_takes_new_addresses_on_each_network(ferry, two_networks):
    first, second = two_networks
    run(ferry, "nw-orig", "--network", f"{first},{second}", "busybox", "sleep", "1000")
    archive = str(ferry.workdir / "orig.tar")
    ferry("container", "checkpoint", "--export", archive, "--leave-running", "nw-orig")
    ferry("container", "restore", "--name", "nw-copy", "--import", archive)
    original, copy = ferry.inspect("nw-orig"), restored(ferry, "nw-copy")
    assert list(addresses(copy)) == [first, second]
    assert not set(addresses(copy).values()) & set(addresses(original).values())
    assert interfaces(ferry, "nw-copy") == {"lo", "eth0", "eth1"}
    for name in ("nw-orig", "nw-copy"):
        ferry("rm", "-f", name)


def test_a_checkpoint_of_several_networks_needs_them_all_on_restore(ferry, two_networks, tmp_path):
    first, second = two_networks
    run(ferry, "nw-gone", "--network", f"{first},{second}", "busybox", "sleep", "1000")
    archive = str(tmp_path / "gone.tar")
    ferry("container", "checkpoint", "--export", archive, "nw-gone")
    ferry("rm", "-f", "nw-gone")
    ferry("network", "rm", second)
    done = ferry("container", "restore", "--name", "nw-gone2", "--import", archive, check=False)
    assert done.returncode == 125 and f"networks this host lacks: {second}" in done.stderr
    assert "nw-gone2" not in ferry.names()


# ---- exit codes beside podman ------------------------------------------------------------------

@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    with private_podman("ferry-nm-") as (podman, base):
        ferry = Ferry(str(base / "ferry"))
        seen: set[str] = set()
        try:
            image = make_oci_archive(str(base / "busybox-oci.tar"), str(base))
            pair = Sides(podman, ferry)
            for args in (("load", "-i", image), ("network", "create", "nwp-a"), ("network", "create", "nwp-b")):
                theirs, ours = pair.both(*args)
                assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
            pair.seen = seen
            yield pair
        finally:
            seen |= {c["Id"] for c in ferry.json("ps", "-a", "--format", "json")}
            ferry.remove_everything()
            for name in ("nwp-a", "nwp-b"):
                ferry("network", "rm", "-f", name, check=False)
                subprocess.run(podman.argv("network", "rm", "-f", name), capture_output=True, timeout=120)
    assert leftovers(ferry.root, seen) == []


@pytest.mark.parametrize("flags", [
    ("--network", "nwp-a", "--network", "nwp-b", "--ip", "10.99.0.50"),
    ("--network", "nwp-a,nwp-b", "--mac-address", "02:00:00:00:00:01"),
    ("--network", "nwp-nope"),
    ("--network", "nwp-a", "--network", "nwp-nope"),
    ("--network", "none", "--network", "nwp-a"),
    ("--network", "host", "--network", "nwp-a"),
    ("--network", "host,none"),
    ("--network", "none", "--ip", "10.99.0.5"),
    ("--network", "host", "--mac-address", "02:00:00:00:00:01"),
    ("--network", "none", "-p", "18999:80"),
    ("--network", "host", "-p", "18999:80"),
    ("--network", "nwp-a", "--network", "nwp-a"),
    ("--network", "nwp-a,nwp-b"),
], ids=lambda flags: " ".join(flags))
def test_the_same_network_flags_exit_with_podman_s_code(sides, flags):
    name = f"nwp-{secrets.token_hex(3)}"
    try:
        theirs, ours = sides.both("run", "--rm", "--name", name, *flags, "busybox", "true", run_flags=True)
        assert ours.returncode == theirs.returncode, (theirs.stderr, ours.stderr)
        if ours.returncode:
            assert len(ours.stderr.strip().splitlines()) == 1, ours.stderr
    finally:
        sides.ferry("rm", "-f", name, check=False)
        subprocess.run(sides.podman.argv("rm", "-f", "-t", "0", name), capture_output=True, timeout=120)


def test_a_connection_on_the_second_network_survives_checkpoint_and_restore(ferry, two_networks):
    """--tcp-established: the restore's hook brings up every wire, not only eth0's."""
    first, second = two_networks
    container = run(ferry, "nw-tcp", "--network", f"{first},{second}", "busybox", "nc", "-ll", "-p", "7000",
                    "-e", "cat")
    ip = addresses(container)[second]
    client = connected((ip, 7000))
    with client:
        client.sendall(b"before\n")
        assert client.recv(64) == b"before\n"
        ferry("container", "checkpoint", "--tcp-established", "nw-tcp")
        ferry("container", "restore", "--tcp-established", "nw-tcp")
        client.sendall(b"after\n")
        assert client.recv(64) == b"after\n"
    ferry("rm", "-f", "nw-tcp")


def test_host_networking_keeps_a_loopback_connection_with_tcp_established_only(ferry):
    """As podman 4.3.1 here: CRIU refuses a connected socket without
    --tcp-established, and with it keeps the connection (CRIU locks it alone,
    the host's netns being external to it)."""
    port = free_port()
    run(ferry, "nw-htcp", "--network", "host", "busybox", "nc", "-ll", "-p", str(port), "-e", "cat")
    client = connected(("127.0.0.1", port))
    with client:
        client.sendall(b"before\n")
        assert client.recv(64) == b"before\n"
        refused = ferry("container", "checkpoint", "nw-htcp", check=False)
        assert refused.returncode == 125 and "--tcp-established" in refused.stderr
        assert ferry.inspect("nw-htcp")["State"]["Status"] == "running"
        ferry("container", "checkpoint", "--tcp-established", "nw-htcp")
        ferry("container", "restore", "--tcp-established", "nw-htcp")
        client.sendall(b"after\n")
        assert client.recv(64) == b"after\n"
    ferry("rm", "-f", "nw-htcp")


# ---- a move between two roots sharing the networks' bridges ------------------------------------

def test_a_container_on_two_networks_migrates_with_both_addresses_and_its_connection(tmp_path_factory):
    """Two roots on this machine share the default bridge and one more (the
    same --interface-name and subnet): the container keeps each address, and
    a connection to its second one, as a one-network container does."""
    import signal
    import socket
    from tests.conftest import require
    from tests.integration.test_migrate import Agent
    require("tcp_repair")
    workdir = tmp_path_factory.mktemp("network-modes-migrate")
    archive = make_oci_archive(str(workdir / "busybox-oci.tar"), str(workdir))
    a, b = Ferry(str(workdir / "a")), Ferry(str(workdir / "b"))
    for root in (a, b):
        root("load", "-i", archive)
    network, bridge = f"nwm-{secrets.token_hex(3)}", f"fym{secrets.token_hex(4)}"
    a("network", "create", "--interface-name", bridge, network)
    subnet = a.json("network", "inspect", network)[0]["subnets"][0]["subnet"]
    b("network", "create", "--interface-name", bridge, "--subnet", subnet, network)
    agent = Agent(b, workdir).start()
    seen: set[str] = set()
    try:
        a("run", "-d", "--name", "nw-mig", "--network", f"ferry,{network}", "busybox", "nc", "-ll", "-p", "7000",
          "-e", "cat")
        before = a.inspect("nw-mig")
        seen.add(before["Id"])
        end = time.monotonic() + DEADLINE
        while True:
            try:
                client = socket.create_connection((addresses(before)[network], 7000), timeout=10)
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
        with client:
            client.sendall(b"before\n")
            assert client.recv(64) == b"before\n"
            done = a("migrate", "nw-mig", "--to", agent.url, "--token-file", agent.token_file, "--tcp-established",
                     check=False)
            assert done.returncode == 0, done.stderr
            client.sendall(b"after\n")
            assert client.recv(64) == b"after\n"
        moved = b.inspect("nw-mig")
        assert moved["Id"] == before["Id"] and addresses(moved) == addresses(before)
        assert "nw-mig" not in a.names()
    finally:
        assert agent.stop() == -signal.SIGTERM, agent.said()
        for root in (a, b):
            root.remove_everything()
            root("network", "rm", "-f", network, check=False)
        for root in (a, b):
            assert leftovers(root.root, seen) == []


def connected(address: tuple[str, int]):
    """A TCP connection to a server that is starting: retried until DEADLINE."""
    import socket
    end = time.monotonic() + DEADLINE
    while True:
        try:
            return socket.create_connection(address, timeout=10)
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)
