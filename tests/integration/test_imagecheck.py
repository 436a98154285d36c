"""check_images on real ferry dumps (runc 1.1 + CRIU 4.2): they pass, and forged copies are refused.

Real containers are checkpointed locally (nginx with its www-data workers, a
named volume and a read-only bind; redis with its threads, and again once
restored; busybox on a terminal, and with a zombie child). Their images are
copied, the containers removed, and each forgery is made on a copy with
pycriu, the way an attacker edits an archive. A busybox archive with a
truncated pages image goes through a real restore: refused before CRIU runs
(CRIU itself would spin forever on it).
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import threading
import time

import pytest

from tests.conftest import require
from bench.busybox import make_oci_archive
from tests.support.cli import Ferry, leftovers, wait_for

pycriu = pytest.importorskip("pycriu", reason="pycriu is installed by 'make setup'")

from ferry.checkpoint.imagecheck import check_images  # noqa: E402
from ferry.util.errors import BadArchive  # noqa: E402

REDIS_CMD = '["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]'
LOOP = "while true; do sleep 1; done"
SYS_ADMIN = 1 << 21


def _children(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return f.read().split()
    except OSError:
        return []


def _threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


READY = {   # what a container's first process shows once the service is up
    "nginx": lambda pid: len(_children(pid)) >= 1,    # its www-data workers
    "redis": lambda pid: _threads(pid) >= 4,          # its bio and jemalloc threads
    "tty": lambda pid: True,
    "zombie": lambda pid: any(_state(child) == "Z" for child in _children(pid)),
}


def _state(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return ""


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """{name: (images dir, spec)} of real local checkpoints; the containers are gone."""
    for key in ("criu", "runc", "overlayfs", "netns", "nftables"):
        require(key)
    workdir = tmp_path_factory.mktemp("imagecheck")
    ferry = Ferry(str(workdir / "root"))
    ferry.seen = set()
    hostdir = workdir / "hostdir"
    hostdir.mkdir()
    runs = {
        "nginx": ["-v", "vol:/data", "-v", f"{hostdir}:/hostdir:ro", "nginx"],
        "redis": ["redis"],
        "tty": ["-t", "busybox", "sh", "-c", LOOP],
        "zombie": ["busybox", "sh", "-c", "sleep 0.1 & exec sleep 1000"],   # a child never reaped
    }
    found = {}
    try:
        ferry("load", "-i", make_oci_archive(str(workdir / "busybox-oci.tar"), str(workdir)))
        ferry("image", "build-debian", "nginx", "--include", "nginx-light", "-q", timeout=900)
        ferry("image", "build-debian", "redis", "--include", "redis-server", "--cmd", REDIS_CMD, "-q",
              timeout=900)
        ferry("volume", "create", "vol")
        for name, args in runs.items():
            ferry("run", "-d", "--name", name, *args)
            container_id = ferry.inspect(name)["Id"]
            ferry.seen.add(container_id)
            directory = os.path.join(ferry.root, "containers", container_id)
            with open(os.path.join(directory, "container.pid")) as f:
                pid = int(f.read())
            wait_for(lambda: READY[name](pid), f"{name} to start its workers")
            found[name] = _checkpoint(ferry, name, directory, str(workdir / f"{name}-images"))
            if name == "redis":   # a restored container is dumped from CRIU's own time namespace
                ferry("container", "restore", name)
                found["redis-restored"] = _checkpoint(ferry, name, directory, str(workdir / "restored-images"))
            ferry("rm", "-f", name)
        yield found
    finally:
        ferry.remove_everything()
        ferry("volume", "rm", "-f", "vol", check=False)
        assert leftovers(ferry.root, ferry.seen) == []


def _checkpoint(ferry: Ferry, name: str, directory: str, copy: str) -> tuple[str, dict]:
    """A local checkpoint's images, copied, and the spec ferry wrote for the container."""
    ferry("container", "checkpoint", name)
    shutil.copytree(os.path.join(directory, "checkpoint"), copy)
    with open(os.path.join(directory, "config.json")) as f:
        return copy, json.load(f)


