"""Containers on real runc: the podman verbs, their flags, errors and cleanup."""

from __future__ import annotations

import json
import os
import pty
import select
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import require
from bench.busybox import make_rootfs_tar
from tests.support.cli import Ferry, free_port, http_get, leftovers, wait_for


@pytest.fixture(scope="module")
def ferry(tmp_path_factory):
    require("runc")
    require("overlayfs")
    require("netns")
    require("nftables")
    root = str(tmp_path_factory.mktemp("root"))
    cli = Ferry(root)
    tar = make_rootfs_tar(str(tmp_path_factory.mktemp("img") / "busybox.tar"),
                          str(tmp_path_factory.mktemp("work")))
    cli("image", "import", tar, "busybox")
    seen: set[str] = set()
    cli.seen = seen
    yield cli
    cli.remove_everything()
    assert leftovers(root, seen) == []


def track(ferry, name: str) -> str:
    cid = ferry.inspect(name)["Id"]
    ferry.seen.add(cid)
    return cid


def one_line_error(done, needle: str, code: int = 125) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: error:"), done.stderr
    assert needle in lines[0], lines[0]


def test_detached_web_server_with_published_port(ferry):
    port = free_port()
    cid = ferry("run", "-d", "--name", "web", "-p", f"{port}:80", "busybox",
                "httpd", "-f", "-p", "80", "-h", "/var/www").stdout.strip()
    assert len(cid) == 64
    ferry.seen.add(cid)
    assert http_get(f"http://127.0.0.1:{port}/") == "hello from busybox\n"
    info = ferry.inspect("web")
    assert info["Id"] == cid and info["Name"] == "web"
    assert info["State"]["Status"] == "running" and info["State"]["Pid"] > 0
    assert info["Image"] and info["ImageName"].endswith("busybox:latest")
    assert info["NetworkSettings"]["IPAddress"] and info["NetworkSettings"]["MacAddress"]
    assert info["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": str(port)}]}
    # The container's own address answers too, from the host.
    assert http_get(f"http://{info['NetworkSettings']['IPAddress']}/") == "hello from busybox\n"
    ps = ferry.json("ps", "--format", "json")
    assert [c["Names"] for c in ps] == [["web"]]
    assert cid[:12] in ferry("ps", "-q").stdout
    assert "web" in ferry("ps").stdout

    assert ferry("stop", "-t", "2", "web").stdout.strip() == "web"
    assert ferry.inspect("web")["State"]["Status"] == "exited"
    assert "web" not in ferry("ps").stdout and "Exited" in ferry("ps", "-a").stdout
    with pytest.raises(OSError):
        http_get(f"http://127.0.0.1:{port}/", deadline=0.5)
    ferry("rm", "web")
    assert leftovers(ferry.root, {cid}) == []


def test_foreground_run_streams_and_returns_exit_code(ferry):
    done = ferry("run", "--rm", "--name", "fg", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3",
                 check=False)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert "fg" not in ferry.names()


def test_interactive_stdin(ferry):
    done = ferry("run", "-i", "--rm", "busybox", "sh", "-c", "tr a-z A-Z", input="hello\n")
    assert done.stdout == "HELLO\n"


def test_env_workdir_entrypoint_hostname(ferry):
    done = ferry("run", "--rm", "-e", "GREETING=hi there", "-w", "/tmp", "-h", "box",
                 "--entrypoint", "/bin/sh", "busybox", "-c", 'echo "$GREETING|$(pwd)|$(hostname)"')
    assert done.stdout == "hi there|/tmp|box\n"


def test_secure_defaults_inside_the_container(ferry):
    out = ferry("run", "--rm", "busybox", "sh", "-c",
                "grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; ulimit -n; "
                "cat /proc/kcore | wc -c").stdout
    fields = dict(line.split(":\t") for line in out.splitlines() if ":\t" in line)
    assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "1"
    cap_sys_admin = 1 << 21
    assert not int(fields["CapEff"], 16) & cap_sys_admin
    numbers = [line for line in out.splitlines() if line.strip().isdigit()]
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert int(numbers[0]) == min(1048576, hard)
    assert int(numbers[1]) == 0  # /proc/kcore is masked


