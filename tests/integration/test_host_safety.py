"""A container must never take host mounts down with it (issue 9, finding 8).

Once, every nsfs mount under /run/netns vanished at the same moment. /run/netns
is a shared mount (`ip netns` makes it so), and an unmount below one bind of a
shared mount unmounts the same point below every peer of that bind. These tests
give ferry's trees binds of a shared tree that holds a tmpfs and an nsfs file
(a stand-in for /run/netns: the real one holds other users' namespaces, so a
failure here must not be able to destroy them), and check that every host mount
is still there afterwards.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import tempfile

import pytest

from ferry.runtime import rootfs
from ferry.util import fs
from ferry.util.errors import ToolError
from tests.conftest import require
from bench.busybox import make_oci_archive
from tests.support.cli import Ferry, leftovers

# Mount points that other work on this machine (parallel test runs, benchmarks,
# podman) may create and remove while a test runs: a mount there that comes or
# goes says nothing about this test. Every other mount must stay as it was.
# (/run/netns itself stays; the namespaces in it come and go.)
VOLATILE = (tempfile.gettempdir(), "/var/tmp", "/var/lib/containers", "/run/containers", "/run/user",
            "/var/lib/ferry", "/run/ferry", "/var/cache/ferry")
VOLATILE_BELOW = ("/run/netns",)


def _under(point: str, prefix: str) -> bool:
    return point == prefix.rstrip("/") or point.startswith(prefix.rstrip("/") + "/")


def _mountinfo() -> list[list[str]]:
    # Read here rather than with ferry's parser: the test checks that parser's users.
    with open("/proc/self/mountinfo") as f:
        return [line.split() for line in f]


def _point(fields: list[str]) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])


def _mounts() -> dict[int, str]:
    return {int(fields[0]): _point(fields) for fields in _mountinfo()}


def _propagation(point: str) -> str:
    """The optional fields of the topmost mount at `point` ("" when private)."""
    fields = [f for f in _mountinfo() if _point(f) == point][-1]
    return " ".join(fields[6:fields.index("-", 6)])


class HostMounts:
    """The host's mounts outside the test's own trees, and the canaries, as they
    were when made; check() says which of them vanished since."""

    def __init__(self, own: str, canaries: list[str]):
        mounts = _mounts()
        self.before = {i: p for i, p in mounts.items()
                       if not any(_under(p, v) for v in (*VOLATILE, own))
                       and not any(p.startswith(v + "/") for v in VOLATILE_BELOW)}
        self.canaries = {i: p for i, p in mounts.items() if p in canaries}
        assert sorted(self.canaries.values()) == sorted(canaries), "a canary is not mounted"

    def check(self, step: str) -> None:
        now = _mounts()
        gone = [p for i, p in {**self.before, **self.canaries}.items() if i not in now]
        assert gone == [], f"after {step}, host mounts vanished: {gone}"


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _teardown(path: str) -> None:
    """Take down every mount at or below `path` (the test's own, even after a
    failure), each made private first so that this cannot propagate either."""
    for _ in range(16):
        points = sorted({p for p in _mounts().values() if _under(p, path)}, key=lambda p: p.count("/"))
        if not points:
            return
        for point in points:
            subprocess.run(["mount", "--make-rprivate", point], capture_output=True)
        for point in reversed(points):
            subprocess.run(["umount", "-l", point], capture_output=True)


@pytest.fixture
def shared_tree(tmp_path):
    """TMP/shared, a bind of itself made shared, holding a tmpfs and an nsfs
    file, as /run/netns is after `ip netns add`. Yields it and the canaries."""
    top = tmp_path / "shared"
    for d in ("sub", "deeper"):
        (top / d).mkdir(parents=True)
    (top / "netns").touch()
    _run("mount", "--bind", str(top), str(top))
    try:
        _run("mount", "--make-shared", str(top))
        _run("mount", "-t", "tmpfs", "ferry-test-canary", str(top / "sub"))
        (top / "sub" / "file").write_text("still here\n")
        _run("mount", "--bind", "/proc/self/ns/net", str(top / "netns"))
        yield str(top), [str(top / "sub"), str(top / "netns")]
    finally:
        _teardown(str(top))


@pytest.fixture
def canary_netns():
    """A named netns of another owner under the real /run/netns, which must survive."""
    require("netns")
    name = f"ferrytest-canary-{os.getpid()}"
    _run("ip", "netns", "add", name)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


@pytest.fixture
def ours(tmp_path):
    """A directory standing for one of ferry's trees; nothing is left mounted in it."""
    path = tmp_path / "ours"
    path.mkdir()
    yield path
    _teardown(str(path))


# ---- the unmount primitives ------------------------------------------------------

def test_unmounting_a_bind_of_a_shared_tree_leaves_the_source(shared_tree, ours, tmp_path):
    top, canaries = shared_tree
    host = HostMounts(str(tmp_path), canaries)
    (ours / "bind").mkdir()
    _run("mount", "--rbind", top, str(ours / "bind"))
    assert os.path.ismount(ours / "bind" / "sub")  # a peer of the shared tree, with its submounts
    fs.unmount_under(str(ours))
    assert fs.mounts_under(str(ours)) == []
    host.check("unmount_under")
    fs.remove_tree(str(ours))
    with open(os.path.join(top, "sub", "file")) as f:
        assert f.read() == "still here\n"  # nothing deleted through the bind either


