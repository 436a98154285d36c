"""Checkpoint and restore of real containers (nginx, redis, busybox) with real runc and CRIU."""

from __future__ import annotations

import glob
import json
import os
import stat
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from tests.conftest import require
from bench.busybox import make_oci_archive
from tests.support.cli import Ferry, free_port, http_get, leftovers, wait_for
from tests.support.counter import COUNTER, count
from tests.support.redis import REDIS_CMD, Redis

PIPE_TIMEOUT = 180


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("ckpt")


@pytest.fixture(scope="module")
def busybox_archive(workdir):
    return make_oci_archive(str(workdir / "busybox-oci.tar"), str(workdir))


def _root(workdir, name: str, busybox_archive: str) -> Ferry:
    cli = Ferry(str(workdir / name))
    cli("load", "-i", busybox_archive)
    cli.seen = set()
    return cli


@pytest.fixture(scope="module")
def host_a(workdir, busybox_archive):
    for key in ("criu", "runc", "overlayfs", "netns", "nftables"):
        require(key)
    cli = _root(workdir, "host-a", busybox_archive)
    yield cli
    cli.remove_everything()
    assert leftovers(cli.root, cli.seen) == []


@pytest.fixture(scope="module")
def host_b(workdir, busybox_archive, host_a):
    cli = _root(workdir, "host-b", busybox_archive)
    yield cli
    cli.remove_everything()
    assert leftovers(cli.root, cli.seen) == []


def track(ferry: Ferry, name: str) -> dict:
    info = ferry.inspect(name)
    ferry.seen.add(info["Id"])
    return info


