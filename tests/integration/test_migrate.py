"""Live migration between two state roots on one machine (setup (a)): real
agents (`ferry serve`), real runc and CRIU, a client that holds one TCP
connection to the container's own address throughout."""

from __future__ import annotations

import glob
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest

from bench.busybox import make_oci_archive, make_rootfs_tar
from tests.conftest import require
from tests.support.cli import Ferry, free_port, leftovers, wait_for
from tests.support.counter import COUNTER, count

# A line server whose count lives in the memory of the process that serves
# one connection: it goes on from where it was only if that process, its
# memory and its socket all moved.
SERVER = ("printf 'i=0; while read l; do i=$((i+1)); echo \"$i $l\"; done\\n' > /tmp/count.sh; "
          "nc -ll -p 7000 -e sh /tmp/count.sh")
AGENT_READY = 30


class Agent:
    def __init__(self, ferry: Ferry, workdir):
        self.ferry = ferry
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token_file = str(workdir / f"token-{os.path.basename(ferry.root)}")
        self.log = open(workdir / f"agent-{os.path.basename(ferry.root)}.log", "a+")
        self.process = None

    def start(self, env: dict | None = None, extra: tuple[str, ...] = ()) -> "Agent":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ferry", "--root", self.ferry.root, "serve", "--listen",
             f"127.0.0.1:{self.port}", "--token-file", self.token_file, *extra],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env={**os.environ, **(env or {})})
        wait_for(self._ready, f"the agent of {self.ferry.root}", AGENT_READY)
        return self

    def _ready(self) -> bool:
        assert self.process.poll() is None, f"the agent exited: {self.said()}"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return os.path.exists(self.token_file)
        except OSError:
            return False

    def said(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """The agent's exit status: uvicorn ends a graceful stop by raising the
        signal again, so a clean stop is a death by SIGTERM, as for any daemon."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=120)


def _root(workdir, name: str, archive: str) -> Ferry:
    ferry = Ferry(str(workdir / name))
    ferry("load", "-i", archive)
    ferry.seen = set()
    return ferry


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("migrate")


@pytest.fixture(scope="module")
def hosts(workdir):
    for key in ("criu", "runc", "overlayfs", "netns", "nftables", "tcp_repair"):
        require(key)
    archive = make_oci_archive(str(workdir / "busybox-oci.tar"), str(workdir))
    a, b = _root(workdir, "a", archive), _root(workdir, "b", archive)
    agents = {a.root: Agent(a, workdir).start(), b.root: Agent(b, workdir).start()}
    yield a, b, agents
    stopped = {root: agent.stop() for root, agent in agents.items()}
    for ferry in (a, b):   # whatever a failed test left running goes, whatever the agents did
        ferry.remove_everything()
        assert leftovers(ferry.root, ferry.seen) == []
    for root, status in stopped.items():
        assert status == -signal.SIGTERM, agents[root].said()


def migrate(source: Ferry, name: str, agent: Agent, *flags: str, check: bool = True):
    done = source("migrate", name, "--to", agent.url, "--token-file", agent.token_file, *flags, check=False)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _line_client(ip: str) -> socket.socket:
    deadline = time.monotonic() + 20
    while True:
        try:
            sock = socket.create_connection((ip, 7000), timeout=10)
            sock.settimeout(20)
            return sock
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def ask(sock: socket.socket, word: str) -> str:
    sock.sendall(word.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection"
        data += chunk
    return data.decode().strip()


def frozen(container_id: str) -> bool:
    states = glob.glob(f"/sys/fs/cgroup/freezer/ferry*/{container_id}/freezer.state")
    assert len(states) == 1, states
    with open(states[0]) as f:
        return f.read().strip() == "FROZEN"


def gone(ferry: Ferry, name: str) -> bool:
    return name not in ferry.names()


def test_a_container_moves_there_and_back_keeping_its_connection(hosts):
    a, b, agents = hosts
    a("run", "-d", "--name", "lines", "busybox", "sh", "-c", SERVER)
    info = a.inspect("lines")
    a.seen.add(info["Id"])
    b.seen.add(info["Id"])
    ip = info["NetworkSettings"]["IPAddress"]
    client = _line_client(ip)
    assert ask(client, "one") == "1 one"
    assert ask(client, "two") == "2 two"

    done = migrate(a, "lines", agents[b.root], "--tcp-established", "--format", "json")
    stats = json.loads(done.stdout)
    assert stats["Id"] == info["Id"] and stats["Name"] == "lines" and stats["downtime"] > 0
    assert set(stats["phases"]) == {"preflight", "stream", "restore", "cleanup"}
    assert ask(client, "three") == "3 three"   # the same connection, the same process
    assert gone(a, "lines")
    moved = b.inspect("lines")
    assert (moved["Id"], moved["NetworkSettings"]["IPAddress"]) == (info["Id"], ip)
    assert moved["NetworkSettings"]["MacAddress"] == info["NetworkSettings"]["MacAddress"]

    done = migrate(b, "lines", agents[a.root], "--tcp-established")
    assert done.stdout == "lines\n"
    assert "migrated to " in done.stderr and "downtime" in done.stderr
    assert ask(client, "four") == "4 four"
    assert gone(b, "lines") and a.inspect("lines")["State"]["Status"] == "running"
    client.close()
    a("rm", "-f", "lines")


def test_the_destination_refuses_and_nothing_moves(hosts, workdir):
    a, b, agents = hosts
    a("run", "-d", "--name", "stays", "busybox", "sh", "-c", COUNTER)
    a.seen.add(a.inspect("stays")["Id"])
    b("run", "-d", "--name", "taken", "busybox", "sleep", "600")
    b.seen.add(b.inspect("taken")["Id"])
    before = b.names()
    refused = migrate(a, "stays", agents[b.root], "--name", "taken", check=False)
    assert refused.returncode == 125
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "a container with the name 'taken' exists here" in refused.stderr
    # A wrong token.
    wrong = workdir / "wrong-token"
    wrong.write_text("w" * 43)
    denied = a("migrate", "stays", "--to", agents[b.root].url, "--token-file", str(wrong), check=False)
    assert denied.returncode == 125 and "refused the token" in denied.stderr
    assert b.names() == before
    assert a.inspect("stays")["State"]["Status"] == "running"
    a("rm", "-f", "stays")
    b("rm", "-f", "taken")


def test_system_compat_asks_the_other_host_s_agent(hosts, workdir):
    """The agent runs the preflight's checks (CRIU's CPU check included) on
    its side; the same machine here, so every check passes."""
    a, b, agents = hosts
    agent = agents[b.root]
    done = a("system", "compat", agent.url, "--token-file", agent.token_file)
    assert "THAT HOST" in done.stdout and "refused" not in done.stdout
    report = json.loads(a("system", "compat", agent.url, "--token-file", agent.token_file, "--format",
                          "json").stdout)
    assert report["compatible"] is True
    assert [r["key"] for r in report["checks"]] == ["arch", "kernel", "cgroup_mode", "criu_version",
                                                    "runc_version", "cpu"]
    wrong = workdir / "wrong-token-compat"
    wrong.write_text("w" * 43)
    denied = a("system", "compat", agent.url, "--token-file", str(wrong), check=False)
    assert denied.returncode == 125 and "refused the token" in denied.stderr


# The memory goes to a page server there (the default), or in the archive.
WAYS = {"page-server": (), "through-agent": ("--through-agent",)}


@pytest.mark.parametrize("way", WAYS)
def test_a_restore_that_fails_on_the_destination_resumes_the_source(hosts, way):
    a, b, agents = hosts
    a("run", "-d", "--name", "resumed", "busybox", "sh", "-c", COUNTER)
    info = a.inspect("resumed")
    a.seen.add(info["Id"])
    wait_for(lambda: count(a, "resumed") > 5, "the counter to count")
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        before = count(a, "resumed")
        failed = migrate(a, "resumed", agents[b.root], "-p", f"{port}:80", *WAYS[way], check=False)
    finally:
        busy.close()
    assert failed.returncode == 125
    assert len(failed.stderr.strip().splitlines()) <= 2, failed.stderr   # the error, and the resume's warning
    assert f"port {port}" in failed.stderr
    state = a.inspect("resumed")["State"]
    if way == "page-server":   # its dump left it here frozen: it runs on, the same processes
        assert state["Status"] == "running" and state["Pid"] == info["State"]["Pid"]
    else:                      # restored from the checkpoint it kept
        assert state["Status"] == "running" and state["Pid"] != info["State"]["Pid"] or state["Restored"]
    wait_for(lambda: count(a, "resumed") > before, "the resumed counter to go on")
    assert count(a, "resumed") >= before   # from where it was, not from 0
    assert gone(b, "resumed")
    # The destination's own leftovers: the cgroups and netns of this ID are the source's now.
    assert leftovers(b.root, set()) == [] and not os.path.exists(os.path.join(b.root, "containers", info["Id"]))
    a("rm", "-f", "resumed")


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("phase", ["checkpoint:dumped", "checkpoint:recorded"])
def test_a_migrate_killed_mid_stream_leaves_one_restorable_copy(hosts, workdir, phase, way):
    a, b, agents = hosts
    a("run", "-d", "--name", "killed", "busybox", "sh", "-c", COUNTER)
    info = a.inspect("killed")
    a.seen.add(info["Id"])
    wait_for(lambda: count(a, "killed") > 5, "the counter to count")
    marker = str(workdir / f"phase-{time.monotonic_ns()}")
    _kill_at(_start_migrate(a, "killed", agents[b.root], phase, marker, *WAYS[way]), phase, marker)
    # The destination got a cut stream: it refused it and holds nothing.
    wait_for(lambda: gone(b, "killed") and _nothing_staged(b), "the destination to let go", 60)
    # The source: dumped, and kept frozen or as a checkpoint; the next command
    # there asks the destination, which refused the cut stream, and resumes it.
    resumed = a("ps", "-a")
    assert "resuming container killed here" in resumed.stderr, resumed.stderr
    assert a.inspect("killed")["State"]["Status"] == "running"
    left = leftovers(b.root, set())
    assert left == [] and not os.path.exists(os.path.join(b.root, "containers", info["Id"])), left
    assert count(a, "killed") > 5
    a("rm", "-f", "killed")


def test_the_agent_stops_cleanly_on_sigterm_and_sighup(hosts, workdir):
    a, _b, agents = hosts
    archive = str(workdir / "busybox-oci.tar")
    c = _root(workdir, "c", archive)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        agent = Agent(c, workdir).start()
        assert agent.stop(sig) == -signal.SIGTERM, agent.said()   # a dropped session stops it as SIGTERM does
        assert "Traceback" not in agent.said()
    # A second agent on one root is refused in one line.
    second = subprocess.run([sys.executable, "-m", "ferry", "--root", a.root, "serve", "--listen",
                             f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60)
    assert second.returncode == 125 and "another agent serves state root" in second.stderr, second.stderr
    assert agents[a.root].process.poll() is None
    c.remove_everything()


def _nothing_staged(ferry: Ferry) -> bool:
    try:
        return not os.listdir(os.path.join(ferry.root, "tmp"))
    except FileNotFoundError:   # a restore that ended removes it
        return True


def _start_migrate(source: Ferry, name: str, agent: Agent, phase: str, marker: str, *flags: str
                   ) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ferry", "--root", source.root, "migrate", name, "--to", agent.url,
         "--token-file", agent.token_file, *flags],
        env={**os.environ, "FERRY_TEST_PHASE": phase, "FERRY_TEST_PHASE_FILE": marker},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _kill_at(command: subprocess.Popen, phase: str, marker: str) -> None:
    wait_for(lambda: os.path.exists(marker) or command.poll() is not None, phase, 120)
    assert command.poll() is None, command.communicate()
    os.kill(command.pid, signal.SIGKILL)
    command.wait(timeout=60)


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("phase", ["migrate:sent", "migrate:confirmed"])
def test_a_migrate_killed_once_the_destination_has_it_leaves_the_destination_copy(hosts, workdir, phase, way):
    """Killed after the whole checkpoint went out: the destination runs the
    container; the next command here asks it, and removes this copy."""
    a, b, agents = hosts
    a("run", "-d", "--name", "landed", "busybox", "sh", "-c", COUNTER)
    info = a.inspect("landed")
    a.seen.add(info["Id"])
    b.seen.add(info["Id"])
    wait_for(lambda: count(a, "landed") > 5, "the counter to count")
    marker = str(workdir / f"phase-{time.monotonic_ns()}")
    _kill_at(_start_migrate(a, "landed", agents[b.root], phase, marker, *WAYS[way]), phase, marker)
    wait_for(lambda: not gone(b, "landed") and b.inspect("landed")["State"]["Status"] == "running",
             "the destination to run it", 60)
    listed = a("ps", "-a")
    assert "landed" not in listed.stdout
    assert f"runs on {agents[b.root].url}" in listed.stderr and "removing its copy here" in listed.stderr
    assert gone(a, "landed") and not os.path.exists(os.path.join(a.root, "containers", info["Id"]))
    assert count(b, "landed") > 5
    b("rm", "-f", "landed")


def test_a_destination_agent_killed_mid_restore_leaves_the_source_to_resume(hosts, workdir):
    """The destination's agent dies while it restores, and the migrate command
    too: while nobody can say whether the destination runs the container,
    the source keeps its copy frozen; once the agent is back (its restore
    undone), the next command here resumes the container."""
    a, b, agents = hosts
    a("run", "-d", "--name", "orphan", "busybox", "sh", "-c", COUNTER)
    info = a.inspect("orphan")
    a.seen.add(info["Id"])
    wait_for(lambda: count(a, "orphan") > 5, "the counter to count")
    agents[b.root].stop()
    agent_marker = str(workdir / f"agent-phase-{time.monotonic_ns()}")
    agents[b.root].start(env={"FERRY_TEST_PHASE": "restore:staged", "FERRY_TEST_PHASE_FILE": agent_marker})
    try:
        marker = str(workdir / f"phase-{time.monotonic_ns()}")
        command = _start_migrate(a, "orphan", agents[b.root], "migrate:sent", marker)
        wait_for(lambda: os.path.exists(agent_marker), "the destination's restore to stage the archive", 120)
        agents[b.root].stop(signal.SIGKILL)
        _kill_at(command, "migrate:sent", marker)
        unsure = a("ps", "-a")
        assert "cannot tell whether" in unsure.stderr and "orphan" in unsure.stdout
        # Its pages went there: here it waits, frozen and cut off, to resume or go.
        assert a.inspect("orphan")["State"]["Status"] == "running" and frozen(info["Id"])
    finally:
        agents[b.root].start()   # its start finishes what the killed agent left
    assert gone(b, "orphan")
    resumed = a("ps", "-a")
    assert "resuming container orphan here" in resumed.stderr
    assert a.inspect("orphan")["State"]["Status"] == "running"
    wait_for(lambda: count(a, "orphan") > 5, "the resumed counter")
    a("rm", "-f", "orphan")


def test_published_ports_are_published_again_and_keep_source_keeps_a_stopped_copy(hosts):
    from tests.support.cli import http_get
    a, b, agents = hosts
    port = free_port()
    a("run", "-d", "--name", "pub", "-p", f"{port}:80", "busybox", "httpd", "-f", "-p", "80", "-h", "/var/www")
    info = a.inspect("pub")
    a.seen.add(info["Id"])
    assert http_get(f"http://127.0.0.1:{port}/") == "hello from busybox\n"
    migrate(a, "pub", agents[b.root], "--keep-source")
    assert http_get(f"http://127.0.0.1:{port}/") == "hello from busybox\n"   # now through B's rule
    assert b.inspect("pub")["NetworkSettings"]["IPAddress"] == info["NetworkSettings"]["IPAddress"]
    kept = a.inspect("pub")["State"]
    assert kept["Status"] == "exited" and kept["Checkpointed"] is False
    a("rm", "pub")   # the source's copy goes; the address it had is B's now
    assert http_get(f"http://127.0.0.1:{port}/") == "hello from busybox\n"
    b("rm", "-f", "pub")


def test_host_paths_move_only_where_the_destination_agent_grants_them(hosts, workdir):
    a, b, agents = hosts
    shared = workdir / "shared"
    shared.mkdir(exist_ok=True)
    (shared / "note").write_text("on the host\n")
    a("run", "-d", "--name", "binder", "-v", f"{shared}:/data", "busybox", "sleep", "600")
    info = a.inspect("binder")
    a.seen.add(info["Id"])
    refused = migrate(a, "binder", agents[b.root], check=False)
    assert refused.returncode == 125 and "grants none" in refused.stderr and "--allow-bind-mounts" in refused.stderr
    assert gone(b, "binder") and a.inspect("binder")["State"]["Status"] == "running"
    agents[b.root].stop()
    agents[b.root].start(extra=("--allow-bind-mounts",))
    try:
        migrate(a, "binder", agents[b.root])
        assert b("exec", "binder", "cat", "/data/note").stdout == "on the host\n"
    finally:
        agents[b.root].stop()
        agents[b.root].start()
    b("rm", "-f", "binder")


def test_privileges_move_only_where_the_destination_agent_grants_them(hosts):
    a, b, agents = hosts
    a("run", "-d", "--name", "capper", "--cap-add", "net_admin", "busybox", "sleep", "600")
    a.seen.add(a.inspect("capper")["Id"])
    refused = migrate(a, "capper", agents[b.root], check=False)
    assert refused.returncode == 125 and "--cap-add CAP_NET_ADMIN" in refused.stderr
    assert "--allow-privileges" in refused.stderr
    assert gone(b, "capper") and a.inspect("capper")["State"]["Status"] == "running"
    agents[b.root].stop()
    agents[b.root].start(extra=("--allow-privileges",))
    try:
        migrate(a, "capper", agents[b.root])
        assert b.inspect("capper")["HostConfig"]["CapAdd"] == ["CAP_NET_ADMIN"]
    finally:
        agents[b.root].stop()
        agents[b.root].start()
    b("rm", "-f", "capper")


def redis_on(a: Ferry, b: Ferry):
    """A redis running in A, its image in both roots (one cached root
    filesystem: one image, by ID): its inspect record and a client connection."""
    from tests.support.redis import REDIS_CMD, Redis
    for ferry in (a, b):
        ferry("image", "build-debian", "redis", "--include", "redis-server", "--cmd", REDIS_CMD,
              "--expose", "6379/tcp", "-q", timeout=900)
    a("run", "-d", "--name", "redis", "redis")
    info = a.inspect("redis")
    a.seen.add(info["Id"])
    b.seen.add(info["Id"])
    ip = info["NetworkSettings"]["IPAddress"]

    def connect():
        try:
            return Redis(ip, 6379, timeout=30)
        except OSError:
            return None
    return info, wait_for(connect, "redis to listen")


def test_redis_with_its_data_and_a_client_connection_moves_there_and_back(hosts):
    """Both roots build the same recipe, so they hold one image by ID (the cached root filesystem)."""
    a, b, agents = hosts
    info, client = redis_on(a, b)
    assert client.command("DEBUG", "POPULATE", "200000") == "OK"
    for there, back in ((a, b), (b, a)):
        migrate(there, "redis", agents[back.root], "--tcp-established")
        assert client.command("DBSIZE") == 200000          # the same connection, every key
        assert client.command("GET", "key:199999") == "value:199999"
        assert gone(there, "redis") and back.inspect("redis")["State"]["Status"] == "running"
    client.close()
    a("rm", "-f", "redis")
    for ferry in (a, b):
        ferry("rmi", "redis")


def test_preflight_refuses_an_incompatible_host_and_too_little_room(hosts):
    """Offers as a source on another machine would make them, straight to the agent."""
    import httpx
    _a, b, agents = hosts
    agent = agents[b.root]
    token = open(agent.token_file).read().strip()
    with httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        host = http.get("/v1/host").json()["host"]
        images = http.get("/v1/images").json()
        offer = {"wire": 1, "container_id": "e" * 64, "name": "offered", "image": "localhost/busybox:latest",
                 "image_id": images[0]["id"], "memory_bound": 1 << 20, "files_bound": 0, "source": host}
        for change, check in (({"source": {**host, "arch": "aarch64"}}, "arch"),
                              ({"source": {**host, "cgroup_mode": "v2" if host["cgroup_mode"] != "v2" else "v1"}},
                               "cgroup_mode"),
                              ({"source": {**host, "criu_version": "99.0"}}, "criu_version"),
                              ({"files_bound": 1 << 49}, "disk"),
                              ({"memory_bound": 1 << 49, "files_bound": 1 << 30}, "memory"),
                              ({"image_id": "f" * 64}, "image")):
            answer = http.post("/v1/migrations", json={**offer, **change})
            assert answer.status_code == 409, answer.text
            assert answer.json()["check"] == check, answer.json()
        accepted = http.post("/v1/migrations", json=offer)
        assert accepted.status_code == 201, accepted.text
        ticket = accepted.json()
        assert http.get(f"/v1/migrations/{ticket['id']}").json()["state"] == "offered"
        assert http.delete(f"/v1/migrations/{ticket['id']}").json()["state"] == "aborted"
    assert gone(b, "offered")


def _tls_agent(workdir) -> tuple[Ferry, Agent, str]:
    """A third root, t, whose agent serves HTTPS with a certificate for 127.0.0.1."""
    cert, key = str(workdir / "agent.crt"), str(workdir / "agent.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=ferry-agent",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    t = _root(workdir, "t", str(workdir / "busybox-oci.tar"))
    agent = Agent(t, workdir)
    agent.url = agent.url.replace("http://", "https://")
    agent.start(extra=("--tls-cert", cert, "--tls-key", key))
    return t, agent, cert


def test_a_migration_over_tls_checks_the_agent_s_certificate(hosts, workdir):
    a, _b, _agents = hosts
    t, agent, cert = _tls_agent(workdir)
    try:
        a("run", "-d", "--name", "secure", "busybox", "sh", "-c", COUNTER)
        info = a.inspect("secure")
        a.seen.add(info["Id"])
        t.seen.add(info["Id"])
        untrusted = migrate(a, "secure", agent, check=False)
        assert untrusted.returncode == 125 and "certificate" in untrusted.stderr, untrusted.stderr
        assert len(untrusted.stderr.strip().splitlines()) == 1
        assert a.inspect("secure")["State"]["Status"] == "running"
        migrate(a, "secure", agent, "--tls-ca", cert)
        assert gone(a, "secure") and t.inspect("secure")["State"]["Status"] == "running"
        t("rm", "-f", "secure")
    finally:
        agent.stop()
    t.remove_everything()


def test_an_image_the_destination_lacks_goes_first_as_its_missing_layers(hosts, workdir):
    """Imported here, the image has an ID no other root holds: its layer tar,
    kept since the import, goes over before the container is frozen."""
    a, b, agents = hosts
    a("image", "import", make_rootfs_tar(str(workdir / "only-a.tar"), str(workdir)), "localhost/only-a:1")
    a("run", "-d", "--name", "lonely", "localhost/only-a:1", "sh", "-c", COUNTER)
    info = a.inspect("lonely")
    a.seen.add(info["Id"])
    b.seen.add(info["Id"])
    wait_for(lambda: count(a, "lonely") > 5, "the counter to count")
    done = migrate(a, "lonely", agents[b.root], "--format", "json")
    assert "image" in json.loads(done.stdout)["phases"]
    assert b.inspect("lonely")["State"]["Status"] == "running" and count(b, "lonely") > 5
    images = json.loads(b("images", "--format", "json").stdout)
    assert any(i["Id"].startswith(info["Image"][:12]) or info["Image"].startswith(i["Id"][:12]) for i in images)
    b("rm", "-f", "lonely")
    for ferry in (a, b):
        ferry("rmi", "localhost/only-a:1")


def _holding_a_secret(a: Ferry, b: Ferry, name: str) -> tuple[str, dict]:
    """A counter in A whose shell's memory holds a fresh secret; its ID seen by both roots."""
    secret = secrets.token_hex(24)
    a("run", "-d", "--name", name, "busybox", "sh", "-c", f"S={secret}; {COUNTER}")
    info = a.inspect(name)
    for ferry in (a, b):
        ferry.seen.add(info["Id"])
    wait_for(lambda: count(a, name) > 5, "the counter to count")
    return secret, info