def test_remove_tree_of_a_bind_deletes_nothing_through_it(shared_tree, ours, tmp_path):
    top, canaries = shared_tree
    host = HostMounts(str(tmp_path), canaries)
    (ours / "deep" / "er").mkdir(parents=True)
    _run("mount", "--rbind", top, str(ours / "deep" / "er"))
    fs.remove_tree(str(ours))
    assert not ours.exists()
    host.check("remove_tree")
    assert sorted(os.listdir(top)) == ["deeper", "netns", "sub"]
    ours.mkdir()  # for the fixture


def test_stacked_mounts_come_off_without_propagating(shared_tree, ours, tmp_path):
    """A bind of the shared tree covered by a tmpfs: the covered bind is reached,
    made private and detached only once its cover is gone."""
    top, canaries = shared_tree
    host = HostMounts(str(tmp_path), canaries)
    (ours / "p").mkdir()
    _run("mount", "--rbind", top, str(ours / "p"))
    _run("mount", "-t", "tmpfs", "cover", str(ours / "p"))
    _run("mount", "-t", "tmpfs", "cover2", str(ours / "p"))
    fs.unmount_under(str(ours))
    assert fs.mounts_under(str(ours)) == []
    host.check("unmounting stacked mounts")


def test_a_symlink_swapped_in_after_listing_is_not_followed(shared_tree, ours, tmp_path, monkeypatch):
    """A container owns its rootfs: between ferry reading mountinfo and unmounting,
    it may rename a directory holding a mount and put a symlink to a host path in
    its place. The unmount must not follow it."""
    top, canaries = shared_tree
    host = HostMounts(str(tmp_path), canaries)
    (ours / "x" / "sub").mkdir(parents=True)
    _run("mount", "-t", "tmpfs", "leftover", str(ours / "x" / "sub"))
    listed = fs.mountinfo()
    os.rename(ours / "x", ours / "y")
    os.symlink(top, ours / "x")  # ours/x/sub now names the host's canary tmpfs
    monkeypatch.setattr(fs, "mountinfo", lambda *_: listed)  # as read before the swap
    with pytest.raises(ToolError, match="still mounted"):
        fs.unmount_under(str(ours))  # the listed mount cannot be reached: refused, not followed
    monkeypatch.undo()
    host.check("an unmount raced by a symlink")
    fs.unmount_under(str(ours))  # listed afresh, at its new place
    assert fs.mounts_under(str(ours)) == []


def test_the_overlay_and_scratch_tmpfs_are_private_under_a_shared_parent(ours):
    """Under a shared parent (/ on systemd hosts) a new mount would join its
    peer group; ferry's are made private."""
    _run("mount", "--bind", str(ours), str(ours))
    _run("mount", "--make-shared", str(ours))
    layer, target = ours / "layer", ours / "rootfs"
    layer.mkdir()
    (layer / "f").write_text("from the image\n")
    rootfs.mount_overlay([str(layer)], str(ours / "upper"), str(ours / "work"), str(target))
    assert (target / "f").read_text() == "from the image\n"
    assert _propagation(str(target)) == ""
    (ours / "scratch").mkdir()
    assert fs.tmpfs_if_it_fits(str(ours / "scratch"), 1 << 20)
    assert _propagation(str(ours / "scratch")) == ""
    fs.unmount_under(str(ours), keep_top=True)
    assert fs.mounts_under(str(ours)) == [str(ours)]


def test_a_mount_at_the_rootfs_that_is_not_ours_is_replaced_not_used(ours, shared_tree, tmp_path):
    """Only ferry's own overlay is reused at a container's rootfs: anything else
    mounted there (a bind of a host tree) is taken off, privately, first."""
    top, canaries = shared_tree
    host = HostMounts(str(tmp_path), canaries)
    layer, target = ours / "layer", ours / "rootfs"
    layer.mkdir()
    (layer / "f").write_text("from the image\n")
    target.mkdir()
    _run("mount", "--rbind", top, str(target))
    rootfs.mount_overlay([str(layer)], str(ours / "upper"), str(ours / "work"), str(target))
    assert sorted(os.listdir(target)) == ["f"]
    host.check("mounting the overlay")
    # Its own overlay, still mounted from an earlier start, is kept; a bind that
    # an interrupted runc restore left below it is not.
    overlay = [i for i, p in _mounts().items() if p == str(target)]
    (target / "x").mkdir()
    _run("mount", "--rbind", top, str(target / "x"))
    rootfs.mount_overlay([str(layer)], str(ours / "upper"), str(ours / "work"), str(target))
    assert [i for i, p in _mounts().items() if _under(p, str(target))] == overlay
    host.check("mounting the overlay again")
    rootfs.unmount(str(target))
    assert fs.mounts_under(str(ours)) == []