# ---- pycriu edits, as an attacker makes them ---------------------------------------------------

def load(images: str, name: str) -> dict:
    with open(os.path.join(images, name), "rb") as f:
        return pycriu.images.load(f)


def save(images: str, name: str, image: dict) -> None:
    with open(os.path.join(images, name), "wb") as f:
        f.write(pycriu.images.dumps(image))


def edit(images: str, name: str, change) -> None:
    image = load(images, name)
    change(image["entries"])
    save(images, name, image)


def mount_image(images: str) -> str:
    return next(n for n in os.listdir(images) if n.startswith("mountpoints-"))


def pids(images: str) -> list[dict]:
    return load(images, "pstree.img")["entries"]


def forged_copy(dumps, tmp_path, name: str) -> tuple[str, dict]:
    images, spec = dumps[name]
    copy = str(tmp_path / f"{name}-forged")
    shutil.copytree(images, copy)
    return copy, spec


def refusal(images: str, spec: dict) -> str:
    with pytest.raises(BadArchive) as refused:
        check_images(images, spec)
    assert "\n" not in refused.value.message and refused.value.hint
    return refused.value.message


# ---- real dumps pass ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nginx", "redis", "tty", "zombie", "redis-restored"])
def test_real_checkpoint_passes(dumps, name):
    images, spec = dumps[name]
    check_images(images, spec)   # raises on a refusal (its speed is the benchmark's to measure)


def test_real_dumps_hold_what_the_rules_expect(dumps):
    """The facts the rules rest on, as this host's runc and CRIU write them."""
    images, spec = dumps["nginx"]
    tasks = pids(images)
    assert len(tasks) >= 2
    worker = load(images, f"core-{tasks[1]['pid']}.img")["entries"][0]["thread_core"]["creds"]
    assert worker["uid"] == 33 and worker["cap_eff"] == [0, 0]   # www-data, no capabilities
    inventory = load(images, "inventory.img")["entries"][0]
    ids = load(images, f"ids-{tasks[0]['pid']}.img")["entries"][0]
    root_ids = inventory["root_ids"]
    for field in ("pid_ns_id", "net_ns_id", "ipc_ns_id", "uts_ns_id", "mnt_ns_id", "cgroup_ns_id"):
        assert ids[field] != root_ids[field], field    # the spec's namespaces: new ones
    for field in ("user_ns_id", "time_ns_id"):
        assert ids[field] == root_ids[field], field    # not in the spec: CRIU's own
    assert load(images, f"netns-{ids['net_ns_id']}.img")["entries"][0]["ext_key"] == "extRootNetNS"
    mounts = {m["mountpoint"]: m for m in load(images, mount_image(images))["entries"]}
    kinds = {point: m.get("ext_key") or m["fstype"] for point, m in mounts.items()}
    assert kinds["/"] == 17 and kinds["/proc"] == 1 and kinds["/sys"] == 2 and kinds["/dev"] == 5
    assert kinds["/data"] == "/data" and kinds["/hostdir"] == "/hostdir" and kinds["/etc/hosts"] == "/etc/hosts"
    assert mounts["/proc/sys"]["root"] == "/sys" and mounts["/proc/sys"]["flags"] & 1
    assert any(m.get("ext_key") == "/dev/null" for m in mounts.values())   # masked files
    assert mounts["/hostdir"]["flags"] & 1                                   # :ro

    images, _ = dumps["redis"]
    leader = pids(images)[0]
    assert len(leader["threads"]) >= 4
    thread = load(images, f"core-{leader['threads'][1]}.img")["entries"][0]
    assert "seccomp_mode" not in thread["thread_core"]   # CRIU records seccomp on the leader only...
    filters = load(images, "seccomp.img")["entries"][0]["seccomp_filters"]
    assert all(f.get("flags", 0) & 1 for f in filters)   # ...whose filters sync every thread (TSYNC)

    images, _ = dumps["redis-restored"]
    root_ids = load(images, "inventory.img")["entries"][0]["root_ids"]
    ids = load(images, f"ids-{pids(images)[0]['pid']}.img")["entries"][0]
    assert ids["time_ns_id"] != root_ids["time_ns_id"]   # CRIU's time namespace from the restore

    images, _ = dumps["zombie"]
    zombie = pids(images)[1]
    assert zombie["threads"] == [0] and f"ids-{zombie['pid']}.img" not in os.listdir(images)

    images, _ = dumps["tty"]
    console = next(m for m in load(images, mount_image(images))["entries"] if m["mountpoint"] == "/dev/console")
    assert console["fstype"] == 6 and console["root"].lstrip("/").isdigit()


