"""Issue 21's network verbs against the real podman on this machine: `network
create --internal --subnet --gateway --label`, `inspect`, `ls --filter`,
`connect`/`disconnect` of running and stopped containers (checked inside with
`ip` and `ping` between the project's own containers), `prune`, and their
error cases; and a connected network kept through checkpoint and restore
(ferry only). Both engines' bridges share the host's network namespace, so each
gets subnets of its own: the command lines differ in those alone."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.podman import TIMEOUT, Sides, busybox_sides

PODMAN_NETS = {"inner": ("10.181.0.0/24", "10.181.0.1"), "plain": ("10.183.0.0/24", "10.183.0.1")}
FERRY_NETS = {"inner": ("10.182.0.0/24", "10.182.0.1"), "plain": ("10.184.0.0/24", "10.184.0.1")}
PING = ("ping", "-c1", "-W2")
RAW = ("--cap-add", "NET_RAW")   # ferry's containers ping with it (podman sets ping_group_range)


def each(sides: Sides, podman_args, ferry_args, *, run_flags: bool = False):
    """Two command lines that differ only in the side's own subnets."""
    podman_args = list(podman_args)
    if run_flags:
        podman_args[1:1] = sides.podman.run_flags()
    theirs = subprocess.run(sides.podman.argv(*podman_args), capture_output=True, text=True, timeout=TIMEOUT)
    return theirs, sides.ferry(*ferry_args, check=False)


def remove(sides: Sides, *names: str) -> None:
    """Containers gone on both sides (podman's stop would wait 10 s for `sleep`)."""
    each(sides, ("rm", "-f", "-t", "0", *names), ("rm", "-f", *names))


def create_args(name: str, nets: dict, *extra: str) -> tuple[str, ...]:
    subnet, gateway = nets[name]
    return ("network", "create", *extra, "--subnet", subnet, "--gateway", gateway, name)


@pytest.fixture(scope="module")
def sides():
    with busybox_sides("ferry-net-") as pair:
        made = []
        try:
            for name, extra in (("inner", ("--internal", "--label", "a=b", "--label", "c")),
                                ("plain", ("--label", "a=z"))):
                theirs, ours = each(pair, create_args(name, PODMAN_NETS, *extra), create_args(name, FERRY_NETS, *extra))
                assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
                assert ours.stdout == theirs.stdout == f"{name}\n"
                made.append(name)
            yield pair
        finally:
            remove(pair, "web", "db", "later", "user")
            for name in made:
                pair.both("network", "rm", "-f", name)


