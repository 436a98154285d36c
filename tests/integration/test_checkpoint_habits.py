"""What podman users expect of checkpoint and restore (issue 15), checked
against podman 4.3.1 on this machine where podman has a say: states, IDs,
addresses, --rm, inspect's fields and --print-stats' shape."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest

from tests.support.cli import Ferry, busybox_root, wait_for
from tests.support.counter import COUNTER, count


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with busybox_root(tmp_path_factory.mktemp("habits")) as ferry:
        yield ferry


def _run(host: Ferry, name: str, *flags: str, command: str = COUNTER) -> str:
    container_id = host("run", "-d", "--name", name, *flags, "busybox", "sh", "-c", command).stdout.strip()
    host.seen.add(container_id)
    wait_for(lambda: count(host, name) > 2 if command == COUNTER else True, f"{name} to count")
    return container_id


def _gone(host: Ferry, *names: str) -> None:
    for name in names:
        host("rm", "-f", name, check=False)


def test_a_checkpoint_taken_with_R_restores_after_a_stop(host):
    """Item 5: checkpoint -R, stop, restore (podman does so)."""
    _run(host, "rstop")
    host("container", "checkpoint", "-R", "rstop")
    kept = count(host, "rstop")
    host("stop", "-t", "0", "rstop")
    host("container", "restore", "rstop")
    assert host.inspect("rstop")["State"]["Status"] == "running"
    assert count(host, "rstop") >= kept
    _gone(host, "rstop")


def test_a_copy_under_a_new_name_takes_a_new_address_while_the_old_one_is_held(host):
    """Item 6, README's own example: checkpoint --file, then restore --name while the original exists."""
    _run(host, "orig")
    archive = str(host.workdir / "orig.tar.zst")
    old = host.inspect("orig")["NetworkSettings"]
    host("container", "checkpoint", "orig", "--file", archive)
    refused = host("container", "restore", "--name", "copy-tcp", "--file", archive, "--tcp-established",
                   check=False)
    assert refused.returncode == 125 and f"IP {old['IPAddress']} is already leased" in refused.stderr
    assert "its TCP connections live on that address" in refused.stderr and "copy-tcp" not in host.names()
    host("container", "restore", "--name", "copy", "--file", archive)
    new = host.inspect("copy")["NetworkSettings"]
    assert new["IPAddress"] != old["IPAddress"] and new["MacAddress"] != old["MacAddress"]
    assert count(host, "copy") > 0
    # Once the address is free again, a restore keeps it: a move to another host needs that.
    _gone(host, "orig", "copy")
    host("container", "restore", "--name", "moved", "--file", archive)
    assert host.inspect("moved")["NetworkSettings"]["IPAddress"] == old["IPAddress"]
    _gone(host, "moved")


def test_only_a_mac_the_user_chose_is_kept_at_any_cost(host):
    """Item 20: the same archive restored twice with --ignore-static-ip; a chosen MAC refuses."""
    _run(host, "macs")
    archive = str(host.workdir / "macs.tar.zst")
    host("container", "checkpoint", "macs", "--file", archive, "--leave-running")
    for copy in ("mac1", "mac2"):
        host("container", "restore", "--name", copy, "--file", archive, "--ignore-static-ip")
    macs = {host.inspect(n)["NetworkSettings"]["MacAddress"] for n in ("macs", "mac1", "mac2")}
    assert len(macs) == 3
    _gone(host, "macs", "mac1", "mac2")
    _run(host, "chosen", "--mac-address", "02:42:0a:5a:77:01")
    chosen = str(host.workdir / "chosen.tar.zst")
    host("container", "checkpoint", "chosen", "--file", chosen, "--leave-running")
    refused = host("container", "restore", "--name", "chosen2", "--file", chosen, check=False)
    assert refused.returncode == 125 and "02:42:0a:5a:77:01" in refused.stderr.lower(), refused.stderr
    assert "--ignore-static-mac" in refused.stderr
    host("container", "restore", "--name", "chosen3", "--file", chosen, "--ignore-static-mac")
    assert host.inspect("chosen3")["NetworkSettings"]["MacAddress"] != "02:42:0a:5a:77:01"
    _gone(host, "chosen", "chosen3")