# ---- forged copies are refused -----------------------------------------------------------------

def test_capability_added_to_a_worker_is_refused(dumps, tmp_path):
    images, spec = forged_copy(dumps, tmp_path, "nginx")
    worker = pids(images)[1]["pid"]

    def add(entries):
        creds = entries[0]["thread_core"]["creds"]
        for field in ("cap_bnd", "cap_prm", "cap_eff"):
            creds[field][0] |= SYS_ADMIN
    edit(images, f"core-{worker}.img", add)
    message = refusal(images, spec)
    assert message.startswith(f"CRIU image core-{worker}.img: task {worker} (nginx) asks for capability "
                              f"CAP_SYS_ADMIN")


def test_seccomp_disabled_is_refused(dumps, tmp_path):
    images, spec = forged_copy(dumps, tmp_path, "redis")
    root = pids(images)[0]["pid"]
    edit(images, f"core-{root}.img", lambda e: e[0]["thread_core"].update(seccomp_mode="disabled"))
    assert f"core-{root}.img: task {root} (redis-server) has seccomp_mode disabled" in refusal(images, spec)


def test_redis_threads_lose_seccomp_without_tsync(dumps, tmp_path):
    images, spec = forged_copy(dumps, tmp_path, "redis")
    edit(images, "seccomp.img", lambda e: [f.update(flags=0) for f in e[0]["seccomp_filters"]])
    leader = pids(images)[0]
    assert f"task {leader['pid']} (redis-server) thread {leader['threads'][1]}" in refusal(images, spec)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the forged filter is x86_64 BPF")
@pytest.mark.parametrize("how,says", [
    ("allow-all", "has a seccomp filter that lets syscall"),
    ("bpf-for-one-argument", "lets syscall bpf (x86_64 321) through"),
])
def test_permissive_seccomp_filter_is_refused(dumps, tmp_path, how, says):
    """A filter that still says 'filter' but lets through what the spec's profile denies."""
    images, spec = forged_copy(dumps, tmp_path, "redis")

    def insn(code, jt, jf, k):
        return struct.pack("<HBBI", code, jt, jf, k)
    allow = insn(0x06, 0, 0, 0x7fff0000)
    bpf_for_1234 = (insn(0x20, 0, 0, 4) + insn(0x15, 0, 5, 0xc000003e) + insn(0x20, 0, 0, 0) +
                    insn(0x15, 0, 3, 321) + insn(0x20, 0, 0, 16) + insn(0x15, 0, 1, 1234) + allow)

    def forge(entries):
        for f in entries[0]["seccomp_filters"]:
            real = base64.b64decode(f["filter"])
            f["filter"] = base64.b64encode(allow if how == "allow-all" else bpf_for_1234 + real).decode()
    edit(images, "seccomp.img", forge)
    message = refusal(images, spec)
    assert message.startswith("CRIU image seccomp.img: task 1 (redis-server)") and says in message, message


