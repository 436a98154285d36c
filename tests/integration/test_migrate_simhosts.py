"""Live migration between simulated hosts (setup (b)): each host a network
namespace with its own state root, bridge, lease registry and agent, joined by
one LAN; a client in a third namespace holds its connections to the
container's own address. The harness is scripts/simhosts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.test_simhosts import (COUNTER_SCRIPT, DRIVER, ECHO_SERVER, PREFIX, TIMEOUT, Host,
                                             address, in_netns, run_busybox)
from tests.integration.test_simhosts import busybox_archive, host_ready, sim  # noqa: F401 (fixtures)
from tests.support.redis import REDIS_CLIENT, REDIS_CMD

# Requests in a loop from the client until told to stop: one line per answer
# (monotonic time it came, status, body), so the longest gap shows.
HTTP_LOOP = """
import sys, time, urllib.request
url, stop = sys.argv[1], sys.argv[2]
import os
while not os.path.exists(stop):
    try:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        print(f"{time.monotonic():.4f} ok {body!r}", flush=True)
    except Exception as exc:
        print(f"{time.monotonic():.4f} error {type(exc).__name__}", flush=True)
        time.sleep(0.01)
"""


def migrate(source: Host, name: str, target: Host, *flags: str, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        in_netns(source.netns, [sys.executable, "-m", "ferry", "--root", source.root, "migrate", name,
                                "--to", target.url, "--token-file", target.token, *flags]),
        capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    if check:
        assert done.returncode == 0, done.stderr
    return done


def gone(host: Host, name: str) -> bool:
    return name not in {c["Names"][0] for c in json.loads(host.ferry("ps", "-a", "--format", "json").stdout)}


class LineClient:
    """One TCP connection from the client's netns, held while the server moves."""

    def __init__(self, netns: str, ip: str):
        deadline = time.monotonic() + 20
        while True:
            self.process = subprocess.Popen(in_netns(netns, [sys.executable, "-u", "-c", DRIVER, ip, "7000"]),
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True)
            if self.process.stdout.readline().startswith("port"):
                return
            self.process.wait(timeout=TIMEOUT)
            assert time.monotonic() < deadline, self.process.stderr.read()
            time.sleep(0.1)

    def say(self, line: str) -> str:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.kill()
        self.process.wait(timeout=TIMEOUT)


def test_a_container_migrates_between_hosts_and_back_keeping_its_connection(sim):
    h1, h2 = sim.hosts
    info = run_busybox(sim, h1, "lines", "sh", "-c", ECHO_SERVER, env=(f"COUNTER={COUNTER_SCRIPT}",))
    ip, mac = address(info)
    client = LineClient(sim.client["netns"], ip)
    try:
        assert client.say("a") == "1:a"
        done = migrate(h1, "lines", h2, "--tcp-established", "--format", "json")
        stats = json.loads(done.stdout)
        assert stats["downtime"] > 0 and stats["Id"] == info["Id"]
        assert client.say("b") == "2:b"        # the same connection, the same process, on h2 now
        assert gone(h1, "lines") and address(h2.inspect("lines")) == (ip, mac)
        migrate(h2, "lines", h1, "--tcp-established")
        assert client.say("c") == "3:c"
        assert gone(h2, "lines") and address(h1.inspect("lines")) == (ip, mac)
    finally:
        client.close()
    h1.ferry("rm", "-f", "lines")


