"""run's host config flags on real runc and CRIU (issue 20): -m, --cpus,
--ulimit, --cap-add/--cap-drop, --privileged, --read-only, --tmpfs, --mount and
--ipc host, each seen from inside the container, again after a checkpoint and
an in-place restore, and after an export restored under a new name; the
restore rule for an archive asking for privileges; exit codes beside podman's."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ferry.util.hostspec import CAPABILITIES, DEFAULT_CAPABILITIES, bounding_set, host_hard_limit
from tests.support.cli import Ferry, busybox_root, wait_for
from tests.support.forgery import edit_json, repack_v2, unpack


@pytest.fixture(scope="module")
def ferry(tmp_path_factory):
    with busybox_root(tmp_path_factory.mktemp("hostflags")) as cli:
        yield cli


def run(ferry: Ferry, name: str, *flags: str, command: tuple[str, ...] = ("sleep", "1000")) -> str:
    cid = ferry("run", "-d", "--name", name, *flags, "busybox", *command).stdout.strip()
    ferry.seen.add(cid)
    return cid


def sh(ferry: Ferry, name: str, script: str, check: bool = True):
    return ferry("exec", name, "sh", "-c", script, check=check)


def restored_anew(ferry: Ferry, name: str, new: str, *flags: str) -> None:
    """An export of `name` (which stops it) restored as `new`, waiting until it runs."""
    archive = os.path.join(str(ferry.workdir), f"{name}.tar")
    ferry("container", "checkpoint", name, "--file", archive)
    done = ferry("container", "restore", "--name", new, "--file", archive, *flags)
    ferry.seen.add(done.stdout.strip())
    wait_for(lambda: ferry.inspect(new)["State"]["Status"] == "running", f"{new} running")


def checkpointed_and_restored(ferry: Ferry, name: str) -> None:
    ferry("container", "checkpoint", name)
    assert ferry.inspect(name)["State"]["Status"] != "running"
    ferry("container", "restore", name)
    wait_for(lambda: ferry.inspect(name)["State"]["Status"] == "running", f"{name} running again")


def mask(names) -> int:
    return sum(1 << CAPABILITIES.index(n) for n in names)


def cap_sets(ferry: Ferry, name: str, pid: str = "self") -> dict[str, int]:
    lines = sh(ferry, name, f"grep ^Cap /proc/{pid}/status").stdout.splitlines()
    return {line.split(":")[0]: int(line.split()[1], 16) for line in lines}


def tmpfs_mounts(ferry: Ferry, name: str) -> dict[str, str]:
    found = {}
    for line in sh(ferry, name, "cat /proc/mounts").stdout.splitlines():
        source, point, kind, options = line.split()[:4]
        if kind == "tmpfs":
            found[point] = options
    return found


# ---- limits: -m, --cpus, --ulimit, --read-only, --tmpfs, --mount type=tmpfs ------------------------

LIMITS = ("-m", "64m", "--cpus", "0.5", "--ulimit", "nofile=500:600", "--read-only",
          "--tmpfs", "/scratch:size=8m", "--mount", "type=tmpfs,dst=/t2,tmpfs-size=4m,tmpfs-mode=700")


def nofile(ferry: Ferry, name: str) -> tuple[str, str]:
    """The container's own process's RLIMIT_NOFILE (soft, hard). Not an exec'd
    shell's `ulimit -n`: runc 1.1.5's exec races Go's runtime, which raises
    the soft limit to the hard one, so about half of podman's execs here see
    600 for nofile=500:600 too."""
    line = sh(ferry, name, "grep 'open files' /proc/1/limits").stdout.split()
    return line[3], line[4]


def check_limits(ferry: Ferry, name: str) -> None:
    assert sh(ferry, name, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes").stdout.strip() == str(64 << 20)
    assert sh(ferry, name, "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us"
              ).stdout.split() == ["50000", "100000"]
    assert nofile(ferry, name) == ("500", "600")
    write = sh(ferry, name, "touch /in-root", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    mounts = tmpfs_mounts(ferry, name)
    assert "size=8192k" in mounts["/scratch"] and "nosuid" in mounts["/scratch"] and "nodev" in mounts["/scratch"]
    assert "size=4096k" in mounts["/t2"] and "mode=700" in mounts["/t2"]
    for path in ("/run", "/tmp", "/var/tmp"):   # podman's --read-only-tmpfs
        assert path in mounts
    sh(ferry, name, "touch /tmp/ok /run/ok /var/tmp/ok")
    assert sh(ferry, name, "echo x >> /etc/hosts", check=False).returncode != 0   # podman's: read-only too


def test_limits_hold_inside_and_after_checkpoint_restore_and_export(ferry):
    run(ferry, "lim", *LIMITS)
    check_limits(ferry, "lim")
    sh(ferry, "lim", "echo kept > /scratch/f")
    host = ferry.inspect("lim")["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"], host["CpuQuota"], host["CpuPeriod"]) == (
        64 << 20, 128 << 20, 500_000_000, 50000, 100000)
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert host["Tmpfs"]["/scratch"] == "size=8m,rw,rprivate,nosuid,nodev,tmpcopyup"
    assert set(host["Tmpfs"]) == {"/scratch", "/t2", "/run", "/tmp", "/var/tmp"}
    assert {"Name": "RLIMIT_NOFILE", "Soft": 500, "Hard": 600} in host["Ulimits"]
    assert not [m for m in ferry.inspect("lim")["Mounts"] if m["Destination"] in host["Tmpfs"]]   # as podman

    checkpointed_and_restored(ferry, "lim")
    check_limits(ferry, "lim")
    assert sh(ferry, "lim", "cat /scratch/f").stdout == "kept\n"   # CRIU carries a tmpfs's content

    # Limits only restrict: an archive's are applied without any grant.
    restored_anew(ferry, "lim", "lim2")
    check_limits(ferry, "lim2")
    assert sh(ferry, "lim2", "cat /scratch/f").stdout == "kept\n"
    for name in ("lim", "lim2"):
        ferry("rm", "-f", name)


def test_read_only_tmpfs_false_leaves_the_whole_root_read_only(ferry):
    run(ferry, "ro", "--read-only", "--read-only-tmpfs=false")
    assert not {"/run", "/tmp", "/var/tmp"} & set(tmpfs_mounts(ferry, "ro"))
    assert sh(ferry, "ro", "touch /tmp/x", check=False).returncode != 0
    assert ferry.inspect("ro")["HostConfig"]["Tmpfs"] == {}
    ferry("rm", "-f", "ro")


def test_a_tmpfs_at_dev_shm_replaces_ferrys_through_checkpoint_and_restore(ferry):
    run(ferry, "shm", "--tmpfs", "/dev/shm:size=1m")
    sh(ferry, "shm", "echo kept > /dev/shm/f")
    for _ in range(2):
        shm = [line for line in sh(ferry, "shm", "cat /proc/mounts").stdout.splitlines()
               if line.split()[1] == "/dev/shm"]
        assert len(shm) == 1 and "size=1024k" in shm[0]
        assert sh(ferry, "shm", "cat /dev/shm/f").stdout == "kept\n"
        checkpointed_and_restored(ferry, "shm")
    ferry("rm", "-f", "shm")


def test_a_ulimit_above_the_hosts_hard_limit_is_refused_as_podman_fails_on_it(ferry):
    allowed = host_hard_limit("RLIMIT_NOFILE")
    if allowed is None:
        pytest.skip("this host sets no hard limit on RLIMIT_NOFILE")
    before = ferry.names()
    done = ferry("run", "-d", "--name", "toohigh", "--ulimit", f"nofile={allowed + 1}:{allowed + 1}", "busybox",
                 "true", check=False)
    assert done.returncode == 126, done.stderr   # podman's runc: "error setting rlimits", 126
    assert len(done.stderr.strip().splitlines()) == 1 and f"at most {allowed}" in done.stderr
    assert ferry.names() == before
    run(ferry, "athigh", "--ulimit", f"nofile={allowed}:{allowed}")
    assert nofile(ferry, "athigh") == (str(allowed), str(allowed))
    ferry("rm", "-f", "athigh")


# ---- privileges: --cap-add/--cap-drop, --privileged, --ipc host ------------------------------------

def test_capabilities_added_and_dropped_hold_after_checkpoint_and_need_a_grant_from_an_archive(ferry):
    run(ferry, "caps", "--cap-add", "net_admin", "--cap-add", "CAP_SYS_PTRACE", "--cap-drop", "chown")
    expected = mask((set(DEFAULT_CAPABILITIES) | {"CAP_NET_ADMIN", "CAP_SYS_PTRACE"}) - {"CAP_CHOWN"})
    sets = cap_sets(ferry, "caps")
    assert sets["CapEff"] == sets["CapBnd"] == sets["CapPrm"] == expected
    host = ferry.inspect("caps")["HostConfig"]
    assert host["CapAdd"] == ["CAP_NET_ADMIN", "CAP_SYS_PTRACE"]
    assert host["CapDrop"] == ["CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_MKNOD", "CAP_NET_RAW"]
    checkpointed_and_restored(ferry, "caps")   # this root's own checkpoint: granted
    assert cap_sets(ferry, "caps")["CapEff"] == cap_sets(ferry, "caps", "1")["CapEff"] == expected

    archive = os.path.join(str(ferry.workdir), "caps.tar")
    ferry("container", "checkpoint", "caps", "--file", archive)
    before = ferry.names()
    done = ferry("container", "restore", "--name", "caps2", "--file", archive, check=False)
    assert done.returncode == 125
    (line,) = done.stderr.strip().splitlines()
    assert "--cap-add CAP_NET_ADMIN,CAP_SYS_PTRACE" in line and "--allow-privileges" in line
    assert ferry.names() == before
    granted = ferry("container", "restore", "--name", "caps2", "--file", archive, "--allow-privileges")
    ferry.seen.add(granted.stdout.strip())
    assert cap_sets(ferry, "caps2")["CapEff"] == cap_sets(ferry, "caps2", "1")["CapEff"] == expected
    for name in ("caps", "caps2"):
        ferry("rm", "-f", name)


def test_cap_drop_all_keeps_only_what_is_added_and_restores_without_a_grant(ferry):
    run(ferry, "few", "--cap-drop", "ALL", "--cap-add", "chown")
    assert cap_sets(ferry, "few")["CapEff"] == mask(["CAP_CHOWN"])
    restored_anew(ferry, "few", "few2")   # fewer capabilities than ferry's default: nothing to grant
    assert cap_sets(ferry, "few2")["CapEff"] == mask(["CAP_CHOWN"])
    for name in ("few", "few2"):
        ferry("rm", "-f", name)


def check_privileged(ferry: Ferry, name: str) -> None:
    sets = cap_sets(ferry, name)
    assert sets["CapEff"] == sets["CapBnd"] == cap_sets(ferry, name, "1")["CapEff"] == mask(bounding_set())
    assert sh(ferry, name, "grep ^Seccomp: /proc/self/status").stdout.split()[1] == "0"
    sys_options = [line.split()[3] for line in sh(ferry, name, "cat /proc/mounts").stdout.splitlines()
                   if line.split()[1] == "/sys"]
    assert sys_options and sys_options[0].startswith("rw")


def test_privileged_holds_after_checkpoint_and_export_with_a_grant(ferry):
    run(ferry, "priv", "--privileged")
    check_privileged(ferry, "priv")
    host = ferry.inspect("priv")["HostConfig"]
    assert host["Privileged"] is True and host["CapAdd"] == []
    assert host["CapDrop"] == sorted(set(CAPABILITIES) - bounding_set())   # podman: CAP_SYS_RESOURCE here
    checkpointed_and_restored(ferry, "priv")
    check_privileged(ferry, "priv")
    restored_anew(ferry, "priv", "priv2", "--allow-privileges")
    check_privileged(ferry, "priv2")
    for name in ("priv", "priv2"):
        ferry("rm", "-f", name)


def test_ipc_host_shares_the_hosts_ipc_namespace_after_checkpoint_and_export(ferry):
    host_ipc = os.readlink("/proc/self/ns/ipc")

    def ipc_of(name: str) -> str:
        return sh(ferry, name, "ls -l /proc/self/ns/ipc").stdout.split("-> ")[1].strip()
    run(ferry, "ipch", "--ipc", "host")
    run(ferry, "ipcp")
    assert ipc_of("ipch") == host_ipc and ipc_of("ipcp") != host_ipc
    assert ferry.inspect("ipch")["HostConfig"]["IpcMode"] == "host"
    checkpointed_and_restored(ferry, "ipch")
    assert ipc_of("ipch") == host_ipc
    restored_anew(ferry, "ipch", "ipch2", "--allow-privileges")
    assert ipc_of("ipch2") == host_ipc
    for name in ("ipch", "ipch2", "ipcp"):
        ferry("rm", "-f", name)


# ---- --mount's binds and volumes --------------------------------------------------------------------

def test_mount_binds_and_volumes_are_volumes_and_restore_under_the_bind_rule(ferry):
    shared = os.path.join(str(ferry.workdir), "shared")
    os.makedirs(shared, exist_ok=True)
    with open(os.path.join(shared, "f"), "w") as f:
        f.write("from the host\n")
    run(ferry, "mnt", "--mount", f"type=bind,src={shared},dst=/shared,ro",
        "--mount", "type=volume,source=hfvol,target=/vol")
    assert sh(ferry, "mnt", "cat /shared/f").stdout == "from the host\n"
    assert sh(ferry, "mnt", "touch /shared/g", check=False).returncode != 0
    sh(ferry, "mnt", "echo in-volume > /vol/v")
    mounts = {m["Destination"]: m for m in ferry.inspect("mnt")["Mounts"]}
    assert mounts["/shared"]["Source"] == shared and mounts["/shared"]["RW"] is False
    assert mounts["/vol"]["Name"] == "hfvol"
    checkpointed_and_restored(ferry, "mnt")
    assert sh(ferry, "mnt", "cat /shared/f /vol/v").stdout == "from the host\nin-volume\n"
    archive = os.path.join(str(ferry.workdir), "mnt.tar")
    ferry("container", "checkpoint", "mnt", "--file", archive)
    ferry("rm", "-f", "mnt")
    ferry("volume", "rm", "hfvol")
    done = ferry("container", "restore", "--name", "mnt2", "--file", archive, check=False)
    assert done.returncode == 125 and f"{shared} at /shared" in done.stderr and "--allow-bind-mounts" in done.stderr
    granted = ferry("container", "restore", "--name", "mnt2", "--file", archive, "--allow-bind-mounts")
    ferry.seen.add(granted.stdout.strip())
    assert sh(ferry, "mnt2", "cat /shared/f /vol/v").stdout == "from the host\nin-volume\n"
    ferry("rm", "-f", "mnt2")
    ferry("volume", "rm", "hfvol")


# ---- a foreign archive asking for privileges ----------------------------------------------------------

def forged(ferry: Ferry, label: str, host: dict) -> str:
    """An export of a plain container whose record was edited to ask for `host`
    (digests recomputed, unsigned: anyone could have written it)."""
    archive = os.path.join(str(ferry.workdir), f"plain-{label}.tar")
    run(ferry, f"plain-{label}")
    ferry("container", "checkpoint", f"plain-{label}", "--file", archive)
    ferry("rm", "-f", f"plain-{label}")
    directory = os.path.join(str(ferry.workdir), f"unpacked-{label}")
    head = unpack(archive, directory)
    edit_json(directory, "ferry-config.json", lambda d: d["config"].update(host=host))
    return repack_v2(directory, head, os.path.join(str(ferry.workdir), f"forged-{label}.tar"))


@pytest.mark.parametrize("host, asked, images", [
    ({"cap_add": ["CAP_SYS_ADMIN"]}, "--cap-add CAP_SYS_ADMIN", ""),
    # Granted, the spec then differs from what the images were dumped under,
    # and the image check refuses them as it refuses any mismatch:
    ({"privileged": True}, "--privileged", "mountpoints"),   # masked paths the spec no longer has
    ({"ipc": "host"}, "--ipc host", "ipc namespace"),        # a namespace the spec no longer creates
], ids=["cap-add", "privileged", "ipc-host"])
def test_a_foreign_archive_asking_for_privileges_is_refused_unless_allowed(ferry, request, host, asked, images):
    archive = forged(ferry, request.node.callspec.id, host)
    before = ferry.names()
    done = ferry("container", "restore", "--name", "asks", "--file", archive, check=False)
    assert done.returncode == 125, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert asked in line and "--allow-privileges" in line and "Traceback" not in done.stderr
    assert ferry.names() == before
    granted = ferry("container", "restore", "--name", "asks", "--file", archive, "--allow-privileges",
                    check=not images)
    if images:
        assert granted.returncode == 125 and images in granted.stderr and "CRIU image" in granted.stderr
        assert ferry.names() == before
        return
    ferry.seen.add(granted.stdout.strip())
    # The images were dumped with ferry's default capabilities: CRIU restores
    # those; what is exec'd gets the spec's, which the user granted.
    assert cap_sets(ferry, "asks", "1")["CapEff"] == mask(DEFAULT_CAPABILITIES)
    assert cap_sets(ferry, "asks")["CapEff"] == mask(set(DEFAULT_CAPABILITIES) | {"CAP_SYS_ADMIN"})
    ferry("rm", "-f", "asks")


@pytest.mark.parametrize("host, needle", [
    ({"tmpfs": [{"destination": "/x", "options": ["exec,suid"]}]}, "not one ferry allows"),
    ({"tmpfs": [{"destination": "/../etc", "options": []}]}, "normalised"),
    ({"cap_add": ["CAP_EVERYTHING"]}, "not a capability"),
    ({"memory": -5}, "host.memory"),
    ({"sysctl": {"kernel.x": "1"}}, "unknown"),
], ids=["tmpfs-option", "tmpfs-dest", "cap", "memory", "unknown-key"])
def test_a_forged_host_config_is_refused_in_one_line(ferry, request, host, needle):
    archive = forged(ferry, request.node.callspec.id, host)
    before = ferry.names()
    done = ferry("container", "restore", "--name", "bad", "--file", archive, "--allow-privileges", check=False)
    assert done.returncode == 125
    (line,) = done.stderr.strip().splitlines()
    assert needle in line and line.startswith("ferry: error:")
    assert ferry.names() == before


# ---- beside podman ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    from tests.support.podman import busybox_sides
    with busybox_sides("ferry-hf-") as pair:
        yield pair


@pytest.mark.parametrize("flags", [
    ("-m", "foo"), ("-m", "512x"), ("-m", "-1"), ("--memory", "1.5g"),
    ("--cpus", "abc"), ("--cpus", "0.001"), ("--cpus", "0"),
    ("--ulimit", "nofile=abc"), ("--ulimit", "bogus=1:2"), ("--ulimit", "nofile=10:5"), ("--ulimit", "nofile"),
    ("--ulimit", "nofile=30000:30000"), ("--ulimit", "core=-1"),
    ("--cap-add", "bogus"), ("--cap-drop", "bogus"), ("--cap-add", "ALL"), ("--cap-drop", "all"),
    ("--tmpfs", "relative"), ("--tmpfs", "/x:bogus=1"), ("--tmpfs", "/x/../y"), ("--tmpfs", "/dev/shm:size=1m"),
    ("-v", "/tmp:/x", "--tmpfs", "/x"),
    ("--mount", "type=foo,dst=/x"), ("--mount", "type=tmpfs"), ("--mount", "dst=/x"),
    ("--mount", "type=tmpfs,dst=/x,bogus=1"), ("--mount", "type=bind,src=/nonexistent-hf,dst=/x"),
    ("--ipc", "bogus"), ("--ipc", "private"), ("--ipc", "host"),
    ("--read-only", "--read-only-tmpfs=false"), ("--privileged",),
], ids=lambda f: " ".join(f))
def test_the_same_flags_exit_with_podmans_code(sides, flags):
    theirs, ours = sides.both("run", "--rm", *flags, "busybox", "true", run_flags=True)
    assert ours.returncode == theirs.returncode, (flags, theirs.stderr, ours.stderr)
    assert len(ours.stderr.strip().splitlines()) <= 1, ours.stderr


INSPECTED = ("Memory", "MemorySwap", "NanoCpus", "CpuQuota", "CpuPeriod", "CapAdd", "CapDrop", "Privileged",
             "ReadonlyRootfs", "Tmpfs", "Ulimits")


@pytest.mark.parametrize("flags", [
    ("-m", "512m", "--cpus", "1.5", "--ulimit", "nofile=500:600", "--ulimit", "nproc=1000:1000",
     "--cap-add", "net_admin", "--cap-drop", "CAP_CHOWN", "--read-only", "--tmpfs", "/scratch:size=10m,mode=1777",
     "--mount", "type=tmpfs,dst=/t2,tmpfs-size=5m,tmpfs-mode=700"),
    ("--privileged", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"),
    ("--cap-add", "ALL", "--cap-drop", "net_raw", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"),
], ids=["limits", "privileged", "all-caps"])
def test_inspect_states_the_host_config_as_podman_does(sides, flags):
    name = f"hf-{len(flags)}"
    theirs, ours = sides.both("run", "-d", "--name", name, *flags, "busybox", "sleep", "1000", run_flags=True)
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    theirs, ours = sides.both("inspect", name)
    podman_host, ferry_host = json.loads(theirs.stdout)[0]["HostConfig"], json.loads(ours.stdout)[0]["HostConfig"]
    assert {k: ferry_host[k] for k in INSPECTED} == {k: podman_host[k] for k in INSPECTED}
    subprocess.run(sides.podman.argv("rm", "-f", "-t", "0", name), capture_output=True, timeout=120)
    sides.ferry("rm", "-f", name)


def test_a_podman_archive_with_tmpfs_and_a_read_only_root_restores_as_run_would_make_it(sides, tmp_path):
    """Before, ferry refused any tmpfs in podman's spec.dump."""
    name = "hf-podman-tmpfs"
    archive = str(tmp_path / "podman.tar.gz")

    def podman(*args: str) -> None:
        done = subprocess.run(sides.podman.argv(*args), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (args, done.stderr)
    podman("run", "-d", "--name", name, *sides.podman.run_flags(), "--read-only", "--tmpfs", "/scratch:size=8m",
           "busybox", "sleep", "1000")
    podman("exec", name, "sh", "-c", "echo from-podman > /scratch/f")
    podman("container", "checkpoint", name, "--export", archive)
    podman("rm", "-f", "-t", "0", name)
    restored = sides.ferry("container", "restore", "--import", archive, "--name", name)
    try:
        assert sides.ferry("exec", name, "cat", "/scratch/f").stdout == "from-podman\n"
        assert sides.ferry("exec", name, "touch", "/x", check=False).returncode != 0
        host = sides.ferry.inspect(name)["HostConfig"]
        assert host["ReadonlyRootfs"] is True and {"/scratch", "/run", "/tmp", "/var/tmp"} <= set(host["Tmpfs"])
    finally:
        sides.ferry("rm", "-f", restored.stdout.strip() or name, check=False)