def test_logs_exec_kill_start_restart(ferry):
    ferry("run", "-d", "--name", "worker", "busybox", "sh", "-c",
          "echo started; trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done")
    cid = track(ferry, "worker")
    wait_for(lambda: "started" in ferry("logs", "worker").stdout, "first log line")
    first = ferry.inspect("worker")["NetworkSettings"]
    assert ferry("exec", "worker", "cat", "/etc/hostname").stdout == cid[:12] + "\n"
    exec_code = ferry("exec", "worker", "sh", "-c", "exit 7", check=False)
    assert exec_code.returncode == 7

    ferry("kill", "-s", "TERM", "worker")
    wait_for(lambda: ferry.inspect("worker")["State"]["Status"] == "exited", "worker to exit")
    assert ferry.inspect("worker")["State"]["ExitCode"] == 0
    assert "got-term" in ferry("logs", "worker").stdout
    one_line_error(ferry("exec", "worker", "true", check=False), "is exited", code=255)

    ferry("start", "worker")
    again = ferry.inspect("worker")
    assert again["State"]["Status"] == "running"
    assert again["NetworkSettings"]["IPAddress"] == first["IPAddress"]
    assert again["NetworkSettings"]["MacAddress"] == first["MacAddress"]
    ferry("restart", "-t", "5", "worker")
    assert ferry.inspect("worker")["State"]["Status"] == "running"
    assert ferry("logs", "worker").stdout.count("started") == 3
    one_line_error(ferry("rm", "worker", check=False), "is running", code=2)   # podman's code
    ferry("rm", "-f", "worker")
    assert leftovers(ferry.root, {cid}) == []


def test_logs_follow_until_exit(ferry):
    ferry("run", "-d", "--name", "counter", "busybox", "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done")
    track(ferry, "counter")
    assert ferry("logs", "-f", "counter").stdout == "1\n2\n3\n"
    ferry("rm", "counter")


def test_detached_rm_removes_itself(ferry):
    cid = ferry("run", "-d", "--rm", "--name", "brief", "busybox", "true").stdout.strip()
    ferry.seen.add(cid)
    wait_for(lambda: "brief" not in ferry.names(), "--rm container to remove itself")
    # The monitor ran that removal as its exit command and leaves right after it.
    wait_for(lambda: leftovers(ferry.root, {cid}) == [], "the monitor to finish", deadline=10)


def test_rm_f_removes_a_running_container_whose_record_is_damaged(ferry):
    port = free_port()
    cid = ferry("run", "-d", "--name", "mangled", "-p", f"{port}:80", "busybox",
                "httpd", "-f", "-p", "80", "-h", "/var/www").stdout.strip()
    ferry.seen.add(cid)
    pid = ferry.inspect("mangled")["State"]["Pid"]
    with sqlite3.connect(os.path.join(ferry.root, "ferry.db")) as db:   # a record no ferry writes
        db.execute("UPDATE containers SET config = '{' WHERE id = ?", (cid,))
    one_line_error(ferry("rm", "mangled", check=False), "the record of container 'mangled' is damaged")
    assert os.path.exists(f"/proc/{pid}")   # without -f, nothing is touched
    ferry("rm", "-f", cid[:12])
    assert not os.path.exists(f"/proc/{pid}")
    assert "mangled" not in ferry.names()
    assert leftovers(ferry.root, {cid}) == []