def test_seed_scenario_nginx(host_a, workdir):
    """run nginx -p, write and delete files, checkpoint to .tar.gz, rm, restore under a new name."""
    host_a("image", "build-debian", "nginx", "--include", "nginx-light", "-q", timeout=900)
    port = free_port()
    host_a("run", "-d", "-p", f"{port}:80", "--name", "my-nginx", "nginx")
    track(host_a, "my-nginx")
    page = http_get(f"http://localhost:{port}/")
    assert "Welcome to nginx!" in page
    host_a("exec", "my-nginx", "sh", "-c",
           "echo kept > /var/www/html/kept.html && rm /etc/debian_version && mkdir -p /srv/new")
    archive = str(workdir / "nginx.tar.gz")
    host_a("container", "checkpoint", "my-nginx", "--file", archive)

    with open(archive, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # a real gzip, as the name says
    assert subprocess.run(["gzip", "-t", archive]).returncode == 0
    assert stat.S_IMODE(os.stat(archive).st_mode) == 0o600
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json"
    for member in ("config.dump", "ferry-config.json", "spec.dump", "stats-dump", "rootfs-diff.tar",
                   "deleted.files", "checkpoint/inventory.img"):
        assert member in names, member

    host_a("rm", "my-nginx")
    restored_id = host_a("container", "restore", "--name", "my-nginx-restored", "--file", archive).stdout.strip()
    host_a.seen.add(restored_id)
    assert http_get(f"http://localhost:{port}/") == page
    assert http_get(f"http://localhost:{port}/kept.html") == "kept\n"
    gone = host_a("exec", "my-nginx-restored", "cat", "/etc/debian_version", check=False)
    assert gone.returncode != 0  # a deleted file stays deleted
    assert host_a("exec", "my-nginx-restored", "test", "-d", "/srv/new", check=False).returncode == 0
    host_a("rm", "-f", "my-nginx-restored")


# Code a checkpoint or restore of a ferry archive must not load (issue 18):
# pydantic alone cost each command about 50 ms, dataclasses' 57 records about 40.
NOT_FOR_ARCHIVES = {"pydantic", "ferry.checkpoint.foreign", "ferry.engine.foreign", "ferry.checkpoint.lazy",
                    "ferry.checkpoint.pagepush", "ferry.checkpoint.archive.layerstream", "ferry.image.saving",
                    "ferry.image.archive", "ferry.engine.checkpoint_images", "ferry.migration.wire",
                    "dataclasses", "secrets"}
# ...a checkpoint reads no CRIU image through protobuf, nor any archive...
NOT_FOR_CHECKPOINTS = {"pycriu", "google.protobuf", "ferry.checkpoint.imagecheck", "ferry.checkpoint.archive.reader"}
# ...and a restore writes none.
NOT_FOR_RESTORES = {"ferry.checkpoint.archive.writer", "ferry.checkpoint.archive.follow", "inotify_simple"}


def _modules_loaded(ferry: Ferry, *args: str) -> set[str]:
    """The modules a real command loads, as Python's -X importtime lists them."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "ferry", "--root", ferry.root, *args],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_checkpoint_and_restore_of_an_archive_load_only_what_they_use(host_a, workdir):
    host_a("run", "-d", "--name", "lean", "localhost/busybox", "httpd", "-f", "-p", "80")
    track(host_a, "lean")
    archive = str(workdir / "lean.tar.zst")
    checkpoint = _modules_loaded(host_a, "container", "checkpoint", "lean", "--export", archive)
    host_a("rm", "lean")
    restore = _modules_loaded(host_a, "container", "restore", "--import", archive, "--name", "lean")
    assert host_a.inspect("lean")["State"]["Running"]
    # Each list is real: the archive's writer and reader, and the image check, did load.
    assert {"ferry.checkpoint.archive.writer", "zstandard"} <= checkpoint
    assert {"ferry.checkpoint.archive.reader", "ferry.checkpoint.imagecheck", "pycriu"} <= restore
    assert sorted(NOT_FOR_ARCHIVES & checkpoint) == [] and sorted(NOT_FOR_CHECKPOINTS & checkpoint) == []
    assert sorted(NOT_FOR_ARCHIVES & restore) == [] and sorted(NOT_FOR_RESTORES & restore) == []
    host_a("rm", "-f", "lean")


def test_local_checkpoint_and_in_place_restore_keep_memory(host_a):
    host_a("run", "-d", "--name", "counter", "busybox", "sh", "-c", COUNTER)
    track(host_a, "counter")
    wait_for(lambda: count(host_a, "counter") > 5, "counter to count")
    with open("/proc/sys/fs/pipe-max-size", "w") as knob:
        knob.write("1048576")  # the kernel's default, too small for CRIU's page pipes
    stats = json.loads(host_a("container", "checkpoint", "counter", "--print-stats").stdout)
    with open("/proc/sys/fs/pipe-max-size") as knob:
        assert int(knob.read()) >= 64 << 20  # ferry raised it before dumping
    entry = stats["container_statistics"][0]
    assert entry["criu_statistics"]["pages_written"] > 0
    assert entry["criu_statistics"]["frozen_time"] > 0
    assert "runc_checkpoint" in entry["ferry_phases"]
    assert host_a.inspect("counter")["State"]["Status"] == "exited"
    counted = int(open(_upper_file(host_a, "counter", "tmp/count")).read())

    host_a("container", "restore", "counter")
    assert host_a.inspect("counter")["State"]["Status"] == "running"
    wait_for(lambda: count(host_a, "counter") > counted, "restored counter to advance")
    assert count(host_a, "counter") > counted  # went on from memory, not from 1
    missing = host_a("container", "restore", "counter", check=False)
    assert missing.returncode == 125 and "running" in missing.stderr
    host_a("rm", "-f", "counter")


def _upper_file(ferry: Ferry, name: str, rel: str) -> str:
    return os.path.join(ferry.root, "containers", ferry.inspect(name)["Id"], "upper", rel)


@pytest.fixture(scope="module")
def redis_image(host_a):
    host_a("image", "build-debian", "redis", "--include", "redis-server", "--cmd", REDIS_CMD,
           "--expose", "6379/tcp", "-q", timeout=900)


def test_redis_keys_and_tcp_connection_survive_restore_under_new_name(host_a, redis_image, workdir):
    port = free_port()
    host_a("run", "-d", "--name", "redis", "-p", f"{port}:6379", "redis")
    info = track(host_a, "redis")
    ip = info["NetworkSettings"]["IPAddress"]
    client = wait_for(lambda: _connect(ip, 6379), "redis to listen")
    assert client.command("DEBUG", "POPULATE", "100000") == "OK"
    assert client.command("DBSIZE") == 100000
    published = Redis("127.0.0.1", port)
    assert published.command("GET", "key:7") == "value:7"

    archive = str(workdir / "redis.tar.zst")
    host_a("container", "checkpoint", "redis", "--tcp-established", "--file", archive)
    with open(archive, "rb") as f:
        assert f.read(4) == b"\x28\xb5\x2f\xfd"  # zstd
    host_a("rm", "redis")
    restored = host_a("container", "restore", "--tcp-established", "--name", "other",
                      "--file", archive).stdout.strip()
    host_a.seen.add(restored)
    assert host_a.inspect("other")["NetworkSettings"]["IPAddress"] == ip
    # The connections opened before the checkpoint carry on.
    assert client.command("GET", "key:99999") == "value:99999"
    assert client.command("DBSIZE") == 100000
    assert published.command("GET", "key:12345") == "value:12345"
    client.close()
    published.close()
    host_a("rm", "-f", "other")


def _scratch_mounts(root: str) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line for line in f if line.startswith("ferry-scratch ") and root in line]


def test_large_memory_is_compressed_while_criu_writes_it(host_a, redis_image, workdir):
    """A page image past FOLLOW_MIN goes into the archive during the dump,
    through a tmpfs that is gone afterwards, and every key comes back."""
    host_a("run", "-d", "--name", "big", "redis")
    ip = track(host_a, "big")["NetworkSettings"]["IPAddress"]
    client = wait_for(lambda: _connect(ip, 6379), "redis to listen")
    assert client.command("DEBUG", "POPULATE", "600000") == "OK"
    client.close()

    archive = str(workdir / "big.tar.zst")
    stats = host_a.json("container", "checkpoint", "big", "--export", archive, "--print-stats")
    entry = stats["container_statistics"][0]
    assert entry["archive_streamed"] >= 32 << 20, entry
    assert entry["archive_size"] == os.path.getsize(archive)
    assert _scratch_mounts(host_a.root) == []
    host_a("rm", "big")

    stats = host_a.json("container", "restore", "--import", archive, "--print-stats")
    host_a.seen.add(stats["container_statistics"][0]["Id"])
    assert stats["container_statistics"][0]["criu_statistics"]["pages_restored"] > (32 << 20) // 4096
    assert _scratch_mounts(host_a.root) == []
    tmp = os.path.join(host_a.root, "tmp")
    assert not os.path.isdir(tmp) or os.listdir(tmp) == []
    client = wait_for(lambda: _connect(ip, 6379), "restored redis")
    assert client.command("DBSIZE") == 600000
    assert client.command("GET", "key:599999") == "value:599999"
    client.close()
    host_a("rm", "-f", "big")


def _connect(host: str, port: int):
    try:
        return Redis(host, port, timeout=5)
    except OSError:
        return None


def test_checkpoint_while_new_connections_arrive(host_a, workdir):
    port = free_port()
    host_a("run", "-d", "--name", "busy", "-p", f"{port}:80", "busybox", "httpd", "-f", "-p", "80", "-h", "/var/www")
    info = track(host_a, "busy")
    http_get(f"http://127.0.0.1:{port}/")
    stop = threading.Event()
    opened = []

    def hammer():
        import socket
        end = time.monotonic() + 60  # bounded, whatever happens
        while not stop.is_set() and time.monotonic() < end:
            try:
                with socket.create_connection((info["NetworkSettings"]["IPAddress"], 80), timeout=1) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    opened.append(1)
            except OSError:
                pass
    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        wait_for(lambda: len(opened) > 20, "the client loop to get going")
        archive = str(workdir / "busy.tar")
        host_a("container", "checkpoint", "busy", "--tcp-established", "--leave-running", "--file", archive)
    finally:
        stop.set()
        thread.join()
    assert os.path.getsize(archive) > 0
    host_a("rm", "-f", "busy")


def test_leave_running_and_restore_in_another_root(host_a, host_b, workdir):
    port = free_port()
    host_a("volume", "create", "data")
    host_a("run", "-d", "--name", "keeper", "-p", f"{port}:80", "-v", "data:/data", "busybox", "sh", "-c",
           "echo from-volume > /data/file; httpd -p 80 -h /var/www; " + COUNTER)
    info = track(host_a, "keeper")
    http_get(f"http://127.0.0.1:{port}/")
    host_a("exec", "keeper", "sh", "-c", "echo in-shm > /dev/shm/token")
    archive = str(workdir / "keeper.tar.zst")
    host_a("container", "checkpoint", "keeper", "--leave-running", "--file", archive)
    assert host_a.inspect("keeper")["State"]["Status"] == "running"
    assert http_get(f"http://127.0.0.1:{port}/") == "hello from busybox\n"

    # Same network, its address held by the original: the copy takes a new one,
    # as podman's copy does; it keeps the ID, with a netns of its own root's.
    other_port = free_port()
    restored = host_b("container", "restore", "--file", archive, "-p", f"{other_port}:80").stdout.strip()
    assert restored == info["Id"]
    host_b.seen.add(restored)
    moved = host_b.inspect("keeper")
    assert moved["NetworkSettings"]["IPAddress"] != info["NetworkSettings"]["IPAddress"]
    assert http_get(f"http://127.0.0.1:{other_port}/") == "hello from busybox\n"
    assert host_b("exec", "keeper", "cat", "/data/file").stdout == "from-volume\n"
    assert host_b("exec", "keeper", "cat", "/dev/shm/token").stdout == "in-shm\n"  # private /dev/shm travels
    assert host_b("logs", "keeper").stdout == host_a("logs", "keeper").stdout  # and so do the logs
    assert host_a("exec", "keeper", "cat", "/data/file").stdout == "from-volume\n"
    host_a("rm", "-f", "keeper")
    host_b("rm", "-f", "keeper")
    host_a("volume", "rm", "data")
    host_b("volume", "rm", "data")


def _freezer_state(pid: int) -> str:
    """The v1 freezer state of the cgroup process `pid` is in."""
    with open(f"/proc/{pid}/cgroup") as f:
        path = next(line.split(":", 2)[2].strip() for line in f if line.split(":")[1] == "freezer")
    with open(f"/sys/fs/cgroup/freezer{path}/freezer.state") as f:
        return f.read().strip()


def test_a_leave_running_export_freezes_the_container_from_criu_s_pre_dump_on(host_a, workdir):
    """The container freezes when CRIU is about to seize it (its pre-dump hook),
    not before runc and CRIU start; CRIU, finding it frozen, leaves it so until
    ferry has staged the files, and then it runs on."""
    host_a("run", "-d", "--name", "hold", "busybox", "sh", "-c", COUNTER)
    info = track(host_a, "hold")
    wait_for(lambda: count(host_a, "hold") > 3, "counter to count")
    stats = host_a.json("container", "checkpoint", "hold", "--leave-running", "--export",
                        str(workdir / "hold.tar.zst"), "--print-stats")
    phases = stats["container_statistics"][0]["ferry_phases"]
    assert phases["frozen_for_files"] > 0 and phases["runc_checkpoint"] > 0
    with open(os.path.join(host_a.root, "containers", info["Id"], "checkpoint-work", "dump.log")) as f:
        log = f.read()
    hook, seen = log.find("Running pre-dump scripts"), log.find("freezer.state=FROZEN")
    assert 0 <= hook < seen, log[:3000]   # CRIU found the cgroup frozen by the hook
    assert _freezer_state(host_a.inspect("hold")["State"]["Pid"]) == "THAWED"
    before = count(host_a, "hold")
    wait_for(lambda: count(host_a, "hold") > before, "the counter to go on after the export")
    host_a("rm", "-f", "hold")


def test_missing_image_is_named_and_image_archive_supplies_it(host_a, workdir, busybox_archive):
    host_a("run", "-d", "--name", "lonely", "busybox", "sleep", "600")
    track(host_a, "lonely")
    archive = str(workdir / "lonely.tar")
    host_a("container", "checkpoint", "lonely", "--file", archive)
    host_a("rm", "lonely")
    empty = Ferry(str(workdir / "host-empty"))
    empty.seen = set()
    try:
        missing = empty("container", "restore", "--file", archive, check=False)
        assert missing.returncode == 125 and "localhost/busybox:latest" in missing.stderr
        assert "sha256:" in missing.stderr and empty.names() == set()
        restored = empty("container", "restore", "--file", archive, "--image-archive", busybox_archive)
        empty.seen.add(restored.stdout.strip())
        assert empty.inspect("lonely")["State"]["Status"] == "running"
    finally:
        empty.remove_everything()
    assert leftovers(empty.root, empty.seen) == []


def _assert_nothing_made(ferry: Ferry, before: set[str]) -> None:
    assert ferry.names() == before
    assert len(os.listdir(os.path.join(ferry.root, "containers"))) == len(before)
    tmp = os.path.join(ferry.root, "tmp")
    assert not os.path.isdir(tmp) or os.listdir(tmp) == []


def test_hostile_archives_are_refused_with_nothing_created(host_a, workdir):
    host_a("run", "-d", "--name", "victim", "busybox", "sleep", "600")
    track(host_a, "victim")
    good = str(workdir / "victim.tar")
    host_a("container", "checkpoint", "victim", "--leave-running", "--file", good)
    data = open(good, "rb").read()
    before = host_a.names()

    truncated = str(workdir / "truncated.tar")
    open(truncated, "wb").write(data[: len(data) // 2])
    flipped = str(workdir / "flipped.tar")
    middle = len(data) // 2
    open(flipped, "wb").write(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    escaping = str(workdir / "escaping.tar")
    with tarfile.open(good) as src, tarfile.open(escaping, "w") as dst:
        for member in src:
            payload = src.extractfile(member) if member.isfile() else None
            if member.name == "config.dump":
                member.name = "../config.dump"
            dst.addfile(member, payload)
    for bad, needle in ((truncated, "truncated"), (flipped, ""), (escaping, "..")):
        done = host_a("container", "restore", "--file", bad, "--name", "evil", check=False)
        assert done.returncode == 125, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and needle in done.stderr
        _assert_nothing_made(host_a, before)
    assert not os.path.exists(os.path.join(os.path.dirname(host_a.root), "config.dump"))
    host_a("rm", "-f", "victim")


def test_failed_criu_restore_leaves_nothing_and_keeps_the_log(host_a, workdir):
    """A genuine archive whose restore CRIU itself cannot finish: the process
    holds a file of its root filesystem open, and --ignore-rootfs leaves it out."""
    host_a("run", "-d", "--name", "broken", "busybox", "sh", "-c",
           "echo held > /root/held; exec 3</root/held; exec sleep 600")
    track(host_a, "broken")
    wait_for(lambda: host_a("exec", "broken", "cat", "/root/held", check=False).stdout == "held\n", "the file")
    archive = str(workdir / "broken.tar")
    host_a("container", "checkpoint", "broken", "--file", archive)
    host_a("rm", "broken")
    before = host_a.names()
    done = host_a("container", "restore", "--file", archive, "--ignore-rootfs", check=False)
    assert done.returncode == 125
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "CRIU's log is kept at" in line
    kept = line.split("CRIU's log is kept at ")[1].rstrip(")")
    assert os.path.exists(kept) and kept.startswith(host_a.root)
    assert "held" in open(kept).read()
    assert host_a.names() == before
    assert len(os.listdir(os.path.join(host_a.root, "containers"))) == len(before)


def test_keep_and_ignore_flags(host_a, host_b, workdir):
    host_a("run", "-d", "--name", "flags", "-v", "flagvol:/vol", "busybox", "sh", "-c",
           "echo v > /vol/f; echo r > /root/f; sleep 600")
    info = track(host_a, "flags")
    wait_for(lambda: host_a("exec", "flags", "cat", "/root/f", check=False).stdout == "r\n", "files")
    archive = str(workdir / "flags.tar")
    host_a("container", "checkpoint", "flags", "--file", archive, "--keep", "--ignore-volumes")
    assert os.path.exists(os.path.join(host_a.root, "containers", info["Id"], "checkpoint", "inventory.img"))
    with tarfile.open(archive) as tar:
        assert not any(n.startswith("volumes/") for n in tar.getnames())
    # --keep left the local images: an in-place restore works as well.
    host_a("container", "restore", "flags")
    assert host_a("exec", "flags", "cat", "/root/f").stdout == "r\n"

    restored = host_b("container", "restore", "--file", archive, "--name", "flags-b",
                      "--ignore-static-ip", "--ignore-rootfs").stdout.strip()
    host_b.seen.add(restored)
    # The restored process still runs from memory; its rootfs changes and volume did not travel.
    assert host_b.inspect("flags-b")["State"]["Status"] == "running"
    assert host_b("exec", "flags-b", "cat", "/root/f", check=False).returncode != 0
    assert host_b("exec", "flags-b", "cat", "/vol/f", check=False).returncode != 0
    host_a("rm", "-f", "flags")
    host_b("rm", "-f", "flags-b")
    host_a("volume", "rm", "flagvol")
    host_b("volume", "rm", "flagvol")


def test_an_export_that_fails_after_the_dump_keeps_the_checkpoint(host_a, workdir):
    """The container is gone once CRIU has dumped it; a full disk under the
    archive must not take its state along."""
    full = workdir / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)], check=True)
    try:
        host_a("run", "-d", "--name", "squeezed", "busybox", "sh", "-c", COUNTER)
        track(host_a, "squeezed")
        wait_for(lambda: count(host_a, "squeezed") > 3, "counter to count")
        before = count(host_a, "squeezed")
        failed = host_a("container", "checkpoint", "squeezed", "--export", str(full / "c.tar.zst"), check=False)
        assert failed.returncode == 125
        assert failed.stderr.strip().splitlines() == [
            f"ferry: error: cannot write {full / 'c.tar.zst'}: No space left on device (hint: free space on the "
            f"filesystem of {full}; the checkpoint is kept: 'ferry container restore squeezed' brings the "
            "container back here)"]
        assert os.listdir(full) == []   # no half-written archive
        host_a("container", "restore", "squeezed")
        wait_for(lambda: count(host_a, "squeezed") > before, "the restored counter to go on")
    finally:
        host_a("rm", "-f", "squeezed", check=False)
        subprocess.run(["umount", str(full)], check=True)


def test_a_restore_that_hangs_is_stopped_and_leaves_nothing_running(host_a, tmp_path):
    """A runc or CRIU that never answers (CRIU 4.2.1 looped forever on a short
    pages image) is killed, with what it started, once ferry gives up on it;
    the local checkpoint stays restorable."""
    host_a("run", "-d", "--name", "stuck", "busybox", "sleep", "600")
    container_id = track(host_a, "stuck")["Id"]
    host_a("container", "checkpoint", "stuck")
    hanging = tmp_path / "criu"
    hanging.write_text("#!/bin/sh\nexec sleep 987654\n")
    hanging.chmod(0o755)
    env = {**os.environ, "FERRY_CRIU": str(hanging), "FERRY_START_TIMEOUT": "3"}
    done = subprocess.run([sys.executable, "-m", "ferry", "--root", host_a.root, "container", "restore", "stuck"],
                          env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 125, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "was stopped" in done.stderr
    assert subprocess.run(["pgrep", "-f", "sleep 987654"], capture_output=True).stdout == b""
    assert glob.glob(f"/sys/fs/cgroup/*/ferry*/{container_id}") == []
    host_a("container", "restore", "stuck")
    assert host_a.inspect("stuck")["State"]["Status"] == "running"
    host_a("rm", "-f", "stuck")


# ---- archives through pipes ------------------------------------------------------

def _ferry_argv(ferry: Ferry, *args: str) -> list[str]:
    return [sys.executable, "-m", "ferry", "--root", ferry.root, *args]


def _piped(writer: list[str], reader: list[str], *, tamper=None) -> tuple[subprocess.CompletedProcess, ...]:
    """writer | reader, or writer | tamper | reader: both ends' exit codes and output."""
    source = subprocess.Popen(writer, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    middle = None
    if tamper is not None:   # a thread that edits the bytes in flight
        pipe_r, pipe_w = os.pipe()
        middle = threading.Thread(target=tamper, args=(source.stdout, pipe_w))
        middle.start()
        sink_in = pipe_r
    else:
        sink_in = source.stdout
    try:
        sink = subprocess.run(reader, stdin=sink_in, capture_output=True, text=True, timeout=PIPE_TIMEOUT)
    finally:
        if middle is not None:
            os.close(pipe_r)
            middle.join()
        source.stdout.close()
        err = source.stderr.read().decode()
        source.wait(timeout=PIPE_TIMEOUT)
    return (subprocess.CompletedProcess(writer, source.returncode, "", err), sink)



@pytest.fixture(scope="module")
def keypair(workdir):
    private, public = str(workdir / "pipe.pem"), str(workdir / "pipe.pub.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private], check=True)
    subprocess.run(["openssl", "pkey", "-in", private, "-pubout", "-out", public], check=True)
    return private, public


def test_a_checkpoint_piped_into_a_restore_moves_the_container(host_a, host_b, keypair):
    """checkpoint --file /dev/stdout | restore --file -: a signed archive that
    never touches a disk, checked as a file is, and the service moves."""
    port = free_port()
    host_a("volume", "create", "piped")
    host_a("run", "-d", "--name", "piped", "-p", f"{port}:80", "-v", "piped:/data", "busybox", "sh", "-c",
           "echo from-volume > /data/file; httpd -p 80 -h /var/www; " + COUNTER)
    track(host_a, "piped")
    wait_for(lambda: count(host_a, "piped") > 3, "counter to count")
    host_a("exec", "piped", "sh", "-c", "echo in-rootfs > /root/note")
    before = count(host_a, "piped")
    other_port = free_port()
    source, sink = _piped(
        _ferry_argv(host_a, "container", "checkpoint", "piped", "--file", "/dev/stdout",
                    "--sign-key", keypair[0]),
        _ferry_argv(host_b, "container", "restore", "--file", "-", "--verify-key", keypair[1],
                    "--ignore-static-ip", "-p", f"{other_port}:80"))
    assert (source.returncode, sink.returncode) == (0, 0), (source.stderr, sink.stderr)
    said = source.stderr.strip().splitlines()
    assert said[-1] == "piped"   # its result line, off the archive's stdout
    assert "kept here too" in said[0] and "'ferry rm piped' drops it" in said[0]
    assert sink.returncode == 0, sink.stderr
    assert "not verified" not in sink.stderr
    host_b.seen.add(sink.stdout.strip())
    assert host_b.inspect("piped")["State"]["Status"] == "running"
    assert host_a.inspect("piped")["State"]["Status"] == "exited"
    wait_for(lambda: count(host_b, "piped") > before, "the moved counter to go on")
    assert count(host_b, "piped") >= before   # it went on from where it was, not from 0
    assert http_get(f"http://127.0.0.1:{other_port}/") == "hello from busybox\n"
    assert host_b("exec", "piped", "cat", "/data/file").stdout == "from-volume\n"
    assert host_b("exec", "piped", "cat", "/root/note").stdout == "in-rootfs\n"
    # nothing of the archive stayed on either host
    for ferry in (host_a, host_b):
        tmp = os.path.join(ferry.root, "tmp")
        assert not os.path.isdir(tmp) or os.listdir(tmp) == []
    host_a("rm", "piped")
    host_b("rm", "-f", "piped")
    host_a("volume", "rm", "piped")
    host_b("volume", "rm", "piped")


def _flip_one_byte_past(offset: int):
    def tamper(source, out_fd: int) -> None:
        seen = 0
        try:
            while data := source.read(1 << 16):
                if seen <= offset < seen + len(data):
                    i = offset - seen
                    data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
                seen += len(data)
                os.write(out_fd, data)
        except BrokenPipeError:
            pass
        finally:
            os.close(out_fd)
            source.read()   # let the writer finish
    return tamper


def test_a_stream_edited_in_flight_is_refused_and_the_checkpoint_stays(host_a, host_b):
    host_a("run", "-d", "--name", "edited", "busybox", "sh", "-c", COUNTER)
    track(host_a, "edited")
    wait_for(lambda: count(host_a, "edited") > 3, "counter to count")
    before = host_b.names()
    source, sink = _piped(
        _ferry_argv(host_a, "container", "checkpoint", "edited", "--file", "-", "--compress", "none"),
        _ferry_argv(host_b, "container", "restore", "--file", "-", "--ignore-static-ip"),
        tamper=_flip_one_byte_past(200_000))
    assert sink.returncode == 125
    assert len(sink.stderr.strip().splitlines()) == 1 and "checksum mismatch" in sink.stderr, sink.stderr
    _assert_nothing_made(host_b, before)
    # The writer's side: the archive went out (or its reader left early); either
    # way the container's state is a local checkpoint, restorable here.
    assert source.returncode in (0, 125), source.stderr
    assert host_a.inspect("edited")["State"]["Checkpointed"] is True
    host_a("container", "restore", "edited")
    assert host_a.inspect("edited")["State"]["Status"] == "running"
    host_a("rm", "-f", "edited")


def test_a_reader_that_leaves_keeps_the_checkpoint_and_a_cut_stream_makes_nothing(host_a, host_b):
    host_a("run", "-d", "--name", "cut", "busybox", "sh", "-c", COUNTER)
    track(host_a, "cut")
    wait_for(lambda: count(host_a, "cut") > 3, "counter to count")
    before = host_b.names()

    def cut_short(source, out_fd: int) -> None:
        os.write(out_fd, source.read(100_000))
        os.close(out_fd)
        source.close()   # the writer's next write fails: its reader is gone

    source, sink = _piped(
        _ferry_argv(host_a, "container", "checkpoint", "cut", "--file", "-", "--compress", "none"),
        _ferry_argv(host_b, "container", "restore", "--file", "-", "--ignore-static-ip"), tamper=cut_short)
    assert sink.returncode == 125 and len(sink.stderr.strip().splitlines()) == 1, sink.stderr
    assert "truncated" in sink.stderr
    _assert_nothing_made(host_b, before)
    assert source.returncode == 125
    lines = source.stderr.strip().splitlines()
    assert len(lines) == 1 and "Broken pipe" in lines[0] and "ferry container restore cut" in lines[0], lines
    host_a("container", "restore", "cut")
    assert host_a.inspect("cut")["State"]["Status"] == "running"
    host_a("rm", "-f", "cut")


def test_a_fifo_carries_an_archive_and_a_terminal_is_refused(host_a, host_b, workdir):
    host_a("run", "-d", "--name", "fifo", "busybox", "sleep", "600")
    track(host_a, "fifo")
    fifo = str(workdir / "archive.fifo")
    os.mkfifo(fifo)
    reader = subprocess.Popen(_ferry_argv(host_b, "container", "restore", "--file", fifo, "--ignore-static-ip"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    host_a("container", "checkpoint", "fifo", "--leave-running", "--file", fifo)
    out, err = reader.communicate(timeout=PIPE_TIMEOUT)
    assert reader.returncode == 0, err
    host_b.seen.add(out.strip())
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)   # written into, never replaced
    assert host_b.inspect("fifo")["State"]["Status"] == "running"
    assert host_a.inspect("fifo")["State"]["Status"] == "running"
    host_b("rm", "-f", "fifo")
    # an archive is never written to, nor read from, a terminal
    import pty
    leader, follower = pty.openpty()
    try:
        for args in (("container", "checkpoint", "fifo", "--file", "-"), ("container", "restore", "--file", "-")):
            done = subprocess.run(_ferry_argv(host_a, *args), stdin=follower, stdout=follower,
                                  stderr=subprocess.PIPE, text=True, timeout=PIPE_TIMEOUT)
            assert done.returncode == 125 and "terminal" in done.stderr, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1
    finally:
        os.close(leader)
        os.close(follower)
    assert host_a.inspect("fifo")["State"]["Status"] == "running"
    host_a("rm", "-f", "fifo")
