"""Live migration between simulated hosts (setup (b)): each host a network
namespace with its own state root, bridge, lease registry and agent, joined by
one LAN; a client in a third namespace holds its connections to the
container's own address. The harness is scripts/simhosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.integration.test_simhosts import (COUNTER_SCRIPT, DRIVER, ECHO_SERVER, PAGE, PREFIX, TIMEOUT, Host,
                                             address, in_netns, run_busybox)
from tests.integration.test_simhosts import busybox_archive, host_ready, sim  # noqa: F401 (fixtures)

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


def test_a_web_server_under_a_request_loop_answers_rightly_throughout(sim, tmp_path):
    h1, h2 = sim.hosts
    info = run_busybox(sim, h1, "web", "httpd", "-f", "-p", "80", "-h", "/var/www")
    ip, _mac = address(info)
    stop = str(tmp_path / "stop")
    record = open(tmp_path / "answers", "w+")   # a file: a pipe nobody reads would stall the loop
    loop = subprocess.Popen(in_netns(sim.client["netns"], [sys.executable, "-u", "-c", HTTP_LOOP,
                                                           f"http://{ip}/", stop]),
                            stdout=record, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        began = time.monotonic()
        done = migrate(h1, "web", h2, "--tcp-established", "--format", "json")
        ended = time.monotonic()
        time.sleep(1)
    finally:
        open(stop, "w").close()
        _, err = loop.communicate(timeout=TIMEOUT)
        record.seek(0)
        out = record.read()
        record.close()
    answers = [line.split(" ", 2) for line in out.splitlines()]
    oks = [(float(t), body) for t, status, body in answers if status == "ok"]
    during = [t for t, _ in oks if began <= t <= ended]
    print(f"\nmigrate from {began:.3f} to {ended:.3f}; answers from {oks[0][0]:.3f} to {oks[-1][0]:.3f}, "
          f"{len(during)} during; client said: {err.strip()[-500:]!r}")
    assert oks and all(body == repr(PAGE) for _, body in oks), "a request got a wrong page"
    assert float(answers[-1][0]) > oks[0][0] and answers[-1][1] == "ok", "the server did not come back"
    gaps = [b[0] - a[0] for a, b in zip(oks, oks[1:])]
    longest = max(gaps)
    downtime = json.loads(done.stdout)["downtime"]
    print(f"\nlongest gap between answers: {longest:.3f} s (migration downtime {downtime:.3f} s, "
          f"{len(oks)} answers, {len(answers) - len(oks)} failed requests)")
    assert gone(h1, "web")
    h2.ferry("rm", "-f", "web")


def test_a_link_cut_mid_stream_resumes_the_source_and_leaves_the_destination_clean(sim):
    h1, h2 = sim.hosts
    # 256 MiB of random pages in /dev/shm: a stream long enough to cut.
    run_busybox(sim, h1, "big", "sh", "-c",
                       "head -c 268435456 /dev/urandom > /dev/shm/blob; echo ready > /tmp/ready; sleep 3600")
    deadline = time.monotonic() + 60
    while h1.ferry("exec", "big", "cat", "/tmp/ready", check=False).stdout.strip() != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    staging = os.path.join(h2.root, "tmp")
    lan = f"{PREFIX}-lan"
    uplink = _lan_port_of(lan, h2)
    # 50 Mbit/s towards h2's agent: the 256 MiB take some 40 s, time to cut the link mid-stream.
    subprocess.run(["ip", "netns", "exec", lan, "tc", "qdisc", "add", "dev", uplink, "root", "tbf", "rate", "50mbit",
                    "burst", "256kb", "latency", "400ms"], check=True)
    command = subprocess.Popen(
        in_netns(h1.netns, [sys.executable, "-m", "ferry", "--root", h1.root, "migrate", "big", "--to", h2.url,
                            "--token-file", h2.token]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "FERRY_STREAM_IDLE_TIMEOUT": "3"})
    try:
        deadline = time.monotonic() + 60
        while not (os.path.isdir(staging) and os.listdir(staging)):
            assert command.poll() is None and time.monotonic() < deadline, command.communicate()
            time.sleep(0.02)
        subprocess.run(["ip", "-n", lan, "link", "set", uplink, "down"], check=True)
        out, err = command.communicate(timeout=TIMEOUT)
    finally:
        subprocess.run(["ip", "-n", lan, "link", "set", uplink, "up"], check=True)
    assert command.returncode == 125 and "broke" in err, err
    state = h1.inspect("big")["State"]
    assert state["Status"] == "running", state
    assert h1.ferry("exec", "big", "cat", "/tmp/ready").stdout == "ready\n"
    # The destination gives up on the stalled stream and undoes its restore.
    deadline = time.monotonic() + 60
    while gone(h2, "big") is False or (os.path.isdir(staging) and os.listdir(staging)):
        assert time.monotonic() < deadline, os.listdir(staging)
        time.sleep(0.2)
    h1.ferry("rm", "-f", "big")


def _lan_port_of(lan: str, host: Host) -> str:
    """The LAN bridge's port to `host`'s agent address: the migration's stream."""
    port = f"{host.name}-mgmt"
    subprocess.run(["ip", "-n", lan, "link", "show", port], check=True, capture_output=True)
    return port