def test_a_checkpointed_container_is_exited_0_and_start_will_not_drop_its_checkpoint(host):
    """Item 7 (and 23): podman's state and fields; a start refuses where podman starts afresh."""
    _run(host, "ck")
    host("container", "checkpoint", "ck")
    state = host.inspect("ck")["State"]
    assert (state["Status"], state["ExitCode"], state["Checkpointed"]) == ("exited", 0, True)
    assert state["CheckpointLog"].endswith("/dump.log") and "RestoreLog" not in state
    assert host.inspect("ck")["OCIRuntime"] == "runc"
    refused = host("start", "ck", check=False)
    assert refused.returncode == 125 and "waits in its checkpoint" in refused.stderr
    assert "ferry container restore ck" in refused.stderr and "--ignore-checkpoint" in refused.stderr
    host("container", "restore", "ck")
    state = host.inspect("ck")["State"]
    assert state["Restored"] and state["RestoreLog"].endswith("/restore.log") and not state["Checkpointed"]
    host("stop", "-t", "0", "ck")
    host("start", "ck")
    state = host.inspect("ck")["State"]
    assert not state["Restored"] and "RestoreLog" not in state and "CheckpointLog" not in state
    host("container", "checkpoint", "ck")
    host("start", "--ignore-checkpoint", "ck")
    state = host.inspect("ck")["State"]
    assert state["Status"] == "running" and not state["Checkpointed"]
    assert host("container", "restore", "ck", check=False).returncode == 125
    _gone(host, "ck")


