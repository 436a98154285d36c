"""No interruption, race or reboot may lose a container (issue 10).

A redis holding 300,000 keys is checkpointed and restored while ferry is
stopped with SIGKILL, SIGTERM or SIGHUP at each named phase (the phase hook
makes the point exact: FERRY_TEST_PHASE) and at a few random times. After
each, at most one command (`ferry container restore NAME`, or rerunning an
import) brings the service back with every key, and nothing is left behind:
no scratch tmpfs, marker, journal, temp archive, frozen cgroup or CRIU
network lock.
"""

from __future__ import annotations

import glob
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import require
from tests.support.cli import Ferry, leftovers, wait_for
from tests.support.redis import REDIS_CMD, Redis

KEYS = 300_000
SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP]
EXIT_WAIT = 180


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("interrupt")


@pytest.fixture(autouse=True)
def no_leaks():
    """Overrides the per-test check: here the service's container may be
    replaced by a test (restored from its archive as a new container), so the
    check that nothing leaked runs once the module is done (host's teardown),
    and each test checks its own leftovers (no_leftovers)."""
    yield


def _mounts_under(root: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(root)]


@pytest.fixture(scope="module")
def host(workdir):
    for key in ("criu", "runc", "overlayfs", "netns", "nftables"):
        require(key)
    cli = Ferry(str(workdir / "root"))
    cli.seen = set()
    cli("image", "build-debian", "redis", "--include", "redis-server", "--cmd", REDIS_CMD, "-q", timeout=900)
    yield cli
    cli.remove_everything()
    assert leftovers(cli.root, cli.seen) == []
    assert _mounts_under(cli.root) == []


def _connect(ip: str):
    try:
        return Redis(ip, 6379, timeout=60)
    except OSError:
        return None


@pytest.fixture(scope="module")
def svc(host):
    host("run", "-d", "--name", "svc", "redis")
    info = host.inspect("svc")
    host.seen.add(info["Id"])
    client = wait_for(lambda: _connect(info["NetworkSettings"]["IPAddress"]), "redis to listen")
    assert client.command("DEBUG", "POPULATE", str(KEYS)) == "OK"
    client.close()
    return info


def state(host: Ferry, name: str = "svc") -> dict:
    return host.inspect(name)["State"]


def intact(host: Ferry, name: str = "svc") -> None:
    """The service answers with every key."""
    ip = host.inspect(name)["NetworkSettings"]["IPAddress"]
    client = wait_for(lambda: _connect(ip), f"{name} to answer")
    try:
        assert client.command("DBSIZE") == KEYS
        probe = random.randrange(KEYS)
        assert client.command("GET", f"key:{probe}") == f"value:{probe}"
    finally:
        client.close()


def bring_back(host: Ferry, name: str = "svc") -> int:
    """At most one command: the number it took (0 when it was running)."""
    current = state(host, name)
    if current["Status"] == "running":
        return 0
    assert current["Checkpointed"], f"{name} is neither running nor restorable: {current}"
    host("container", "restore", name)
    assert state(host, name)["Status"] == "running"
    return 1


def bring_back_after_checkpoint(host: Ferry, mode: str, target: str) -> int:
    """bring_back(), or, once the command cleared the local checkpoint's
    record, the archive or image it moved the service into: the service
    comes back from it as after any export (rm, then restore from it)."""
    current = state(host)
    if current["Status"] == "running" or current["Checkpointed"] or mode.startswith("local"):
        commands = bring_back(host)
        assert commands <= 1
        return commands
    if mode.startswith("file"):
        # An archive only appears whole: the record is cleared after it is.
        assert os.path.exists(target), "the local checkpoint was dropped before its archive was whole"
        host("rm", "svc")
        host("container", "restore", "--file", target)
        host.seen.add(host.inspect("svc")["Id"])
    else:
        assert mode == "image", mode
        host("rm", "svc")
        host("container", "restore", "svc-image")
    return 2