# ---- ferry end to end ----------------------------------------------------------------

@pytest.fixture
def ferry(tmp_path, request):
    """A root of this test's own; with `shared`, its directory is a shared mount,
    as everything is on a host whose / is shared (systemd)."""
    for key in ("criu", "runc", "overlayfs", "netns", "nftables"):
        require(key)
    root = tmp_path / "root"
    root.mkdir()
    shared = getattr(request, "param", "private") == "shared"
    if shared:
        _run("mount", "--bind", str(root), str(root))
        _run("mount", "--make-shared", str(root))
    cli = Ferry(str(root))
    try:
        cli("load", "-i", make_oci_archive(str(tmp_path / "busybox-oci.tar"), str(tmp_path)))
        cli.seen = set()
        yield cli
        cli.remove_everything()
        assert leftovers(cli.root, cli.seen) == []
        assert fs.mounts_under(cli.root) == ([cli.root] if shared else []), "ferry left mounts in its root"
    finally:
        _teardown(str(root))  # after a failure too: the conftest's leak check names what ferry left


@pytest.mark.parametrize("ferry", ["private", "shared"], indirect=True)
def test_what_an_interrupted_restore_left_comes_off_without_touching_the_host(ferry, shared_tree,
                                                                            canary_netns, tmp_path):
    """A `runc restore` that is killed leaves, in the host's mount namespace,
    its criu-root (a recursive bind of the rootfs) and the bind of each -v
    source it made inside the rootfs (HOST-NOTES). rm and prune must take them
    off without an unmount reaching the -v source's peers."""
    top, canaries = shared_tree
    host = HostMounts(str(tmp_path), [*canaries, canary_netns])
    ferry("run", "-d", "--name", "keeper", "-v", f"{top}:/x", "busybox", "sleep", "600")
    ferry.seen.add(cid := ferry.inspect("keeper")["Id"])
    assert ferry("exec", "keeper", "cat", "/x/sub/file").stdout == "still here\n"
    host.check("run")

    # What runc restore mounts, in its order, before it got killed.
    target = os.path.join(ferry.root, "containers", cid, "rootfs")
    criu_root = os.path.join(ferry.root, "runc", cid, "criu-root")
    os.makedirs(criu_root)
    _run("mount", "--rbind", target, criu_root)
    _run("mount", "--rbind", top, os.path.join(target, "x"))

    ferry("rm", "-f", "keeper")
    host.check("rm -f")
    ferry("system", "prune", "-f")
    host.check("system prune")
    assert not os.path.exists(os.path.join(ferry.root, "runc", cid))
    with open(os.path.join(top, "sub", "file")) as f:
        assert f.read() == "still here\n"


def _killing_criu(tmp_path) -> str:
    """A criu for FERRY_CRIU that SIGKILLs runc when runc starts the restore
    itself (runc's second `criu swrk`; the first asks the version), as a
    timeout or an OOM kill would."""
    from ferry.util import proc
    real = proc.criu_binary()
    count = tmp_path / "runc-swrk-count"
    script = tmp_path / "criu-killing-runc"
    script.write_text(f"""#!/bin/sh
if [ "$1" = swrk ] && [ "$(cat /proc/$PPID/comm)" = runc ]; then
    n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 ))
    echo $n > {count}
    [ $n -ge 2 ] && kill -KILL $PPID && exit 1
fi
exec {real} "$@"
""")
    script.chmod(0o755)
    return str(script)


def test_checkpoint_and_restores_that_work_fail_or_die_keep_every_host_mount(ferry, shared_tree, canary_netns,
                                                                           tmp_path, monkeypatch):
    top, canaries = shared_tree
    # CRIU cannot dump an nsfs mount in a container ("doesn't have a proper root
    # mount"): this container gets the tmpfs half of the tree.
    _run("umount", os.path.join(top, "netns"))
    host = HostMounts(str(tmp_path), [canaries[0], canary_netns])
    ferry("run", "-d", "--name", "keeper", "-v", f"{top}:/x", "busybox", "sleep", "600")
    ferry.seen.add(cid := ferry.inspect("keeper")["Id"])

    ferry("container", "checkpoint", "keeper")
    host.check("checkpoint")
    ferry("container", "restore", "keeper")
    host.check("restore")
    assert ferry("exec", "keeper", "cat", "/x/sub/file").stdout == "still here\n"

    ferry("container", "checkpoint", "keeper")
    monkeypatch.setenv("FERRY_CRIU", _killing_criu(tmp_path))
    assert ferry("container", "restore", "keeper", check=False).returncode == 125
    monkeypatch.delenv("FERRY_CRIU")
    host.check("a restore whose runc was killed")

    for core in glob.glob(os.path.join(ferry.root, "containers", cid, "checkpoint", "core-*.img")):
        with open(core, "r+b") as f:
            f.truncate(8)  # images CRIU cannot use
    assert ferry("container", "restore", "keeper", check=False).returncode == 125
    host.check("a failed restore")

    ferry("rm", "-f", "keeper")
    ferry("system", "prune", "-f")
    host.check("rm -f and system prune")
