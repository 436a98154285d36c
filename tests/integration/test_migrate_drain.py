"""Draining a host (`ferry migrate --all`) between two state roots on one
machine (setup (a))."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

from tests.integration.test_migrate import gone
from tests.integration.test_migrate import hosts, workdir  # noqa: F401 (fixtures)
from tests.support.cli import wait_for
from tests.support.counter import COUNTER, count

NAMES = ("drain1", "drain2", "drain3")


def _run_three(a) -> dict[str, str]:
    """Three counters, each with a file of its own: the data that must move."""
    tokens = {}
    for name in NAMES:
        a("run", "-d", "--name", name, "busybox", "sh", "-c", COUNTER)
        a.seen.add(a.inspect(name)["Id"])
        tokens[name] = secrets.token_hex(8)
        a("exec", name, "sh", "-c", f"echo {tokens[name]} > /data")
    for name in NAMES:
        wait_for(lambda: count(a, name) > 5, f"{name} to count")
    return tokens


def _drain(a, agent, *flags: str, env: dict | None = None, **kwargs):
    argv = [sys.executable, "-m", "ferry", "--root", a.root, "migrate", "--all", "--to", agent.url,
            "--token-file", agent.token_file, *flags]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})}, **kwargs)


def test_a_dry_run_lists_what_would_move_and_moves_nothing_then_all_three_move_with_their_data(hosts):
    a, b, agents = hosts
    tokens = _run_three(a)
    a("run", "-d", "--name", "idle", "busybox", "sleep", "3600")
    a.seen.add(a.inspect("idle")["Id"])
    a("stop", "-t", "0", "idle")   # a stopped container does not move
    dry = _drain(a, agents[b.root], "--dry-run")
    assert dry.returncode == 0, dry.stderr
    listed = dry.stdout.splitlines()
    assert listed[0].split()[:3] == ["CONTAINER", "ID", "NAME"]
    assert sorted(line.split()[1] for line in listed[1:]) == sorted(NAMES)
    assert "would migrate 3 container(s)" in dry.stderr
    for name in NAMES:
        assert a.inspect(name)["State"]["Status"] == "running" and gone(b, name)
    assert not os.path.isdir(os.path.join(b.root, "migrations")) or not os.listdir(os.path.join(b.root, "migrations"))

    before = {name: count(a, name) for name in NAMES}
    done = _drain(a, agents[b.root], "--parallel", "2")
    assert done.returncode == 0, done.stderr
    assert sorted(line.split(":")[0] for line in done.stdout.splitlines()) == sorted(NAMES)
    assert "migrated 3 of 3 container(s)" in done.stderr
    for name in NAMES:
        assert gone(a, name) and b.inspect(name)["State"]["Status"] == "running"
        assert b("exec", name, "cat", "/data").stdout.strip() == tokens[name]
        assert count(b, name) >= before[name]   # from where it was
        b.seen.add(b.inspect(name)["Id"])
    assert a.inspect("idle")["State"]["Status"] == "exited"
    for name in NAMES:
        b("rm", "-f", name)
    a("rm", "-f", "idle")


def test_a_drain_stops_at_the_first_failure_and_a_signal_lets_the_migration_under_way_end(hosts, workdir):
    a, b, agents = hosts
    _run_three(a)
    # The first one fails (its name is taken on the destination, as all are),
    # and the drain tries no other.
    for name in NAMES:
        b("run", "-d", "--name", name, "busybox", "sleep", "3600")
    failed = _drain(a, agents[b.root])
    assert failed.returncode == 125, failed.stderr
    assert len([line for line in failed.stderr.splitlines() if ": failed: " in line]) == 1, failed.stderr
    assert "migrated 0 of 3 container(s)" in failed.stderr and "1 failed, 2 not tried" in failed.stderr
    for name in NAMES:
        assert a.inspect(name)["State"]["Status"] == "running"
        b("rm", "-f", name)

    # SIGTERM while the first migration waits past its point of no return:
    # it ends (moved), and no other begins.
    marker = str(workdir / f"drain-{time.monotonic_ns()}")
    command = subprocess.Popen(
        [sys.executable, "-m", "ferry", "--root", a.root, "migrate", "--all", "--to", agents[b.root].url,
         "--token-file", agents[b.root].token_file],
        env={**os.environ, "FERRY_TEST_PHASE": "migrate:confirmed", "FERRY_TEST_PHASE_FILE": marker},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: os.path.exists(marker) or command.poll() is not None, "the first migration", 120)
    assert command.poll() is None, command.communicate()
    command.send_signal(signal.SIGTERM)
    time.sleep(0.5)   # the drain has the signal; its migration goes on
    os.unlink(marker)
    out, err = command.communicate(timeout=300)
    assert command.returncode == 128 + signal.SIGTERM, err
    moved = [line.split(":")[0] for line in out.splitlines()]
    assert len(moved) == 1 and "interrupted by SIGTERM" in err, (out, err)
    assert gone(a, moved[0]) and b.inspect(moved[0])["State"]["Status"] == "running"
    for name in set(NAMES) - set(moved):
        assert a.inspect(name)["State"]["Status"] == "running" and gone(b, name)
    b.seen.add(b.inspect(moved[0])["Id"])
    b("rm", "-f", moved[0])
    for name in set(NAMES) - set(moved):
        a("rm", "-f", name)