def test_the_pages_travel_as_protected_as_the_agent_s_channel(hosts, workdir):
    """Behind a plain-http agent the page server's stream is as clear as the
    archive would be (the secret shows: the capture can see it); behind an
    https one it is CRIU's TLS, and the secret never shows."""
    from tests.support.sniff import Capture
    a, b, agents = hosts
    secret, info = _holding_a_secret(a, b, "secret")
    t, tls_agent, cert = _tls_agent(workdir)
    t.seen = {info["Id"]}
    try:
        for source, agent, flags, clear in ((a, agents[b.root], (), True), (b, tls_agent, ("--tls-ca", cert), False)):
            with Capture("lo") as capture:
                done = migrate(source, "secret", agent, "--format", "json", *flags)
            stats = json.loads(done.stdout)
            assert stats["pages_pushed"] > 0 and stats["bytes_sent"] < stats["pages_pushed"], stats
            port = _source_record(source, info["Id"])["page_port"]
            flows = capture.of_port(port)
            assert capture.dropped == 0, f"the capture lost {capture.dropped} packets"
            moved = b"".join(flows.values())
            assert len(moved) >= stats["pages_pushed"], (len(moved), stats)
            if clear:
                assert secret.encode() in moved
            else:
                assert all(data[:2] == b"\x16\x03" for data in flows.values())   # a TLS handshake record first
                assert secret.encode() not in moved
        assert t.inspect("secret")["State"]["Status"] == "running" and count(t, "secret") > 5
        t("rm", "-f", "secret")
    finally:
        tls_agent.stop()
    assert leftovers(t.root, t.seen) == []
    t.remove_everything()