def test_named_and_bind_volumes(ferry, tmp_path):
    ferry("volume", "create", "data")
    ferry("run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/file")
    assert ferry("run", "--rm", "-v", "data:/data", "busybox", "cat", "/data/file").stdout == "kept\n"
    assert [v["Name"] for v in ferry.json("volume", "ls", "--format", "json")] == ["data"]
    assert ferry.json("volume", "inspect", "data")[0]["Mountpoint"].endswith("/data/_data")

    host = tmp_path / "host"
    host.mkdir()
    (host / "in.txt").write_text("from host\n")
    assert ferry("run", "--rm", "-v", f"{host}:/mnt:ro", "busybox", "cat", "/mnt/in.txt").stdout == "from host\n"
    denied = ferry("run", "--rm", "-v", f"{host}:/mnt:ro", "busybox", "touch", "/mnt/x", check=False)
    assert denied.returncode != 0 and not (host / "x").exists()

    ferry("run", "-d", "--name", "holder", "-v", "data:/data", "busybox", "sleep", "60")
    track(ferry, "holder")
    one_line_error(ferry("volume", "rm", "data", check=False), "holder", code=2)   # podman: 2, in use
    ferry("rm", "-f", "holder")
    ferry("volume", "rm", "data")
    assert ferry.json("volume", "ls", "--format", "json") == []