def no_leftovers(host: Ferry, target: str | None = None) -> None:
    root = host.root
    with open("/proc/self/mountinfo") as f:
        scratch = [line.split()[4] for line in f if " ferry-scratch " in line and root in line]
    assert scratch == [] or all(_checkpointed_images(host, point) for point in scratch), scratch
    for directory in glob.glob(os.path.join(root, "containers", "*")):
        for name in ("journal.json", "checkpointing", "checkpoint-image.tar"):
            assert not os.path.exists(os.path.join(directory, name)), f"{name} left in {directory}"
    tmp = os.path.join(root, "tmp")
    assert not os.path.isdir(tmp) or [n for n in os.listdir(tmp) if not n.startswith(".trash")] == []
    if target:
        assert glob.glob(os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.*.tmp")) == []
    # A -R local checkpoint is an archive in the root: listed whole, or gone (a temp file is the journal's).
    listed = {e["Path"] for e in host.json("checkpoint", "ls", "--format", "json")}
    stored = glob.glob(os.path.join(root, "checkpoints", "*", "*")) + \
        glob.glob(os.path.join(root, "checkpoints", "*", ".*"))
    assert [p for p in stored if p not in listed and not p.endswith("/schedule.json")] == []
    for container_id in host.seen:
        for path in glob.glob(f"/sys/fs/cgroup/freezer/ferry*/{container_id}/freezer.state"):
            assert open(path).read().strip() == "THAWED", path
        netns = f"ferry-{container_id[:12]}"
        if os.path.exists(f"/run/netns/{netns}"):
            tables = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "tables"],
                                    capture_output=True, text=True).stdout
            assert "CRIU" not in tables, tables


def _checkpointed_images(host: Ferry, mount_point: str) -> bool:
    """A scratch tmpfs may hold a checkpoint only when the disk could not."""
    return mount_point.endswith("/checkpoint")


def interrupted(host: Ferry, args: list[str], *, phase: str | None, sig: int, delay: float = 0.0,
                workdir=None) -> subprocess.CompletedProcess:
    """Run a ferry command and stop it at `phase` (or after `delay`) with `sig`,
    sent to its process group as a terminal would (SIGKILL reaches ferry alone)."""
    marker = str(workdir / f"phase-{time.monotonic_ns()}")
    env = {**os.environ}
    if phase:
        env.update(FERRY_TEST_PHASE=phase, FERRY_TEST_PHASE_FILE=marker)
    command = subprocess.Popen([sys.executable, "-m", "ferry", "--root", host.root, *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               start_new_session=True, text=True)
    try:
        if phase:
            wait_for(lambda: os.path.exists(marker) or command.poll() is not None, f"phase {phase}", 120)
            assert command.poll() is None, f"the command ended before {phase}: {command.communicate()}"
        else:
            time.sleep(delay)
        if command.poll() is None:
            os.killpg(command.pid, sig)
        out, err = command.communicate(timeout=EXIT_WAIT)
    finally:
        if command.poll() is None:
            command.kill()
    return subprocess.CompletedProcess(command.args, command.returncode, out, err)


def _one_line_if_failed(done: subprocess.CompletedProcess) -> None:
    if done.returncode not in (0, -signal.SIGKILL):
        assert "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) <= 2, done.stderr   # the error, and maybe a warning


CHECKPOINT_MODES = {
    "local": [],
    "local-R": ["-R"],
    "file": ["--file", "ARCHIVE"],
    "file-R": ["-R", "--file", "ARCHIVE"],
    "image": ["--create-image", "svc-image"],   # kept here until the image is recorded
}
# dumping: runc (in a session of its own) dumps on after the command dies.
# released: the record no longer promises a local checkpoint, and its images are still there.
CHECKPOINT_PHASES = ["checkpoint:begun", "checkpoint:dumping", "checkpoint:dumped", "checkpoint:recorded", "checkpoint:exported",
                     "checkpoint:imaged", "checkpoint:released"]


def _checkpoint_cases():
    for mode in CHECKPOINT_MODES:
        for phase in CHECKPOINT_PHASES:
            if (phase == "checkpoint:exported" and mode == "local") or \
                    (phase == "checkpoint:imaged" and mode != "image") or \
                    (phase == "checkpoint:released" and mode.startswith("local")):
                continue
            for sig in SIGNALS:
                yield pytest.param(mode, phase, sig, id=f"{mode}-{phase.split(':')[1]}-{sig.name}")


@pytest.mark.parametrize("mode, phase, sig", list(_checkpoint_cases()))
def test_checkpoint_interrupted(host, svc, workdir, mode, phase, sig):
    bring_back(host)
    target = str(workdir / f"svc-{mode}.tar.zst")
    if os.path.exists(target):
        os.unlink(target)
    args = ["container", "checkpoint", "svc", *[target if a == "ARCHIVE" else a for a in CHECKPOINT_MODES[mode]]]
    done = interrupted(host, args, phase=phase, sig=sig, workdir=workdir)
    _one_line_if_failed(done)
    commands = bring_back_after_checkpoint(host, mode, target)
    intact(host)
    no_leftovers(host, target)
    if "R" in mode:
        assert commands == 0   # -R: the service never stopped


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4, 0.8, 1.6])
@pytest.mark.parametrize("mode", ["local", "file", "image"])
def test_checkpoint_killed_at_random_times(host, svc, workdir, mode, delay):
    bring_back(host)
    target = str(workdir / f"svc-random-{mode}.tar.zst")
    if os.path.exists(target):
        os.unlink(target)
    args = ["container", "checkpoint", "svc", *[target if a == "ARCHIVE" else a for a in CHECKPOINT_MODES[mode]]]
    interrupted(host, args, phase=None, sig=signal.SIGKILL, delay=delay, workdir=workdir)
    bring_back_after_checkpoint(host, mode, target)
    intact(host)
    no_leftovers(host, target)