def _source_record(ferry: Ferry, container_id: str) -> dict:
    directory = os.path.join(ferry.root, "migrations")
    records = [json.load(open(os.path.join(directory, n))) for n in os.listdir(directory) if n.endswith(".json")]
    return max((r for r in records if r["role"] == "source" and r["container_id"] == container_id),
               key=lambda r: r["created"])


def test_an_encrypted_migration_opens_only_with_the_destination_agent_s_key(hosts, workdir):
    """--encrypt-to: the checkpoint, memory inside, crosses the agent's plain-http
    link as age's ciphertext (the secret never shows), and only the agent
    started with the matching --decrypt-key can restore it."""
    from pyrage import x25519

    from tests.support.sniff import Capture
    a, b, agents = hosts
    agent = agents[b.root]
    mine, other = x25519.Identity.generate(), x25519.Identity.generate()
    key = workdir / "agent.key"
    key.write_text(f"{mine}\n")
    secret, info = _holding_a_secret(a, b, "sealed")
    # An agent that holds no key refuses at the offer, before anything is frozen.
    refused = migrate(a, "sealed", agent, "--encrypt-to", str(mine.to_public()), check=False)
    assert refused.returncode == 125 and "holds no key" in refused.stderr and "--decrypt-key" in refused.stderr
    assert a.inspect("sealed")["State"]["Pid"] == info["State"]["Pid"] and gone(b, "sealed")
    lazy = migrate(a, "sealed", agent, "--lazy", "--encrypt-to", str(mine.to_public()), check=False)
    assert lazy.returncode == 125 and "--lazy cannot encrypt" in lazy.stderr
    agent.stop()
    agent.start(extra=("--decrypt-key", str(key)))
    try:
        # Encrypted to another key: the destination cannot open it, and the source resumes.
        wrong = migrate(a, "sealed", agent, "--encrypt-to", str(other.to_public()), check=False)
        assert wrong.returncode == 125 and "none of the keys given opens it" in wrong.stderr, wrong.stderr
        assert a.inspect("sealed")["State"]["Status"] == "running" and gone(b, "sealed")
        assert leftovers(b.root, set()) == []
        before = count(a, "sealed")
        with Capture("lo") as capture:
            done = migrate(a, "sealed", agent, "--encrypt-to", str(mine.to_public()), "--format", "json")
        stats = json.loads(done.stdout)
        assert stats["pages_pushed"] == 0 and stats["bytes_sent"] > 0, stats   # the memory went in the archive
        moved = b"".join(capture.of_port(agent.port).values())
        assert capture.dropped == 0 and len(moved) >= stats["bytes_sent"], (len(moved), stats)
        assert b"age-encryption.org/v1\n" in moved and secret.encode() not in moved
        assert gone(a, "sealed")
        wait_for(lambda: count(b, "sealed") > before, "the counter to go on there")
    finally:
        agent.stop()
        agent.start()
    b("rm", "-f", "sealed")


def test_a_process_holding_a_file_lock_moves_with_its_lock(hosts, workdir):
    from tests.integration.test_file_locks import LOCK_FILE, build_locker
    a, b, agents = hosts
    locker = os.path.join(build_locker(workdir), "locker")
    a("create", "--name", "holder", "busybox", "/locker", LOCK_FILE)
    a("cp", locker, "holder:/locker")   # copied in, not bound: no host path to grant
    a("start", "holder")
    info = a.inspect("holder")
    a.seen.add(info["Id"])
    b.seen.add(info["Id"])
    wait_for(lambda: a("exec", "holder", "/locker", "-n", LOCK_FILE, check=False).returncode == 1,
             "the lock taken in the container")

    refused = migrate(a, "holder", agents[b.root], check=False)
    assert refused.returncode == 125 and "--file-locks" in refused.stderr, refused.stderr
    assert a.inspect("holder")["State"]["Status"] == "running"   # the source resumed, lock and all

    migrate(a, "holder", agents[b.root], "--file-locks")
    assert gone(a, "holder")
    held = b("exec", "holder", "/locker", "-n", LOCK_FILE, check=False)
    assert held.returncode == 1, held.stderr   # the moved process holds it still
    b("rm", "-f", "holder")