def test_bad_input_is_one_line_and_leaves_nothing(ferry):
    before = ferry.names()
    port = free_port()
    cid = ferry("run", "-d", "--name", "taken", "-p", f"{port}:80", "busybox", "sleep", "60").stdout.strip()
    track(ferry, "taken")
    assert ferry.inspect(cid[:10])["Name"] == "taken"  # an ID prefix resolves
    cases = [
        (("run", "-p", f"{port}:80", "busybox", "true"), str(port)),
        (("run", "--rm", "no-such-image"), "no-such-image"),
        (("run", "--name", "taken", "busybox", "true"), "already in use"),
        (("run", "-p", "abc", "busybox", "true"), "abc"),
        (("run", "-v", "data", "busybox", "true"), "bad volume"),
        (("run", "-v", "/no/such/dir:/x", "busybox", "true"), "does not exist"),
        (("run", "--ip", "300.1.1.1", "busybox", "true"), "300.1.1.1"),
        (("exec", "ghost", "true"), "no such container"),
        (("logs", "ghost"), "no such container"),
        (("stop", "ghost"), "no such container"),
    ]
    for argv, needle in cases:
        done = ferry(*argv, check=False)
        assert done.returncode in (2, 125), (argv, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (argv, done.stderr)
    assert ferry.names() == before | {"taken"}
    assert len(os.listdir(os.path.join(ferry.root, "containers"))) == len(before) + 1
    ferry("rm", "-f", "taken")


def test_concurrent_runs_keep_names_unique(ferry):
    procs = [subprocess.Popen([sys.executable, "-m", "ferry", "--root", ferry.root, "run", "-d",
                               "--name", "racer", "busybox", "sleep", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    winners = [r for r in results if r[0] == 0]
    assert len(winners) == 1, results
    assert all("already in use" in r[2] for r in results if r[0] != 0)
    ferry.seen.add(winners[0][1].strip())
    ferry("rm", "-f", "racer")


def _run_on_pty(argv: list[str], keystrokes: list[bytes], deadline: float = 30.0) -> tuple[int, bytes]:
    """Drive a command on a real pseudo-terminal, as a user at a keyboard would."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "ferry", *argv])
    output = b""
    pending = list(keystrokes)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        if pending and b"# " in output:
            os.write(fd, pending.pop(0))
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output


def test_run_and_exec_with_a_terminal(ferry):
    code, output = _run_on_pty(["--root", ferry.root, "run", "-it", "--rm", "--name", "tty", "busybox", "sh"],
                               [b"echo $((6*7)); tty\r", b"exit 5\r"])
    assert code == 5, output
    assert b"42" in output and b"/dev/pts/" in output

    ferry("run", "-d", "--name", "shell", "busybox", "sleep", "60")
    track(ferry, "shell")
    code, output = _run_on_pty(["--root", ferry.root, "exec", "-it", "shell", "sh"],
                               [b"echo $((7*6)) > /tmp/answer; exit 4\r"])
    assert code == 4, output
    assert ferry("exec", "shell", "cat", "/tmp/answer").stdout == "42\n"
    ferry("rm", "-f", "shell")


def test_prune_recovers_from_a_crashed_monitor(ferry):
    ferry("run", "-d", "--name", "crashy", "busybox", "sleep", "60")
    cid = track(ferry, "crashy")
    monitor_pid = int(open(os.path.join(ferry.root, "containers", cid, "monitor.pid")).read())
    container_pid = ferry.inspect("crashy")["State"]["Pid"]
    os.kill(monitor_pid, 9)
    os.kill(container_pid, 9)
    wait_for(lambda: not os.path.exists(f"/proc/{container_pid}/stat")
             or open(f"/proc/{container_pid}/stat").read().split(")")[1].split()[0] == "Z",
             "container process to die")
    assert ferry.inspect("crashy")["State"]["Status"] == "exited"
    stray = os.path.join(ferry.root, "containers", "f" * 64)
    os.makedirs(os.path.join(stray, "rootfs"))
    out = ferry("system", "prune", "-f").stdout
    assert cid in out.split() and not os.path.exists(stray)
    assert leftovers(ferry.root, {cid}) == []


def test_seed_nginx_from_debian_packages(ferry):
    """The seed's first steps: run nginx (built from Debian's packages), curl it, stop, rm."""
    ferry("image", "build-debian", "nginx", "--include", "nginx-light", "-q", timeout=900)
    port = free_port()
    cid = ferry("run", "-d", "-p", f"{port}:80", "--name", "my-nginx", "nginx").stdout.strip()
    ferry.seen.add(cid)
    page = http_get(f"http://localhost:{port}/")
    assert "Welcome to nginx!" in page
    ferry("stop", "my-nginx")
    ferry("rm", "my-nginx")
    assert "my-nginx" not in ferry.names()
    assert leftovers(ferry.root, {cid}) == []


def test_inspect_catches_up_an_unobserved_exit_and_releases_its_resources(ferry):
    """`inspect` reads the records alone, as `ps` (issue 18), but a container that
    exited while no ferry command watched (its monitor killed first) is caught up
    as before: the exit recorded, and its runc state, netns, published port and
    rootfs mount released. Several names and templates read the same records."""
    port = free_port()
    ferry("run", "-d", "--name", "unwatched", "-p", f"{port}:80", "busybox", "sleep", "60")
    cid = track(ferry, "unwatched")
    ferry("run", "-d", "--name", "watched", "-e", "KEPT=yes", "busybox", "sleep", "60")
    track(ferry, "watched")
    both = ferry.json("inspect", "unwatched", "watched")
    assert [(i["Name"], i["State"]["Status"]) for i in both] == [("unwatched", "running"), ("watched", "running")]
    assert both[0]["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": str(port)}]}
    assert ferry("container", "inspect", "-f", "{{.Name}} {{.State.Running}} {{.Config.Env}}",
                 "watched").stdout.startswith("watched true [")
    missing = ferry("inspect", "watched", "ghost", check=False)
    one_line_error(missing, "no such container 'ghost'")
    assert [i["Name"] for i in json.loads(missing.stdout)] == ["watched"]   # what it found, as podman shows

    monitor_pid = int(open(os.path.join(ferry.root, "containers", cid, "monitor.pid")).read())
    container_pid = both[0]["State"]["Pid"]
    os.kill(monitor_pid, 9)
    os.kill(container_pid, 9)
    wait_for(lambda: not os.path.exists(f"/proc/{container_pid}/stat")
             or open(f"/proc/{container_pid}/stat").read().split(")")[1].split()[0] == "Z",
             "container process to die")
    state = ferry.inspect("unwatched")["State"]
    assert (state["Status"], state["Running"], state["Pid"]) == ("exited", False, 0)
    ferry("rm", "-f", "watched")
    # Only its directory and record are left, for `rm`.
    assert [x for x in leftovers(ferry.root, {cid}) if not x.startswith("container dir")] == []
    with open("/proc/self/mountinfo") as f:
        assert cid not in f.read()
    assert "unwatched" in ferry("ps", "-a").stdout
    ferry("rm", "unwatched")
    assert leftovers(ferry.root, {cid}) == []