RESTORE_PHASES = ["restore:begun", "start:launched"]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("phase", RESTORE_PHASES)
def test_restore_in_place_interrupted(host, svc, workdir, phase, sig):
    bring_back(host)
    host("container", "checkpoint", "svc")
    done = interrupted(host, ["container", "restore", "svc"], phase=phase, sig=sig, workdir=workdir)
    _one_line_if_failed(done)
    assert bring_back(host) <= 1
    intact(host)
    no_leftovers(host)


IMPORT_PHASES = ["restore:staged", "restore:created", "restore:begun", "start:launched"]


@pytest.fixture(scope="module")
def archive(host, svc, workdir):
    """An archive of the service, taken with -R: the service runs on."""
    bring_back(host)
    path = str(workdir / "svc-import.tar.zst")
    host("container", "checkpoint", "svc", "-R", "--file", path)
    return path


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("phase", IMPORT_PHASES)
def test_restore_from_archive_interrupted(host, svc, archive, workdir, phase, sig):
    """Interrupted, a restore from an archive either got the copy running or
    left nothing: then the same command, run again, restores it."""
    bring_back(host)
    args = ["container", "restore", "--file", archive, "--name", "copy", "--ignore-static-ip",
            "--ignore-static-mac"]
    done = interrupted(host, args, phase=phase, sig=sig, workdir=workdir)
    _one_line_if_failed(done)
    names = host.names()   # ps -a: the next command, which finishes or undoes
    if "copy" not in names:
        host(*args)
    else:
        assert state(host, "copy")["Status"] == "running"
    host.seen.add(host.inspect("copy")["Id"])
    intact(host, "copy")
    host("rm", "-f", "copy")
    no_leftovers(host)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("phase", IMPORT_PHASES)
def test_restore_of_a_stored_checkpoint_after_a_crash_interrupted(host, svc, workdir, phase, sig):
    """The crash's one command, `restore NAME` from a -R checkpoint, takes the
    crashed container's place only once the archive is checked: interrupted, the
    service runs, or the same command brings it back."""
    bring_back(host)
    host("container", "checkpoint", "-R", "svc")
    host("kill", "-s", "KILL", "svc")
    wait_for(lambda: state(host)["Status"] == "exited", "svc to exit")
    done = interrupted(host, ["container", "restore", "svc"], phase=phase, sig=sig, workdir=workdir)
    _one_line_if_failed(done)
    if "svc" not in host.names() or state(host)["Status"] != "running":
        host("container", "restore", "svc")
    assert state(host)["Status"] == "running" and host.inspect("svc")["Id"] == svc["Id"]
    intact(host)
    host("checkpoint", "rm", "--all")
    no_leftovers(host)