def test_no_new_privs_cleared_is_refused(dumps, tmp_path):
    images, spec = forged_copy(dumps, tmp_path, "nginx")
    worker = pids(images)[1]["pid"]
    edit(images, f"core-{worker}.img", lambda e: e[0]["thread_core"]["creds"].update(no_new_privs=0))
    assert "has no_new_privs 0, but the container's spec sets noNewPrivileges" in refusal(images, spec)


@pytest.mark.parametrize("field,kind", [("mnt_ns_id", "mount"), ("pid_ns_id", "pid"), ("net_ns_id", "network")])
def test_root_task_in_criu_namespace_is_refused(dumps, tmp_path, field, kind):
    images, spec = forged_copy(dumps, tmp_path, "nginx")
    criu_own = load(images, "inventory.img")["entries"][0]["root_ids"][field]
    for task in pids(images):
        edit(images, f"ids-{task['pid']}.img", lambda e: e[0].update({field: criu_own}))
    assert f"would stay in the host's {kind} namespace ({field} {criu_own}" in refusal(images, spec)


def _add_mount(images: str, **fields) -> None:
    def add(entries):
        by_point = {m["mountpoint"]: m for m in entries}
        entry = dict(mnt_id=9999, root_dev=0x99, parent_mnt_id=by_point["/"]["mnt_id"], flags=0, root="/",
                     mountpoint="/mnt", source="none", options="", shared_id=0, master_id=0)
        parent = fields.pop("parent", None)
        if parent:
            entry["parent_mnt_id"] = by_point[parent]["mnt_id"]
        entry.update(fields)
        entries.append(entry)
    edit(images, mount_image(images), add)


def _host_disk(images: str) -> dict:
    """The host filesystem under /etc/hosts: its device and source, as the dump recorded them."""
    return next(m for m in load(images, mount_image(images))["entries"] if m["mountpoint"] == "/etc/hosts")


@pytest.mark.parametrize("forgery,says", [
    ("ext4", "asks for a new mount of ext4 from"),
    ("ext4-dev", "on block device"),
    ("overlay", "asks for a new mount of overlay"),
    ("debugfs", "asks for a new mount of debugfs"),
    ("climb", "has root '/sys/../../..', not a clean absolute path"),
    ("rootfs-bind", "is a bind of the container's root filesystem"),
    ("unmask", "leaves /proc/keys unmasked"),
    ("writable", "leaves /proc/sys writable"),
])
def test_forged_mount_is_refused(dumps, tmp_path, forgery, says):
    images, spec = forged_copy(dumps, tmp_path, "nginx")
    disk = _host_disk(images)
    image = mount_image(images)
    if forgery == "ext4":     # CRIU would mount the host's disk: criu/mount.c resolve_source
        _add_mount(images, fstype=16, fsname="ext4", source=disk["source"], root_dev=disk["root_dev"])
    elif forgery == "ext4-dev":
        _add_mount(images, fstype=0, source=disk["source"], root_dev=disk["root_dev"])
    elif forgery == "overlay":
        _add_mount(images, fstype=17, source="overlay", options="lowerdir=/,upperdir=/tmp/u,workdir=/tmp/w")
    elif forgery == "debugfs":
        _add_mount(images, fstype=11, source="debugfs", mountpoint="/sys/kernel/debug", parent="/sys")
    elif forgery == "climb":
        edit(images, image, lambda es: [m.update(root="/sys/../../..") for m in es
                                        if m["mountpoint"] == "/proc/sys"])
    elif forgery == "rootfs-bind":
        root_dev = next(m["root_dev"] for m in load(images, image)["entries"] if m["mountpoint"] == "/")
        _add_mount(images, fstype=17, root="/etc", root_dev=root_dev)
    elif forgery == "unmask":
        edit(images, image, lambda es: es.remove(next(m for m in es if m["mountpoint"] == "/proc/keys")))
    elif forgery == "writable":
        edit(images, image, lambda es: es.remove(next(m for m in es if m["mountpoint"] == "/proc/sys")))
    message = refusal(images, spec)
    assert message.startswith(f"CRIU image {image}") and says in message, message


