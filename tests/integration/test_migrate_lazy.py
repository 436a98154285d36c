"""Lazy (post-copy) migration between two state roots on one machine (setup
(a)): the container resumes on the destination before its memory has moved,
and the pages follow over CRIU's page server, encrypted."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

from tests.integration.test_migrate import COUNTER, count, gone, migrate, redis_on
from tests.integration.test_migrate import hosts, workdir  # noqa: F401 (fixtures)
from tests.support.cli import leftovers, wait_for
from tests.support.sniff import Capture

KEYS = 300000


def _destination_record(ferry, container_id: str) -> dict:
    found = []
    for entry in os.listdir(os.path.join(ferry.root, "migrations")):
        if entry.endswith(".json"):
            with open(os.path.join(ferry.root, "migrations", entry)) as f:
                record = json.load(f)
            if record["role"] == "destination" and record["container_id"] == container_id:
                found.append(record)
    return max(found, key=lambda r: r["created"])


def _start(source, name: str, agent, phase: str, marker: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ferry", "--root", source.root, "migrate", name, "--to", agent.url,
         "--token-file", agent.token_file, "--lazy"],
        env={**os.environ, "FERRY_TEST_PHASE": phase, "FERRY_TEST_PHASE_FILE": marker},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def _paused(command: subprocess.Popen, marker: str, phase: str) -> None:
    wait_for(lambda: os.path.exists(marker) or command.poll() is not None, phase, 120)
    assert command.poll() is None, command.communicate()


def _counter(ferry, name: str):
    ferry("run", "-d", "--name", name, "busybox", "sh", "-c", COUNTER)
    info = ferry.inspect(name)
    ferry.seen.add(info["Id"])
    wait_for(lambda: count(ferry, name) > 5, "the counter to count")
    return info


class Reader:
    """A client that reads keys on its own connection for as long as it runs,
    and keeps every error it meets."""

    def __init__(self, client):
        self.client, self.reads, self.errors = client, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Reader":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            key = secrets.randbelow(KEYS)
            try:
                got = self.client.command("GET", f"key:{key}", timeout=30)
            except Exception as exc:   # noqa: BLE001 - every failure is what the test counts
                self.errors.append(repr(exc))
                return
            if got != f"value:{key}":
                self.errors.append(f"key:{key} = {got!r}")
                return
            self.reads += 1


def test_redis_moves_lazily_there_and_back_answering_throughout_and_its_pages_travel_encrypted(hosts):
    from tests.support.redis import Redis
    a, b, agents = hosts
    info, client = redis_on(a, b)
    ip = info["NetworkSettings"]["IPAddress"]
    reader_client = Redis(ip, 6379, timeout=30)
    assert client.command("DEBUG", "POPULATE", str(KEYS)) == "OK"
    secret = secrets.token_hex(24)
    assert client.command("SET", "secret", secret) == "OK"
    with Reader(reader_client) as reader:
        for hop, (there, back) in enumerate(((a, b), (b, a))):
            before = reader.reads
            with Capture("lo") as capture:
                done = migrate(there, "redis", agents[back.root], "--tcp-established", "--lazy", "--format", "json")
            stats = json.loads(done.stdout)
            assert stats["lazy"] is True and stats["phases"]["pages"] > 0, stats
            # The destination has every page, and said so.
            assert _destination_record(back, info["Id"])["pages"] == "complete"
            assert client.command("DBSIZE") == KEYS + 1                   # the same connection, every key
            assert client.command("GET", "secret") == secret
            assert gone(there, "redis") and back.inspect("redis")["State"]["Status"] == "running"
            wait_for(lambda: reader.reads > before + 100, "the reader to go on reading")
            assert reader.errors == []
            if hop == 0:
                # What a listener on the link saw of the page server: TLS records
                # (a handshake first), many MiB of them, and never the secret.
                port = max((r for r in _records(there) if r["role"] == "source"),
                           key=lambda r: r["created"])["page_port"]
                flows = capture.of_port(port)
                assert capture.dropped == 0, f"the capture lost {capture.dropped} packets"
                assert flows, f"nothing was captured on the page server's port {port}"
                moved = sum(len(data) for data in flows.values())
                assert moved > 16 << 20, moved     # redis's memory went this way
                for data in flows.values():
                    assert data[:1] == b"\x16" and data[1:2] == b"\x03"   # a TLS handshake record
                    assert secret.encode() not in data
    assert reader.errors == [] and reader.reads > 0
    client.close()
    reader_client.close()
    a("rm", "-f", "redis")
    for ferry in (a, b):
        ferry("rmi", "redis")
        assert not [n for n in os.listdir(os.path.join(ferry.root, "migrations")) if n.endswith(".tls")]


def _records(ferry) -> list[dict]:
    found = []
    for entry in os.listdir(os.path.join(ferry.root, "migrations")):
        if entry.endswith(".json"):
            with open(os.path.join(ferry.root, "migrations", entry)) as f:
                found.append(json.load(f))
    return found


def test_a_destination_that_fails_before_the_resume_leaves_the_source_running(hosts):
    a, b, agents = hosts
    info = _counter(a, "lazyfail")
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        failed = migrate(a, "lazyfail", agents[b.root], "--lazy", "-p", f"{port}:80", check=False)
    finally:
        busy.close()
    assert failed.returncode == 125 and f"port {port}" in failed.stderr, failed.stderr
    state = a.inspect("lazyfail")["State"]
    assert state["Status"] == "running" and state["Pid"] == info["State"]["Pid"]   # never stopped, only frozen
    before = count(a, "lazyfail")
    wait_for(lambda: count(a, "lazyfail") > before, "the counter to go on")
    assert gone(b, "lazyfail")
    assert leftovers(b.root, set()) == [] and not os.path.exists(os.path.join(b.root, "containers", info["Id"]))
    a("rm", "-f", "lazyfail")


def test_a_migrate_killed_before_the_resume_leaves_the_source_serving(hosts, workdir):
    """SIGKILL while the tasks are frozen and the pages wait: the guard fails the
    page server, CRIU thaws the tasks, and they run on without any command."""
    a, b, agents = hosts
    info = _counter(a, "lazykill")
    marker = str(workdir / f"phase-{time.monotonic_ns()}")
    # Past the dump of all but memory, before the archive is whole: the
    # destination cannot have begun its restore.
    command = _start(a, "lazykill", agents[b.root], "checkpoint:dumped", marker)
    _paused(command, marker, "checkpoint:dumped")
    # Read beside the container: the checkpoint holds its lock, and its tasks are frozen.
    counted = os.path.join(a.root, "containers", info["Id"], "upper", "tmp", "count")

    def now() -> int:
        with open(counted) as f:
            return int(f.read().strip() or 0)
    frozen = now()
    time.sleep(0.5)
    assert now() == frozen   # frozen indeed, waiting for its pages to be asked for
    os.kill(command.pid, signal.SIGKILL)
    command.wait(timeout=60)
    wait_for(lambda: now() > frozen, "the counter to go on after the kill, with no command run", 60)
    wait_for(lambda: gone(b, "lazykill"), "the destination to let go", 60)
    listed = a("ps")
    assert "lazykill" in listed.stdout
    assert a.inspect("lazykill")["State"]["Pid"] == info["State"]["Pid"]
    assert leftovers(b.root, set()) == []
    a("rm", "-f", "lazykill")


def test_pre_copy_is_refused_in_the_words_of_system_check(hosts):
    a, b, agents = hosts
    check = json.loads(a("system", "check", "--format", "json", check=False).stdout)["checks"]["soft_dirty"]
    assert check["status"] != "ok"   # this kernel: no soft-dirty tracking (HOST-NOTES)
    refused = migrate(a, "anything", agents[b.root], "--pre-copy", check=False)
    assert refused.returncode == 125, refused.stderr
    assert refused.stderr.startswith(f"ferry: error: --pre-copy is not possible on this host: soft_dirty: "
                                     f"{check['detail']} (hint: "), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert gone(b, "anything")