def test_two_checkpoints_at_once_one_wins_and_no_key_is_lost(host, svc, workdir):
    bring_back(host)
    commands = [subprocess.Popen([sys.executable, "-m", "ferry", "--root", host.root, "container", "checkpoint",
                                  "svc"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    results = [c.communicate(timeout=EXIT_WAIT) + (c.returncode,) for c in commands]
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 125], results
    loser = next(err for _, err, code in results if code)
    assert len(loser.strip().splitlines()) == 1 and ("busy" in loser or "is exited" in loser), loser
    assert bring_back(host) == 1
    intact(host)
    no_leftovers(host)


def test_checkpoint_racing_rm_one_wins_and_says_so(host, svc, workdir):
    """rm -f while a checkpoint is at work waits for it, then refuses in one
    line; the checkpoint completes and brings the service back."""
    bring_back(host)
    env = {**os.environ, "FERRY_TEST_PHASE": "checkpoint:begun", "FERRY_TEST_PHASE_FILE": str(workdir / "rm-race")}
    checkpoint = subprocess.Popen([sys.executable, "-m", "ferry", "--root", host.root, "container", "checkpoint",
                                   "svc"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_for(lambda: os.path.exists(workdir / "rm-race"), "the checkpoint to hold the container")
    rm = host("rm", "-f", "svc", check=False, timeout=EXIT_WAIT)   # waits the lock's 10 s, then refuses
    assert rm.returncode == 125 and len(rm.stderr.strip().splitlines()) == 1, rm.stderr
    assert "busy" in rm.stderr and "ferry container checkpoint" in rm.stderr, rm.stderr
    os.unlink(workdir / "rm-race")   # the checkpoint goes on
    out, err = checkpoint.communicate(timeout=EXIT_WAIT)
    assert checkpoint.returncode == 0, err
    assert bring_back(host) == 1
    intact(host)
    no_leftovers(host)


def test_two_restores_at_once_one_wins(host, svc, workdir):
    bring_back(host)
    host("container", "checkpoint", "svc")
    commands = [subprocess.Popen([sys.executable, "-m", "ferry", "--root", host.root, "container", "restore", "svc"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [c.communicate(timeout=EXIT_WAIT) + (c.returncode,) for c in commands]
    assert sorted(code for _, _, code in results) == [0, 125], results
    loser = next(err for _, err, code in results if code)
    assert len(loser.strip().splitlines()) == 1, loser
    intact(host)
    no_leftovers(host)


def test_a_local_checkpoint_outlives_a_reboot(host, svc, workdir):
    """A reboot takes every tmpfs with it: a local checkpoint lives on disk,
    also one kept after an export failed for want of space."""
    bring_back(host)
    full = workdir / "full"
    full.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True)
    try:
        failed = host("container", "checkpoint", "svc", "--file", str(full / "svc.tar.zst"), check=False)
        assert failed.returncode == 125 and "the checkpoint is kept" in failed.stderr, failed.stderr
        assert "in memory" not in failed.stderr
    finally:
        subprocess.run(["umount", str(full)], check=True)
    with open("/proc/self/mountinfo") as f:   # the reboot
        for point in [line.split()[4] for line in f if host.root in line.split()[4]]:
            subprocess.run(["umount", "-l", point], check=False)
    assert bring_back(host) == 1
    intact(host)
    no_leftovers(host)


def test_ps_and_inspect_say_running_or_restorable(host, svc):
    bring_back(host)
    host("container", "checkpoint", "svc")
    listed = {c["Names"][0]: c for c in host.json("ps", "-a", "--format", "json")}
    assert "checkpointed" in listed["svc"]["Status"]
    current = state(host)
    assert current["Status"] == "exited" and current["Checkpointed"] and current["CheckpointedAt"]
    bring_back(host)
    current = state(host)
    assert current["Status"] == "running" and not current["Checkpointed"] and current["Restored"]


def _criu_dumping(container_pid: int) -> int | None:
    """The pid of a CRIU dumping the container whose init is container_pid."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if command.startswith(b"criu: dump") and f"-t {container_pid}".encode() in command:
            return int(entry)
    return None


@pytest.mark.parametrize("also_ferry", [False, True], ids=["criu", "criu-and-ferry"])
def test_a_criu_killed_mid_dump_leaves_a_running_reachable_service(host, svc, workdir, also_ferry):
    """Not ferry's doing, but it happens (the OOM killer, an operator): a CRIU
    killed while it dumps leaves the container frozen or locked off the network
    by its nftables table. The command (or, when it died too, the next one)
    thaws it and lifts the lock."""
    bring_back(host)
    pid = host.inspect("svc")["State"]["Pid"]
    command = subprocess.Popen([sys.executable, "-m", "ferry", "--root", host.root, "container", "checkpoint",
                                "svc"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    criu = None
    deadline = time.monotonic() + 60
    while criu is None and command.poll() is None and time.monotonic() < deadline:
        criu = _criu_dumping(pid)
    if criu is None:
        command.communicate(timeout=EXIT_WAIT)
        pytest.skip("the dump ended before CRIU could be caught at work")
    os.kill(criu, signal.SIGKILL)
    if also_ferry:
        command.kill()
    command.communicate(timeout=EXIT_WAIT)
    assert bring_back(host) <= 1
    intact(host)   # over the container's own address: no network lock left
    no_leftovers(host)
