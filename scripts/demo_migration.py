"""`make demo`, its last act: a live migration between two simulated hosts.

A client in its own network namespace holds one TCP connection to a redis
full of keys on host 1; `ferry migrate` moves the container to host 2; the
client's next commands, on the same connection, answer from host 2; then
`ferry migrate --lazy` brings it back (post-copy), and they answer from host 1.
Then everything the demo made goes (scripts/simhosts down).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from bench import workloads  # noqa: E402  (the checkout's, beside this script)
SIMHOSTS = os.path.join(REPO, "scripts", "simhosts")
BASE = os.environ.get("FERRY_DEMO_SIM_BASE", "/var/lib/ferry-demo-sim")
PREFIX = "fdemo"
KEYS = 100_000
REDIS_CMD = json.dumps(workloads.REDIS_CMD)   # the image every test and the benchmark build


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, text=True, capture_output=True, **kwargs)
    if done.returncode != 0:
        sys.exit(f"demo: {' '.join(argv[:6])}... failed: {done.stderr.strip()}")
    return done


def in_netns(netns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{netns}", *argv]


def ferry(host: dict, *args: str) -> subprocess.CompletedProcess:
    return run(in_netns(host["netns"], [sys.executable, "-m", "ferry", "--root", host["root"], *args]))


def main() -> int:
    subprocess.run([SIMHOSTS, "down", "--base", BASE, "--prefix", PREFIX], capture_output=True)
    step("scripts/simhosts up 2: two simulated hosts (network namespaces) and a client on one LAN")
    lines = run([SIMHOSTS, "up", "2", "--base", BASE, "--prefix", PREFIX]).stdout
    print(lines, end="")
    parsed = {name: dict(f.split("=", 1) for f in fields)
              for name, *fields in (line.split() for line in lines.splitlines())}
    h1, h2, client_ns = parsed["h1"], parsed["h2"], parsed["client"]["netns"]
    client = None
    try:
        step("ferry image build-debian redis on both hosts (one cached root filesystem: one image ID)")
        for host in (h1, h2):
            ferry(host, "image", "build-debian", "redis", "--include", "redis-server", "--cmd", REDIS_CMD,
                  "--expose", "6379/tcp", "-q")
        step("on h1: ferry run -d --name demo-redis redis")
        ferry(h1, "run", "-d", "--name", "demo-redis", "redis")
        ip = json.loads(ferry(h1, "inspect", "demo-redis").stdout)[0]["NetworkSettings"]["IPAddress"]
        print(f"   demo-redis runs on h1 at {ip}")

        step(f"the client connects to {ip}:6379 once, and stores {KEYS} keys")
        client = subprocess.Popen(in_netns(client_ns, [sys.executable, "-u", "-c", workloads.REDIS_CLIENT, ip]),
                                  cwd=REPO,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(50):
            if client.stdout.readline().strip() == "connected":
                break
            client.wait()
            client = subprocess.Popen(client.args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)
        else:
            sys.exit("demo: the client could not reach redis")

        def say(command: str) -> str:
            client.stdin.write(command + "\n")
            client.stdin.flush()
            return client.stdout.readline().strip()
        print(f"   DEBUG POPULATE {KEYS}: {say(f'DEBUG POPULATE {KEYS}')}; DBSIZE: {say('DBSIZE')}")

        step(f"on h1: ferry migrate demo-redis --to {h2['url']} --tcp-established")
        done = ferry(h1, "migrate", "demo-redis", "--to", h2["url"], "--token-file", h2["token"],
                     "--tcp-established", "--format", "json")
        stats = json.loads(done.stdout)
        for phase, seconds in stats["phases"].items():
            print(f"   {phase:<10} {seconds:6.3f} s")
        print(f"   downtime   {stats['downtime']:6.3f} s (freeze on h1 to running on h2); "
              f"{stats['pages_pushed'] / 2**20:.1f} MiB of memory went to h2's page server, "
              f"{stats['bytes_sent'] / 2**20:.1f} MiB of checkpoint through its agent")

        step("the same connection, now answered by h2")
        print(f"   DBSIZE: {say('DBSIZE')}; GET key:{KEYS - 1}: {say(f'GET key:{KEYS - 1}')}")

        step(f"on h2: ferry migrate demo-redis --to {h1['url']} --tcp-established --lazy (post-copy)")
        done = ferry(h2, "migrate", "demo-redis", "--to", h1["url"], "--token-file", h1["token"],
                     "--tcp-established", "--lazy", "--format", "json")
        stats = json.loads(done.stdout)
        print(f"   downtime   {stats['downtime']:6.3f} s (freeze on h2 to running on h1); the last page "
              f"arrived {stats['phases']['pages']:.3f} s after, over CRIU's TLS page server")
        print(f"   DBSIZE: {say('DBSIZE')}; GET key:{KEYS - 1}: {say(f'GET key:{KEYS - 1}')}")
        for name, host in (("h1", h1), ("h2", h2)):
            listed = json.loads(ferry(host, "ps", "-a", "--format", "json").stdout)
            shown = ", ".join(f"{c['Names'][0]} ({c['State']})" for c in listed) or "no containers"
            print(f"   {name}: {shown}")
    finally:
        if client is not None:
            client.kill()
            client.wait()
        step("scripts/simhosts down: the hosts, their containers and agents go")
        subprocess.run([SIMHOSTS, "down", "--base", BASE, "--prefix", PREFIX], check=False)
    print("\nlive migration finished: redis moved between hosts and back (post-copy) with its data, and its client "
          "kept its connection.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