def test_nginx_under_a_request_loop_answers_rightly_throughout(sim, tmp_path):
    """Both hosts build nginx from the machine's cached root filesystem: one image, by ID."""
    h1, h2 = sim.hosts
    for host in (h1, h2):
        host.ferry("image", "build-debian", "nginx", "--include", "nginx-light", "-q")
    h1.ferry("run", "-d", "--name", "web", "nginx")
    info = h1.inspect("web")
    sim.containers.add(info["Id"])
    ip, _mac = address(info)
    stop = str(tmp_path / "stop")
    record = open(tmp_path / "answers", "w+")   # a file: a pipe nobody reads would stall the loop
    loop = subprocess.Popen(in_netns(sim.client["netns"], [sys.executable, "-u", "-c", HTTP_LOOP,
                                                           f"http://{ip}/", stop]),
                            stdout=record, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        done = migrate(h1, "web", h2, "--tcp-established", "--format", "json")
        ended = time.monotonic()
        # A request caught by the freeze may wait out its own timeout: let the
        # loop run until the moved server has answered a few.
        deadline = ended + 20
        while time.monotonic() < deadline and _answered_after(tmp_path / "answers", ended) < 3:
            time.sleep(0.2)
    finally:
        open(stop, "w").close()
        _, err = loop.communicate(timeout=TIMEOUT)
        record.seek(0)
        out = record.read()
        record.close()
    answers = [line.split(" ", 2) for line in out.splitlines()]
    oks = [(float(t), body) for t, status, body in answers if status == "ok"]
    assert oks and "Welcome to nginx!" in oks[0][1]
    assert all(body == oks[0][1] for _, body in oks), "a request got a wrong page"
    assert [t for t, _ in oks if t > ended], f"the server did not come back: {answers[-5:]}"
    gaps = [b[0] - a[0] for a, b in zip(oks, oks[1:])]
    longest = max(gaps)
    downtime = json.loads(done.stdout)["downtime"]
    print(f"\nlongest gap between answers: {longest:.3f} s (migration downtime {downtime:.3f} s, "
          f"{len(oks)} answers, {len(answers) - len(oks)} failed requests)")
    assert gone(h1, "web")
    h2.ferry("rm", "-f", "web")


def test_a_link_cut_mid_stream_resumes_the_source_and_leaves_the_destination_clean(sim, tmp_path):
    """h2's agent stops reading once the stream has begun (a test hook), so
    the stream is surely in flight when the LAN link to h2 goes down."""
    h1, h2 = sim.hosts
    info = run_busybox(sim, h1, "big", "sh", "-c",
                       "head -c 33554432 /dev/urandom > /tmp/blob; echo ready > /tmp/ready; sleep 3600")
    deadline = time.monotonic() + 60
    while h1.ferry("exec", "big", "cat", "/tmp/ready", check=False).stdout.strip() != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    marker = str(tmp_path / "agent-phase")
    agent = _restart_agent(h2, tmp_path, {"FERRY_TEST_PHASE": "migration:receiving",
                                          "FERRY_TEST_PHASE_FILE": marker, "FERRY_STREAM_IDLE_TIMEOUT": "3"})
    lan, port = f"{PREFIX}-lan", f"{h2.name}-mgmt"
    command = subprocess.Popen(
        in_netns(h1.netns, [sys.executable, "-m", "ferry", "--root", h1.root, "migrate", "big", "--to", h2.url,
                            "--token-file", h2.token]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "FERRY_STREAM_IDLE_TIMEOUT": "3"})
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(marker):
            assert command.poll() is None and time.monotonic() < deadline, command.communicate()
            time.sleep(0.02)
        subprocess.run(["ip", "-n", lan, "link", "set", port, "down"], check=True)
        os.unlink(marker)   # the agent reads on, and finds the link gone
        out, err = command.communicate(timeout=TIMEOUT)
    finally:
        subprocess.run(["ip", "-n", lan, "link", "set", port, "up"], check=True)
    assert command.returncode == 125 and "broke" in err, err
    assert "resuming container big here" in err
    assert h1.inspect("big")["State"]["Status"] == "running"
    assert h1.ferry("exec", "big", "cat", "/tmp/ready").stdout == "ready\n"
    # The destination gave up on the stalled stream and undid its restore.
    staging = os.path.join(h2.root, "tmp")
    deadline = time.monotonic() + 60
    while not gone(h2, "big") or (os.path.isdir(staging) and os.listdir(staging)):
        assert time.monotonic() < deadline, os.listdir(staging)
        time.sleep(0.2)
    assert not os.path.exists(os.path.join(h2.root, "containers", info["Id"]))
    agent.terminate()
    agent.wait(timeout=TIMEOUT)
    h1.ferry("rm", "-f", "big")


def _restart_agent(host: Host, tmp_path, env: dict) -> subprocess.Popen:
    """Host's agent again, with a test's environment (simhosts started the first one)."""
    pid_file = os.path.join(os.path.dirname(host.root), f"{host.name}.pid")
    with open(pid_file) as f, contextlib.suppress(ProcessLookupError):
        os.kill(int(f.read().strip()), 15)
    url = host.url.removeprefix("http://")
    deadline = time.monotonic() + 30
    while True:
        agent = subprocess.Popen(in_netns(host.netns, [sys.executable, "-m", "ferry", "--root", host.root, "serve",
                                                       "--listen", url, "--token-file", host.token]),
                                 stdout=open(tmp_path / "agent.log", "a"), stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env={**os.environ, **env})
        time.sleep(1)
        if agent.poll() is None:
            with open(pid_file, "w") as f:   # `simhosts down` stops it, whatever the test does
                f.write(f"{agent.pid}\n")
            return agent
        assert time.monotonic() < deadline, open(tmp_path / "agent.log").read()   # the old one may still stop



def _answered_after(record, since: float) -> int:
    """Right answers the loop has recorded since `since` (its lines: TIME STATUS BODY)."""
    with open(record) as f:
        return sum(1 for line in f if line.split(" ", 2)[1:2] == ["ok"] and float(line.split(" ", 1)[0]) > since)


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _redis_on(sim) -> dict:
    """A redis running on h1, its image on both hosts (one cached root
    filesystem: one image, by ID); its inspect record."""
    h1, h2 = sim.hosts
    for host in (h1, h2):
        host.ferry("image", "build-debian", "redis", "--include", "redis-server", "--cmd", REDIS_CMD,
                   "--expose", "6379/tcp", "-q")
    h1.ferry("run", "-d", "--name", "redis", "redis")
    info = h1.inspect("redis")
    sim.containers.add(info["Id"])
    return info


# Reads random keys on a connection of its own until told to stop; the first
# error or wrong value ends it, and its last line says how it went.
READ_LOOP = """
import os, random, sys
from bench.workloads import Redis
ip, keys, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = Redis(ip, 6379, timeout=30)
print("connected", flush=True)
reads = 0
while not os.path.exists(stop):
    key = random.randrange(keys)
    try:
        got = client.command("GET", f"key:{key}")
    except Exception as exc:
        print(f"error {exc!r}", flush=True)
        sys.exit(1)
    if got != f"value:{key}":
        print(f"wrong key:{key} {got!r}", flush=True)
        sys.exit(1)
    reads += 1
print(f"reads {reads}", flush=True)
"""
KEYS = 200000


@pytest.mark.parametrize("lazy", [False, True], ids=["stop-and-copy", "lazy"])
def test_redis_with_its_data_and_a_client_connection_moves_there_and_back(sim, tmp_path, lazy):
    """With --lazy, a second client reads keys throughout, while pages still arrive."""
    h1, h2 = sim.hosts
    info = _redis_on(sim)
    ip, mac = address(info)
    deadline = time.monotonic() + 30
    while True:
        client = subprocess.Popen(in_netns(sim.client["netns"], [sys.executable, "-u", "-c", REDIS_CLIENT, ip]),
                                  cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        if client.stdout.readline().strip() == "connected":
            break
        client.wait(timeout=TIMEOUT)
        assert time.monotonic() < deadline, client.stderr.read()
        time.sleep(0.2)

    def say(command: str) -> str:
        client.stdin.write(command + "\n")
        client.stdin.flush()
        return client.stdout.readline().strip()
    stop = str(tmp_path / "stop-reading")
    reader = None
    try:
        assert say(f"DEBUG POPULATE {KEYS}") == "OK"
        if lazy:
            reader = subprocess.Popen(in_netns(sim.client["netns"], [sys.executable, "-u", "-c", READ_LOOP, ip,
                                                                     str(KEYS), stop]),
                                      cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
            assert reader.stdout.readline().strip() == "connected"
        for there, back in ((h1, h2), (h2, h1)):
            done = migrate(there, "redis", back, "--tcp-established", *(["--lazy"] if lazy else []))
            if lazy:
                assert "the last page arrived at" in done.stderr, done.stderr
            assert say("DBSIZE") == str(KEYS)                     # every key, on the same connection
            assert say(f"GET key:{KEYS - 1}") == f"value:{KEYS - 1}"
            assert gone(there, "redis") and address(back.inspect("redis")) == (ip, mac)
        if reader:
            open(stop, "w").close()
            said = reader.stdout.read().strip().splitlines()
            assert reader.wait(timeout=TIMEOUT) == 0 and said[-1].startswith("reads "), said
            assert int(said[-1].split()[1]) > 0
    finally:
        if reader and reader.poll() is None:
            reader.kill()
            reader.wait(timeout=TIMEOUT)
        client.stdin.close()
        client.kill()
        client.wait(timeout=TIMEOUT)
    h1.ferry("rm", "-f", "redis")


def test_a_lazy_migration_whose_page_server_dies_after_the_resume_says_so_and_resumes_the_source(sim, tmp_path):
    """Past the point of no return: h2 runs the container, its pages still on
    their way (h1's management link is throttled), when h2's agent and then
    h1's page server are killed. migrate fails loudly; h2's copy, which lacks
    memory, is killed by its own monitor (no agent watches it); h1's tasks,
    frozen and intact, run again (docs/migration.md). The restarted agent
    records the lost pages."""
    h1, h2 = sim.hosts
    info = _redis_on(sim)
    ip, _mac = address(info)

    def redis(command: str) -> str:
        done = subprocess.run(in_netns(sim.client["netns"], [sys.executable, "-u", "-c", REDIS_CLIENT, ip]),
                              cwd=REPO, input=command + "\n", capture_output=True, text=True, timeout=TIMEOUT)
        return done.stdout.splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else done.stderr
    deadline = time.monotonic() + 30
    while redis("PING") != "PONG":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert redis("DEBUG POPULATE 500000") == "OK"
    # 1 MB/s out of h1 (this kernel has tbf, not netem): tens of seconds for
    # the pages, the few seconds the test needs once h2 runs the container.
    slow = ["tc", "-n", h1.netns, "qdisc", "add", "dev", "mgmt0", "root", "tbf", "rate", "8mbit", "burst", "64kb",
            "latency", "500ms"]
    subprocess.run(slow, check=True)
    try:
        command = subprocess.Popen(
            in_netns(h1.netns, [sys.executable, "-m", "ferry", "--root", h1.root, "migrate", "redis", "--to",
                                h2.url, "--token-file", h2.token, "--lazy"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        while gone(h2, "redis") or h2.inspect("redis")["State"]["Status"] != "running":
            assert command.poll() is None and time.monotonic() < deadline, command.communicate()
            time.sleep(0.1)
        # A second command on the copy whose memory is still arriving is refused.
        early = h2.ferry("container", "checkpoint", "redis", "--leave-running", check=False)
        assert early.returncode == 125 and "its memory is still arriving" in early.stderr, early.stderr
        serving = [r for r in _records(h1) if r["role"] == "source" and r["container_id"] == info["Id"]]
        assert serving and serving[-1]["page_pid"], serving
        with open(os.path.join(os.path.dirname(h2.root), f"{h2.name}.pid")) as f:
            os.kill(int(f.read().strip()), signal.SIGKILL)    # h2's agent: nobody there but the monitor
        os.killpg(serving[-1]["page_pid"], signal.SIGKILL)   # runc and the CRIU that serves the pages
        out, err = command.communicate(timeout=TIMEOUT)
    finally:
        subprocess.run(["tc", "-n", h1.netns, "qdisc", "del", "dev", "mgmt0", "root"], check=True)
    assert command.returncode == 125, err
    assert "failed after container 'redis' had resumed there" in err and "runs here again" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert h1.inspect("redis")["State"]["Status"] == "running"
    deadline = time.monotonic() + 60
    while h2.inspect("redis")["State"]["Status"] != "exited":
        assert time.monotonic() < deadline, h2.inspect("redis")["State"]
        time.sleep(0.2)
    assert redis("DBSIZE") == "500000"        # h1's memory: every key
    # No agent watched it: its monitor killed it (tests/unit/test_lazy.py), unless a
    # task that faulted on a missing page had died of it first.
    assert h2.inspect("redis")["State"]["ExitCode"] != 0
    agent = _restart_agent(h2, tmp_path, {})
    listed = subprocess.run(in_netns(h2.netns, [sys.executable, "-c", AGENT_GET, h2.url + "/v1/migrations",
                                                           h2.token]),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert listed.returncode == 0, listed.stderr
    assert [m["pages"] for m in json.loads(listed.stdout) if m["container_id"] == info["Id"]] == ["failed"]
    lost = [r for r in _records(h2) if r["role"] == "destination" and r["container_id"] == info["Id"]]
    assert lost[-1]["pages"] == "failed" and "pages lost" in lost[-1]["error"], lost[-1]
    agent.terminate()
    agent.wait(timeout=TIMEOUT)
    h2.ferry("rm", "-f", "redis")
    h1.ferry("rm", "-f", "redis")


# GET a URL of an agent with its token (the token file's path), printing the body.
AGENT_GET = """
import sys, urllib.request
token = open(sys.argv[2]).read().strip()
request = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + token})
print(urllib.request.urlopen(request, timeout=30).read().decode())
"""


def _records(host: Host) -> list[dict]:
    directory = os.path.join(host.root, "migrations")
    found = []
    for entry in sorted(os.listdir(directory)):
        if entry.endswith(".json"):
            with open(os.path.join(directory, entry)) as f:
                found.append(json.load(f))
    return sorted(found, key=lambda r: r["created"])