def test_cgroup_escape_is_refused(dumps, tmp_path):
    images, spec = forged_copy(dumps, tmp_path, "redis")
    edit(images, "cgroup.img", lambda e: [c.update(path="/") for s in e[0]["sets"] for c in s["ctls"]])
    assert "CRIU image cgroup.img: set" in refusal(images, spec)


# ---- memory pages ---------------------------------------------------------------------------------

def _pagemap(images: str) -> str:
    return f"pagemap-{pids(images)[0]['pid']}.img"


@pytest.mark.parametrize("forgery,says", [
    ("short", "is 4096 bytes, but pagemap-1.img puts"),
    ("long", "bytes, but pagemap-1.img puts"),
    ("parent", "has its pages in a parent image"),
    ("lazy", "its pages are to come from a page server"),
    ("unsorted", "must be sorted and must not overlap"),
    ("beyond", "beyond a task's address space"),
])
def test_forged_pagemap_or_pages_are_refused(dumps, tmp_path, forgery, says):
    images, spec = forged_copy(dumps, tmp_path, "redis")
    pagemap = _pagemap(images)
    pages = f"pages-{load(images, pagemap)['entries'][0]['pages_id']}.img"
    if forgery == "short":
        os.truncate(os.path.join(images, pages), 4096)
    elif forgery == "long":
        with open(os.path.join(images, pages), "ab") as f:
            f.write(b"\0" * 4096)
    elif forgery == "parent":
        edit(images, pagemap, lambda e: e[-1].update(flags=1))
    elif forgery == "lazy":   # a lazy run whose pages left the image
        def lazy(entries):
            entries[-1]["flags"] = 2
            os.truncate(os.path.join(images, pages),
                        sum(e["nr_pages"] for e in entries[1:] if e["flags"] & 4) * 4096)
        edit(images, pagemap, lazy)
    elif forgery == "unsorted":
        edit(images, pagemap, lambda e: e.__setitem__(slice(1, None), e[:0:-1]))
    elif forgery == "beyond":
        edit(images, pagemap, lambda e: e[-1].update(vaddr=(1 << 57) - 4096 * e[-1]["nr_pages"]))
    message = refusal(images, spec)
    assert message.startswith(f"CRIU image {pagemap if forgery not in ('short', 'long') else pages}"), message
    assert says in message, message


def test_real_dumps_mark_their_anonymous_pages_lazy_and_present(dumps):
    """CRIU 4 writes PE_LAZY | PE_PRESENT for anonymous memory: PE_LAZY alone is what a restore refuses."""
    images, _ = dumps["redis"]
    flags = {e.get("flags") for e in load(images, _pagemap(images))["entries"][1:]}
    assert flags == {4, 6}, flags


@pytest.fixture(scope="module")
def archived(tmp_path_factory):
    """A root with busybox, and an uncompressed archive of a shell loop (the container removed)."""
    for key in ("criu", "runc", "overlayfs", "netns", "nftables"):
        require(key)
    workdir = tmp_path_factory.mktemp("pages")
    ferry = Ferry(str(workdir / "root"))
    ferry.seen = set()
    try:
        ferry("load", "-i", make_oci_archive(str(workdir / "busybox-oci.tar"), str(workdir)))
        ferry("run", "-d", "--name", "loop", "busybox", "sh", "-c", LOOP)
        ferry.seen.add(ferry.inspect("loop")["Id"])
        archive = str(workdir / "loop.tar")
        ferry("container", "checkpoint", "loop", "--file", archive, "--compress", "none")
        ferry("rm", "-f", "loop")   # its address goes with it: the restores take it again
        yield ferry, archive, workdir
    finally:
        ferry.remove_everything()
        assert leftovers(ferry.root, ferry.seen) == []