def ip_of(side: str, sides: Sides, container: str, network: str) -> str:
    template = f"{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"
    if side == "podman":
        done = subprocess.run(sides.podman.argv("inspect", container, "--format", template), capture_output=True,
                              text=True, timeout=TIMEOUT)
    else:
        done = sides.ferry("inspect", container, "--format", template, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_inspect_shows_labels_internal_and_subnets_as_podman_s(sides):
    template = "{{.Name}} {{.Driver}} {{.Labels}} {{.Internal}} {{.DNSEnabled}} {{.IPv6Enabled}}"
    theirs, ours = sides.both("network", "inspect", "inner", "plain", "--format", template)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == \
        (0, "inner bridge map[a:b c:] true false false\nplain bridge map[a:z] false false false\n")
    theirs, ours = sides.both("network", "inspect", "inner")
    [podman_s], [ferry_s] = json.loads(theirs.stdout), json.loads(ours.stdout)
    assert set(ferry_s) == set(podman_s)
    for key in podman_s:
        assert type(ferry_s[key]) is type(podman_s[key]), key
    assert (ferry_s["internal"], ferry_s["labels"]) == (podman_s["internal"], podman_s["labels"])
    assert ferry_s["subnets"] == [{"subnet": FERRY_NETS["inner"][0], "gateway": FERRY_NETS["inner"][1]}]
    assert podman_s["subnets"] == [{"subnet": PODMAN_NETS["inner"][0], "gateway": PODMAN_NETS["inner"][1]}]


@pytest.mark.parametrize("filters, names", [
    (("label=a",), ["inner", "plain"]),
    (("label=a=b",), ["inner"]),
    (("label=c",), ["inner"]),
    (("name=^in",), ["inner"]),
    (("name=nomatch",), []),
    (("driver=bridge",), ["DEFAULT", "inner", "plain"]),
    (("label=a=z", "name=^in"), []),
], ids=repr)
def test_ls_filters_choose_what_podman_s_choose(sides, filters, names):
    args = [arg for f in filters for arg in ("--filter", f)]
    theirs, ours = sides.both("network", "ls", "-q", *args)
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    assert sorted(theirs.stdout.split()) == sorted(n.replace("DEFAULT", "podman") for n in names)
    assert sorted(ours.stdout.split()) == sorted(n.replace("DEFAULT", "ferry") for n in names)
    theirs, ours = sides.both("network", "ls", *args, "--format", "table {{.Name}}")
    assert ours.stdout.splitlines()[0] == theirs.stdout.splitlines()[0] == "NAME"   # a header even for none


def _hosts_names(text: str, ip: str, name: str) -> bool:
    return any(line.split()[:1] == [ip] and name in line.split()[1:] for line in text.splitlines())


def test_connect_and_disconnect_a_running_container(sides):
    setup = (("run", "-d", *RAW, "--name", "web", "busybox", "sleep", "1000"),
             ("run", "-d", *RAW, "--network", "inner", "--name", "db", "busybox", "sleep", "1000"))
    for args in setup:
        theirs, ours = sides.both(*args, run_flags=True)
        assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    try:
        theirs, ours = sides.both("network", "connect", "inner", "web")
        assert (theirs.returncode, theirs.stdout) == (ours.returncode, ours.stdout) == (0, ""), \
            (theirs.stderr, ours.stderr)
        for side, nets in (("podman", PODMAN_NETS), ("ferry", FERRY_NETS)):
            assert ip_of(side, sides, "web", "inner").startswith(nets["inner"][0].rsplit(".", 1)[0] + ".")
        theirs, ours = sides.both("exec", "web", "ip", "-4", "-o", "addr", "show", "eth1")
        assert theirs.returncode == ours.returncode == 0
        assert ip_of("ferry", sides, "web", "inner") + "/24" in ours.stdout
        assert ip_of("podman", sides, "web", "inner") + "/24" in theirs.stdout
        # /etc/hosts names web on its new address too, and keeps a line written inside
        sides.both("exec", "web", "sh", "-c", "echo '192.0.2.9 mine' >> /etc/hosts")
        hostname = dict(zip(("podman", "ferry"), (done.stdout.strip() for done in sides.both("exec", "web", "hostname"))))
        for side, hosts in zip(("podman", "ferry"), sides.both("exec", "web", "cat", "/etc/hosts")):
            assert _hosts_names(hosts.stdout, ip_of(side, sides, "web", "inner"), hostname[side]), (side, hosts.stdout)
            assert _hosts_names(hosts.stdout, "192.0.2.9", "mine"), (side, hosts.stdout)
        # web reaches db on the network it joined (traffic inside the project's netns only)
        theirs, ours = each(sides, ("exec", "web", *PING, ip_of("podman", sides, "db", "inner")),
                            ("exec", "web", *PING, ip_of("ferry", sides, "db", "inner")))
        assert theirs.returncode == ours.returncode == 0, (theirs.stdout, ours.stdout)
        # db, on the internal network only, reaches nothing beyond it: not web's first network
        theirs, ours = each(sides, ("exec", "db", *PING, ip_of("podman", sides, "web", "podman")),
                            ("exec", "db", *PING, ip_of("ferry", sides, "web", "ferry")))
        assert theirs.returncode != 0 and ours.returncode != 0, (theirs.stdout, ours.stdout)
        # the same command lines' failures
        for args in (("network", "connect", "inner", "web"), ("network", "connect", "nonet", "web"),
                     ("network", "connect", "inner", "noctr"), ("network", "disconnect", "plain", "web"),
                     ("network", "disconnect", "nonet", "web"), ("network", "disconnect", "inner", "noctr")):
            theirs, ours = sides.both(*args)
            assert ours.returncode == theirs.returncode == 125, (args, theirs.stderr, ours.stderr)
            assert ours.stdout == "" and len(ours.stderr.strip().splitlines()) == 1, ours.stderr
        # a network in use stays: 2 for it, whatever else failed; 1 for a missing one
        for args, code in ((("inner",), 2), (("nonet", "inner"), 2), (("inner", "nonet"), 2), (("nonet",), 1)):
            theirs, ours = sides.both("network", "rm", *args)
            assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (code, ""), \
                (args, theirs.stderr, ours.stderr)
        assert "inner" in sides.ferry("network", "ls", "-q").stdout.split()
        inner_ip = {side: ip_of(side, sides, "web", "inner") for side in ("podman", "ferry")}
        theirs, ours = sides.both("network", "disconnect", "inner", "web")
        assert (theirs.returncode, theirs.stdout) == (ours.returncode, ours.stdout) == (0, ""), \
            (theirs.stderr, ours.stderr)
        theirs, ours = sides.both("exec", "web", "ip", "-4", "-o", "addr", "show", "eth1")
        assert theirs.returncode != 0 and ours.returncode != 0
        for side, hosts in zip(("podman", "ferry"), sides.both("exec", "web", "cat", "/etc/hosts")):
            assert not _hosts_names(hosts.stdout, inner_ip[side], hostname[side]), (side, hosts.stdout)
            assert _hosts_names(hosts.stdout, ip_of(side, sides, "web", side), hostname[side]), (side, hosts.stdout)
            assert _hosts_names(hosts.stdout, "192.0.2.9", "mine"), (side, hosts.stdout)
        theirs, ours = sides.both("inspect", "web", "--format", "{{len .NetworkSettings.Networks}}")
        assert ours.stdout == theirs.stdout == "1\n"
    finally:
        remove(sides, "web", "db")


def test_connect_a_stopped_container_takes_effect_at_its_start(sides):
    theirs, ours = sides.both("create", *RAW, "--name", "later", "busybox", "sleep", "1000", run_flags=True)
    assert theirs.returncode == ours.returncode == 0
    try:
        theirs, ours = each(sides, ("network", "connect", "--ip", "10.183.0.77", "plain", "later"),
                            ("network", "connect", "--ip", "10.184.0.77", "plain", "later"))
        assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
        assert [side.returncode for side in sides.both("start", "later")] == [0, 0]
        theirs, ours = sides.both("exec", "later", "ip", "-4", "-o", "addr", "show", "eth1")
        assert "10.183.0.77/24" in theirs.stdout and "10.184.0.77/24" in ours.stdout
        theirs, ours = each(sides, ("network", "connect", "--ip", "10.99.0.5", "inner", "later"),
                            ("network", "connect", "--ip", "10.99.0.5", "inner", "later"))
        assert theirs.returncode == ours.returncode == 125   # an address outside the subnet
        assert sides.ferry("inspect", "later", "--format", "{{len .NetworkSettings.Networks}}").stdout == "2\n"
    finally:
        remove(sides, "later")


def test_prune_removes_the_networks_no_container_uses(sides):
    made = ("gone1", "gone2")
    for index, name in enumerate(made):
        theirs, ours = each(sides, ("network", "create", "--label", f"p={name}", "--subnet", f"10.18{5 + index}.0.0/24",
                                    name),
                            ("network", "create", "--label", f"p={name}", "--subnet", f"10.18{7 + index}.0.0/24",
                             name))
        assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    theirs, ours = sides.both("run", "-d", "--network", "plain", "--name", "user", "busybox", "sleep", "1000",
                              run_flags=True)
    try:
        theirs, ours = sides.both("network", "prune", "-f", "--filter", "label=p=gone1")
        assert ours.stdout == theirs.stdout == "gone1\n", (theirs.stderr, ours.stderr)
        theirs, ours = sides.both("network", "prune", "-f", "--filter", "bogus=1")
        assert theirs.returncode == ours.returncode == 125
        ours = sides.ferry("network", "prune", input="n\n")
        assert ours.returncode == 0 and "gone2" in sides.ferry("network", "ls", "-q").stdout.split()
        theirs, ours = sides.both("network", "prune", "-f")
        # the default network and those a container uses (`user` on plain, inner's none: pruned) stay
        assert sorted(ours.stdout.split()) == sorted(theirs.stdout.split())
        assert "gone2" in ours.stdout.split() and "plain" not in ours.stdout.split()
        assert {"ferry", "plain"} <= set(sides.ferry("network", "ls", "-q").stdout.split())
    finally:
        remove(sides, "user")
        for name in made + ("inner",):
            sides.both("network", "rm", "-f", name)
        extra = ("--internal", "--label", "a=b", "--label", "c")
        each(sides, create_args("inner", PODMAN_NETS, *extra), create_args("inner", FERRY_NETS, *extra))


def test_a_connected_network_is_kept_through_checkpoint_and_restore(sides, tmp_path):
    ferry = sides.ferry
    ferry("run", "-d", *RAW, "--network", "inner", "--name", "peer", "busybox", "sleep", "1000")
    ferry("run", "-d", *RAW, "--name", "moving", "busybox", "sleep", "1000")
    try:
        ferry("network", "connect", "inner", "moving")
        address, peer = ip_of("ferry", sides, "moving", "inner"), ip_of("ferry", sides, "peer", "inner")
        ferry("container", "checkpoint", "moving")
        ferry("container", "restore", "moving")
        assert f"{address}/24" in ferry("exec", "moving", "ip", "-4", "-o", "addr", "show", "eth1").stdout
        ferry("exec", "moving", *PING, peer)
        archive = str(tmp_path / "moving.tar")
        ferry("container", "checkpoint", "-e", archive, "moving")
        ferry("rm", "-f", "moving")
        ferry("container", "restore", "--allow-privileges", "-i", archive)   # NET_RAW is a grant
        assert f"{address}/24" in ferry("exec", "moving", "ip", "-4", "-o", "addr", "show", "eth1").stdout
        ferry("exec", "moving", *PING, peer)
        ferry("stop", "-t", "0", "moving")
        ferry("start", "moving")
        assert f"{address}/24" in ferry("exec", "moving", "ip", "-4", "-o", "addr", "show", "eth1").stdout
    finally:
        ferry("rm", "-f", "moving", "peer", check=False)
