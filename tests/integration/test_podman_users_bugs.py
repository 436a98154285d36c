"""Bugs podman users met (issue 15), on real runc: each test shows podman 4.3's
behaviour on this machine, which ferry matches."""

from __future__ import annotations

import os

import pytest

from bench.busybox import make_rootfs_tar
from tests.conftest import require
from tests.support.cli import Ferry, leftovers
from tests.support.registry import LayerTar, Registry


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory) -> str:
    return make_rootfs_tar(str(tmp_path_factory.mktemp("img") / "busybox.tar"),
                           str(tmp_path_factory.mktemp("work")))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """docker-registry on loopback, serving test/bb as an index (amd64) over one manifest."""
    served = Registry(str(tmp_path_factory.mktemp("registry"))).start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def ferry(tmp_path_factory, busybox_tar):
    for key in ("runc", "overlayfs", "netns", "nftables"):
        require(key)
    root = str(tmp_path_factory.mktemp("root"))
    cli = Ferry(root)
    cli("image", "import", busybox_tar, "busybox")
    seen: set[str] = set()
    cli.seen = seen
    yield cli
    cli.remove_everything()
    assert leftovers(root, seen) == []


def started(ferry, *argv: str) -> str:
    """`ferry run ... --name NAME ...`, its ID tracked for the leak check."""
    ferry(*argv)
    cid = ferry.inspect(argv[argv.index("--name") + 1])["Id"]
    ferry.seen.add(cid)
    return cid


# ---- item 3: removing a volume or network that containers use -------------------

def test_volume_rm_refuses_while_used_and_force_removes_its_users_first(ferry):
    """podman: `volume rm V` refuses while any container (running or not) uses V;
    `volume rm -f V` removes those containers, then V."""
    ferry("volume", "create", "inuse")
    started(ferry, "run", "-d", "--name", "vol-runner", "-v", "inuse:/data", "busybox",
            "sh", "-c", "echo kept > /data/file; exec sleep 600")
    started(ferry, "run", "--name", "vol-idle", "-v", "inuse:/data", "busybox", "true")
    refused = ferry("volume", "rm", "inuse", check=False)
    assert refused.returncode != 0 and "vol-runner" in refused.stderr, refused.stderr
    assert ferry("exec", "vol-runner", "cat", "/data/file").stdout == "kept\n"

    done = ferry("volume", "rm", "-f", "inuse")
    assert done.stdout.split() == ["inuse"], done.stderr
    assert not {"vol-runner", "vol-idle"} & ferry.names()
    assert ferry.json("volume", "ls", "--format", "json") == []


def test_network_rm_force_removes_its_containers_first(ferry):
    """podman: `network rm N` refuses while containers use N; `network rm -f N`
    removes them (running and stopped), then N. None is left without its network."""
    ferry("network", "create", "inuse-net")
    started(ferry, "run", "-d", "--name", "net-runner", "--network", "inuse-net", "busybox", "sleep", "600")
    started(ferry, "run", "--name", "net-idle", "--network", "inuse-net", "busybox", "true")
    refused = ferry("network", "rm", "inuse-net", check=False)
    assert refused.returncode != 0 and "in use" in refused.stderr, refused.stderr

    done = ferry("network", "rm", "-f", "inuse-net")
    assert done.stdout.split() == ["inuse-net"], done.stderr
    assert not {"net-runner", "net-idle"} & ferry.names()
    assert "inuse-net" not in [n["name"] for n in ferry.json("network", "ls", "--format", "json")]


# ---- item 8: pull and run by digest ----------------------------------------------

def test_an_image_pulled_by_its_index_digest_runs_by_that_digest(ferry, registry, busybox_tar):
    """podman: `pull REG/x@sha256:INDEX` then `run REG/x@sha256:INDEX` runs it;
    RepoDigests holds the index's digest and the instance's."""
    manifest = registry.push_image("test/bb", None, [LayerTar().add_tree(busybox_tar).bytes()], cmd=["sh"])
    index = registry.push_index("test/bb", "latest", [manifest])
    pinned = f"{registry.host}/test/bb@{index}"
    assert ferry("pull", "--tls-verify=false", pinned).stdout.strip() == manifest.image_id
    assert ferry("run", "--rm", pinned, "echo", "hi").stdout == "hi\n"
    [inspected] = ferry.json("image", "inspect", pinned)
    assert inspected["Id"] == manifest.image_id
    assert set(inspected["RepoDigests"]) == {pinned, f"{registry.host}/test/bb@{manifest.digest}"}
    assert ferry.json("image", "inspect", f"{registry.host}/test/bb@{manifest.digest}")[0]["Id"] == manifest.image_id
    # item 9: the container shows the reference it was run with, as podman's ps and inspect do
    started(ferry, "run", "--name", "pinned", pinned, "true")
    assert ferry.inspect("pinned")["ImageName"] == pinned
    assert [c["Image"] for c in ferry.json("ps", "-a", "--format", "json") if c["Names"] == ["pinned"]] == [pinned]
    ferry("rm", "pinned")
    ferry("rmi", manifest.image_id)
    assert ferry("image", "inspect", pinned, check=False).returncode != 0


# ---- item 11: volume copy-up ----------------------------------------------------------

def _www(ferry, volume: str) -> str:
    return ferry("run", "--rm", "-v", f"{volume}:/var/www", "busybox", "ls", "/var/www").stdout


def test_a_new_volume_gets_the_image_files_at_its_mount_point_once(ferry, tmp_path):
    """podman 4.3: a volume it made (by -v or `volume create`) gets the image's
    files at its mount point at the first start that finds files there, while
    it is empty; never again once taken (even emptied), never with nocopy."""
    assert _www(ferry, "fresh") == "index.html\n"
    assert ferry("run", "--rm", "-v", "fresh:/var/www", "busybox", "cat", "/var/www/index.html").stdout \
        == "hello from busybox\n"
    ferry("volume", "create", "made")
    assert _www(ferry, "made") == "index.html\n"
    ferry("run", "--rm", "-v", "late:/nothing/here", "busybox", "true")   # no files there: not taken yet
    assert _www(ferry, "late") == "index.html\n"
    ferry("run", "--rm", "-v", "full:/x", "busybox", "sh", "-c", "echo d > /x/mine")
    assert _www(ferry, "full") == "mine\n"                                # not empty: left alone
    ferry("run", "--rm", "-v", "fresh:/var/www", "busybox", "sh", "-c", "rm /var/www/index.html")
    assert _www(ferry, "fresh") == ""                                     # taken once only
    assert ferry("run", "--rm", "-v", "bare:/var/www:nocopy", "busybox", "ls", "/var/www").stdout == ""
    host = tmp_path / "host"
    host.mkdir()
    assert ferry("run", "--rm", "-v", f"{host}:/var/www", "busybox", "ls", "/var/www").stdout == ""
    assert list(host.iterdir()) == []                                     # a host dir: never
    ferry("volume", "rm", "fresh", "made", "late", "full", "bare")
