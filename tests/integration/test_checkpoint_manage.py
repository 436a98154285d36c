"""Managing checkpoints on real runc and CRIU (issue 19): `checkpoint ls`, `rm`
and `prune`; several --leave-running checkpoints of one container, the latest
restored after a crash and `--checkpoint ID` another; periodic checkpoints run
by the container's monitor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support.cli import Ferry, busybox_root, wait_for
from tests.support.counter import COUNTER, count


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with busybox_root(tmp_path_factory.mktemp("manage")) as ferry:
        yield ferry


def _run(host: Ferry, name: str) -> str:
    container_id = host("run", "-d", "--name", name, "busybox", "sh", "-c", COUNTER).stdout.strip()
    host.seen.add(container_id)
    wait_for(lambda: count(host, name) > 2, f"{name} to count")
    return container_id


def _listed(host: Ferry, *names: str) -> list[dict]:
    return host.json("checkpoint", "ls", *names, "--format", "json")


def _crash(host: Ferry, name: str) -> None:
    """SIGKILL to the container's processes: its monitor records the exit, as after a crash."""
    host("kill", "-s", "KILL", name)
    wait_for(lambda: host.inspect(name)["State"]["Status"] == "exited", f"{name} to exit")


def _checkpointing(container_id: str) -> bool:
    """Whether a `ferry container checkpoint` of this container still runs (a scheduled one)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"checkpoint" in argv and container_id.encode() in argv:
            return True
    return False


def _one_error(done, needle: str) -> None:
    assert done.returncode == 125, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: error:") and needle in lines[0], done.stderr


def test_periodic_checkpoints_keep_the_last_three_and_bring_a_crashed_container_back(host):
    container_id = _run(host, "tick")
    host("container", "checkpoint", "tick", "--every", "2s", "--keep-last", "3")
    assert len(_listed(host, "tick")) == 1   # the command took the first one itself
    seen: set[str] = set()

    def taken() -> int:
        seen.update(e["Id"] for e in _listed(host, "tick"))
        return len(seen)
    wait_for(lambda: taken() >= 4, "four checkpoints, three from the monitor", deadline=90)
    written = count(host, "tick")   # in its memory (and /tmp) before the next checkpoint
    before = len(seen)
    wait_for(lambda: taken() > before, "one more checkpoint", deadline=60)
    _crash(host, "tick")
    wait_for(lambda: not _checkpointing(container_id), "a scheduled checkpoint to end")
    kept = _listed(host, "tick")
    assert len(kept) == 3 and len(seen) >= 5
    assert all(e["Kind"] == "local" and e["LeaveRunning"] and e["Container"] == "tick" for e in kept)
    assert all(os.stat(e["Path"]).st_mode & 0o777 == 0o600 for e in kept)
    [row] = [c for c in host.json("ps", "-a", "--format", "json") if c["Names"] == ["tick"]]
    assert row["Status"].startswith("Exited (137)") and row["Status"].endswith("(restorable)")
    assert host("container", "restore", "tick").stdout.strip() == "tick"   # as podman: the name as given
    info = host.inspect("tick")
    assert info["Id"] == container_id and info["State"]["Status"] == "running"
    assert count(host, "tick") >= written   # the count went on from the latest checkpoint's
    # The schedule outlives the crash: the restored container's monitor runs it.
    newest = max(e["Created"] for e in kept)
    wait_for(lambda: any(e["Created"] > newest for e in _listed(host, "tick")), "a checkpoint after the restore",
             deadline=60)
    assert host("container", "checkpoint", "tick", "--every", "0").stdout.strip() == "tick"
    host("rm", "-f", "tick")
    wait_for(lambda: not _checkpointing(container_id), "a scheduled checkpoint to end")
    assert _listed(host) == [] and not os.path.exists(os.path.join(host.root, "checkpoints", container_id))


def test_checkpoint_id_restores_an_older_one_with_its_own_root_filesystem(host):
    container_id = _run(host, "layers")
    host("container", "checkpoint", "-R", "layers")
    host("exec", "layers", "touch", "/marker")
    host("container", "checkpoint", "-R", "layers")
    newest, oldest = _listed(host, "layers")
    assert newest["Created"] > oldest["Created"]
    refused = host("container", "restore", "layers", check=False)
    _one_error(refused, "container 'layers' is running")
    _crash(host, "layers")
    host("container", "restore", "--checkpoint", oldest["Id"][:12], "layers")
    assert host.inspect("layers")["Id"] == container_id
    assert host("exec", "layers", "test", "-e", "/marker", check=False).returncode == 1
    _crash(host, "layers")
    host("container", "restore", "layers")   # the latest
    assert host("exec", "layers", "test", "-e", "/marker", check=False).returncode == 0
    # Under another name, a checkpoint makes a copy beside its container.
    host("container", "restore", "--checkpoint", newest["Id"], "--name", "layers-copy", "--ignore-static-ip")
    copy = host.inspect("layers-copy")
    host.seen.add(copy["Id"])
    assert copy["Id"] != container_id and copy["State"]["Status"] == "running"
    host("rm", "-f", "layers", "layers-copy")


def test_ls_rm_and_prune(host):
    _run(host, "kept")
    archive = str(host.workdir / "kept.tar.zst")
    host("container", "checkpoint", "-R", "kept", "--file", archive)
    host("container", "checkpoint", "-R", "kept")
    host("container", "checkpoint", "kept")   # stops it: its own, in place
    in_place, stored, exported = _listed(host, "kept")
    assert (in_place["Kind"], in_place["Id"], in_place["LeaveRunning"]) == ("local", host.inspect("kept")["Id"],
                                                                           False)
    assert (stored["Kind"], exported["Kind"], exported["Path"]) == ("local", "archive", archive)
    assert exported["Size"] == os.path.getsize(archive) and in_place["Size"] > 0
    table = host("checkpoint", "ls").stdout.splitlines()
    assert table[0].split() == ["CHECKPOINT", "ID", "CONTAINER", "IMAGE", "CREATED", "SIZE", "KIND", "SIGNED",
                                "ENCRYPTED", "PATH"]
    assert len(table) == 4 and table[3].split()[0] == exported["Id"][:12] and table[3].endswith(archive)
    assert host("checkpoint", "ls", "-q").stdout.split() == [e["Id"][:12] for e in (in_place, stored, exported)]
    _one_error(host("checkpoint", "ls", "nope", check=False), "no checkpoints of container 'nope'")
    _one_error(host("checkpoint", "rm", check=False), "give checkpoint IDs, or --all")
    _one_error(host("checkpoint", "rm", "ffffffff", check=False), "no such checkpoint 'ffffffff'")
    assert host("checkpoint", "rm", exported["Id"][:12]).stdout.strip() == exported["Id"][:12]
    assert not os.path.exists(archive)
    assert host("checkpoint", "prune", "--keep-last", "1", "kept").stdout.split() == [stored["Id"]]
    assert [e["Id"] for e in _listed(host)] == [in_place["Id"]]
    host("container", "restore", "kept")   # the one kept: the latest
    assert host.inspect("kept")["State"]["Status"] == "running" and _listed(host) == []
    host("rm", "-f", "kept")


def test_a_killed_R_checkpoint_leaves_a_listed_checkpoint_or_nothing(host):
    container_id = _run(host, "cut")
    directory = os.path.join(host.root, "checkpoints", container_id)
    for delay in (0.1, 0.3, 0.6, 1.2):
        command = subprocess.Popen([sys.executable, "-m", "ferry", "--root", host.root, "container", "checkpoint",
                                    "-R", "cut"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            command.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            command.send_signal(signal.SIGKILL)
            command.wait()
        assert host.inspect("cut")["State"]["Status"] == "running"   # -R: it never stopped
    listed = sorted(e["Path"] for e in _listed(host, "cut"))
    assert all(os.path.dirname(p) == directory for p in listed)
    host("system", "prune", "-f")   # sweeps what a kill left: temp files, records of archives never written
    assert sorted(e["Path"] for e in _listed(host, "cut")) == listed
    on_disk = sorted(os.path.join(directory, n) for n in os.listdir(directory)) if os.path.isdir(directory) else []
    assert on_disk == listed
    _one_error(host("container", "restore", "cut", check=False), "container 'cut' is running")
    host("rm", "-f", "cut")
    assert not os.path.exists(directory)


VOLUME_COUNTER = ("i=0; while true; do i=$((i+1)); echo $i > /data/count.new; "
                  "mv -f /data/count.new /data/count; sleep 0.05; done")


def _volume_count(host: Ferry, volume: str) -> int:
    path = os.path.join(host.root, "volumes", volume, "_data", "count")
    return int(open(path).read().strip() or 0)


def test_a_crashed_container_comes_back_with_its_volume_as_its_checkpoint_saw_it(host):
    """The memory restored saw the volume's files at the checkpoint: the volume
    rolls back with it, as the root filesystem does. One another container
    mounts too is refused, unless -v re-states it as it is here."""
    container_id = host("run", "-d", "--name", "keeper", "-v", "keeperdata:/data", "busybox", "sh", "-c",
                        VOLUME_COUNTER).stdout.strip()
    host.seen.add(container_id)
    wait_for(lambda: os.path.exists(os.path.join(host.root, "volumes", "keeperdata", "_data", "count"))
             and _volume_count(host, "keeperdata") > 5, "keeper to count into its volume")
    host("container", "checkpoint", "keeper", "-R")
    [checkpoint] = _listed(host, "keeper")
    wait_for(lambda: _volume_count(host, "keeperdata") > 60, "keeper to count on")
    data = os.path.join(host.root, "volumes", "keeperdata", "_data")
    with open(os.path.join(data, "later"), "w") as f:   # written after the checkpoint
        f.write("after\n")
    _crash(host, "keeper")
    after_crash = _volume_count(host, "keeperdata")
    # Another container shares the volume: rolling it back would change its files.
    sharer = host("run", "-d", "--name", "sharer", "-v", "keeperdata:/shared", "busybox", "sleep", "600").stdout.strip()
    host.seen.add(sharer)
    _one_error(host("container", "restore", "keeper", check=False), "is mounted by sharer too")
    assert host.inspect("keeper")["State"]["Status"] == "exited" and _volume_count(host, "keeperdata") == after_crash
    host("rm", "-f", "sharer")
    host("container", "restore", "keeper")
    assert host.inspect("keeper")["State"]["Status"] == "running"
    rolled_back = host("exec", "keeper", "cat", "/data/count").stdout.strip()
    assert int(rolled_back) < after_crash   # the checkpoint's count (or a few steps on), not the crash's
    assert not os.path.exists(os.path.join(data, "later"))
    assert os.listdir(os.path.dirname(data)) == ["_data"]   # what it held before is not kept once it runs
    # -v re-states the volume as it is here: its files stay.
    with open(os.path.join(data, "later"), "w") as f:
        f.write("after\n")
    _crash(host, "keeper")
    host("container", "restore", "keeper", "--checkpoint", checkpoint["Id"], "-v", "keeperdata:/data")
    assert host("exec", "keeper", "cat", "/data/later").stdout == "after\n"
    host("rm", "-f", "keeper")
    host("volume", "rm", "keeperdata")