def _ours(root: str) -> list[str]:
    """Processes of this root: its monitors and runc (by their command lines), and their children (CRIU)."""
    table = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except OSError:
            continue
        table[int(pid)] = (ppid, cmdline)
    found = {pid for pid, (_, cmdline) in table.items() if root in cmdline}
    found |= {pid for pid, (ppid, _) in table.items() if ppid in found}
    return [f"{pid} {table[pid][1]}" for pid in sorted(found)]


def _kill_ours(root: str, container_ids: set[str]) -> None:
    """After a restore that hung: what this root started, and what runs in its containers' cgroups."""
    pids = {int(line.split()[0]) for line in _ours(root)}
    for cid in container_ids:
        for procs in glob.glob(f"/sys/fs/cgroup/*/ferry*/{cid}/**/cgroup.procs", recursive=True):
            with open(procs) as f:
                pids.update(int(p) for p in f.read().split())
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def test_truncated_pages_image_is_refused_before_criu_runs(archived):
    """CRIU's restorer took preadv's 0 at the end of a short pages image for a short
    read and retried forever at 100% CPU, logging two lines each time (2.2 GB of
    restore.log in 60 s here), and left the container's cgroups behind."""
    from ferry.checkpoint.archive import read_archive, write_archive
    ferry, genuine, workdir = archived
    directory = str(workdir / "unpacked")
    contents = read_archive(genuine, directory)
    images = os.path.join(directory, "checkpoint")
    pagemap = _pagemap(images)
    pages = f"pages-{load(images, pagemap)['entries'][0]['pages_id']}.img"
    assert os.path.getsize(os.path.join(images, pages)) > 4096
    os.truncate(os.path.join(images, pages), 4096)
    forged = str(workdir / "short-pages.tar")
    write_archive(forged, directory, [m.name for m in contents.members], container=contents.container,
                  compression="none")
    shutil.rmtree(directory)

    before = ferry.names()
    containers = os.path.join(ferry.root, "containers")
    seen_ids: set[str] = set()
    done_event = threading.Event()

    def watch():   # the restore's container lives only until its undo: learn its ID meanwhile
        while not done_event.is_set():
            seen_ids.update(os.listdir(containers) if os.path.isdir(containers) else ())
            time.sleep(0.002)
    known = set(os.listdir(containers))
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        done = ferry("container", "restore", "--file", forged, "--name", "short", check=False, timeout=100)
    except subprocess.TimeoutExpired:
        _kill_ours(ferry.root, seen_ids - known)   # CRIU spins: do not leave it to fill the disk
        raise
    finally:
        done_event.set()
        watcher.join()
    new_ids = seen_ids - known
    ferry.seen.update(new_ids)

    assert done.returncode == 125, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"ferry: error: CRIU image {pages} is 4096 bytes, but {pagemap} puts "), lines[0]
    # Nothing was left, and CRIU never ran: no container, process, cgroup, log or runc state.
    assert len(new_ids) == 1, new_ids   # the restore's own container, undone
    assert ferry.names() == before
    assert leftovers(ferry.root, new_ids) == []
    assert _ours(ferry.root) == []
    for cid in new_ids:
        assert glob.glob(f"/sys/fs/cgroup/*/ferry*/{cid}") == []
    kept = [p for p in glob.glob(os.path.join(ferry.root, "logs", "*")) if not os.path.basename(p).startswith("events.log")]
    assert kept == []   # no CRIU log kept: CRIU never started (the events log is ferry's own record)
    tmp = os.path.join(ferry.root, "tmp")
    assert not os.path.isdir(tmp) or [n for n in os.listdir(tmp) if not n.startswith(".trash")] == []

    # The genuine archive restores from the same root.
    restored = ferry("container", "restore", "--file", genuine, "--name", "whole").stdout.strip()
    ferry.seen.add(restored)
    ferry("rm", "-f", "whole")