def test_a_foreground_client_says_its_container_was_checkpointed(host):
    """Item 7: `run` in the foreground exited 137 without a word."""
    client = subprocess.Popen([sys.executable, "-m", "ferry", "--root", host.root, "run", "--name", "fg",
                               "busybox", "sh", "-c", COUNTER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
    try:
        wait_for(lambda: "fg" in host.names() and host.inspect("fg")["State"]["Status"] == "running" and
                 count(host, "fg") > 2, "fg to count")
        host.seen.add(host.inspect("fg")["Id"])
        host("container", "checkpoint", "fg")
        _, err = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.send_signal(signal.SIGKILL)
            client.wait()
    assert client.returncode == 0, err
    assert "container fg was checkpointed" in err
    host("container", "restore", "fg")
    assert host.inspect("fg")["State"]["Status"] == "running"
    _gone(host, "fg")


def test_rm_containers_go_with_their_export_and_refuse_a_local_checkpoint(host):
    """Items 15 and 21, as podman: 'cannot checkpoint containers that have been started with --rm unless
    --export is used', and the export removes it."""
    _run(host, "gone", "--rm")
    refused = host("container", "checkpoint", "gone", check=False)
    assert refused.returncode == 125 and "started with --rm" in refused.stderr and "--export" in refused.stderr
    assert host.inspect("gone")["State"]["Status"] == "running"
    archive = str(host.workdir / "gone.tar.zst")
    host("container", "checkpoint", "gone", "--export", archive)
    assert "gone" not in host.names()
    host("container", "restore", "--import", archive)
    assert host.inspect("gone")["State"]["Status"] == "running"
    _gone(host, "gone")


def test_stop_signal_is_shown_as_podman_shows_it(host):
    """Item 15: a number, whatever form it was given in."""
    _run(host, "sig", command="sleep 1000")
    assert host.json("inspect", "sig")[0]["Config"]["StopSignal"] == 15
    _gone(host, "sig")


def test_a_refused_dump_says_why_at_once_and_the_container_runs_on(host):
    """Item 18: a connected TCP socket without --tcp-established."""
    _run(host, "talk", command="nc -l -p 80 > /dev/null; sleep 1000")
    ip = host.inspect("talk")["NetworkSettings"]["IPAddress"]
    peer = wait_for(lambda: _connect(ip), "talk to listen")
    try:
        refused = host("container", "checkpoint", "talk", check=False)
    finally:
        peer.close()
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 125 and len(lines) == 1 and "--tcp-established" in lines[0]
    assert host.inspect("talk")["State"]["Status"] == "running"
    _gone(host, "talk")


def _connect(ip: str):
    try:
        return socket.create_connection((ip, 80), timeout=2)
    except OSError:
        return None


def test_an_import_without_a_name_keeps_the_container_s_id(host):
    """Item 19: podman keeps it; with --name it gives a new one."""
    original = _run(host, "keep", "--rm")
    archive = str(host.workdir / "keep.tar.zst")
    host("container", "checkpoint", "keep", "--export", archive)
    restored = host("container", "restore", "--import", archive).stdout.strip()
    assert restored == original and host.inspect("keep")["Id"] == original
    assert count(host, "keep") > 0
    again = host("container", "restore", "--import", archive, "--name", "keep2", "--ignore-static-ip").stdout.strip()
    assert again != original
    host.seen.add(again)
    _gone(host, "keep", "keep2")


def test_print_stats_has_podman_s_shape(host):
    """Item 24: podman_*_duration and container_statistics, ferry's phases kept as extra keys."""
    _run(host, "stats")
    checkpoint = json.loads(host("container", "checkpoint", "stats", "--print-stats").stdout)
    assert set(checkpoint) == {"podman_checkpoint_duration", "container_statistics"}
    [entry] = checkpoint["container_statistics"]
    assert entry["RawInput"] == "stats" and entry["runtime_checkpoint_duration"] > 0
    assert {"freezing_time", "frozen_time", "memdump_time", "memwrite_time", "pages_scanned",
            "pages_written"} <= set(entry["criu_statistics"]) and "ferry_phases" in entry
    restore = json.loads(host("container", "restore", "stats", "--print-stats").stdout)
    assert set(restore) == {"podman_restore_duration", "container_statistics"}
    [entry] = restore["container_statistics"]
    assert entry["runtime_restore_duration"] > 0 and {"forking_time", "restore_time", "pages_restored"} <= \
        set(entry["criu_statistics"])
    _gone(host, "stats")


def _bind(port: int) -> OSError | None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as servers do
        try:
            sock.bind(("0.0.0.0", port))
            sock.listen()
        except OSError as exc:
            return exc
    return None


def test_a_published_port_is_held_while_the_container_publishes_it(host):
    """Item 12: a host process that binds the port fails, rather than being shadowed by the DNAT rule."""
    from tests.support.cli import free_port, http_get
    port = free_port()
    _run(host, "held", "-p", f"{port}:80", command="httpd -f -p 80 -h /var/www")
    refused = _bind(port)
    assert refused is not None and refused.errno == 98, refused   # EADDRINUSE
    assert http_get(f"http://127.0.0.1:{port}/") == "hello from busybox\n"
    host("stop", "-t", "0", "held")
    assert _bind(port) is None          # released with the container's ports
    host("start", "held")
    assert _bind(port) is not None
    host("container", "checkpoint", "held")
    assert _bind(port) is None          # a checkpointed container holds nothing
    host("container", "restore", "held")
    assert _bind(port) is not None and http_get(f"http://127.0.0.1:{port}/") == "hello from busybox\n"
    _gone(host, "held")
    assert _bind(port) is None


def test_two_network_options_are_refused_not_half_taken(host):
    """Item 4: --network a --network b joined only b. Several networks are
    joined now (test_network_modes.py); one that does not exist refuses them all."""
    done = host("run", "-d", "--name", "nets", "--network", "a", "--network", "b", "busybox", "true", check=False)
    assert done.returncode == 125 and "network 'a' not found" in done.stderr, done.stderr
    assert "nets" not in host.names()
