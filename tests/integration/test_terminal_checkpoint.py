"""A `-t` container checkpointed and restored with real runc and CRIU (issue 18: no behaviour lost).

The container's shell counts on its terminal and answers lines typed into it;
its count lives in the shell's memory alone. It goes through a local
checkpoint and restore in place, then an exported checkpoint, `rm` and an
import under a new name. After each restore the count goes on from where it
was, the terminal still carries input and output both ways (through the
monitor's attach socket, as `ferry run -t` uses it), and logs, exec, inspect,
stop with its exit code and rm behave as for any container.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from ferry.runtime import attach
from ferry.store.layout import ContainerFiles
from tests.integration.test_containers import _run_on_pty
from tests.support.cli import Ferry, busybox_root, leftovers, wait_for

# Counts on its terminal every ~0.2 s (the timeout of `read`), and answers each
# line typed into the terminal. TERM ends it with a code of its own.
COUNT_AND_ANSWER = ('trap \'echo "stopping at $i"; exit 7\' TERM; i=0; '
                    'while true; do i=$((i+1)); echo "tick $i"; '
                    'if read -t 0.2 line; then echo "got $line at $i"; fi; done')
TICK = re.compile(r"^tick (\d+)\r?$", re.MULTILINE)
ATTACH_DEADLINE = 30.0


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with busybox_root(tmp_path_factory.mktemp("tty-ckpt")) as cli:
        yield cli


@pytest.fixture
def ferry(host):
    """The host, whose containers are gone before the leak check, even after a failure."""
    yield host
    for name in host.names():
        host("rm", "-f", name, check=False)


def track(ferry: Ferry, name: str) -> dict:
    info = ferry.inspect(name)
    ferry.seen.add(info["Id"])
    return info


def ticks(text: str) -> list[int]:
    return [int(n) for n in TICK.findall(text)]


def logged_ticks(ferry: Ferry, name: str) -> list[int]:
    return ticks(ferry("logs", name).stdout)


class Attached:
    """A client on the monitor's attach socket: the container's terminal, relayed."""

    def __init__(self, ferry: Ferry, name: str):
        files = ContainerFiles(os.path.join(ferry.root, "containers", ferry.inspect(name)["Id"]))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with attach.SocketPath(files.attach_socket) as short:
            self.sock.connect(short.path)
        self.sock.settimeout(1.0)
        self.reader = attach.FrameReader()
        self.output = b""
        self.exit_code: bytes | None = None
        self.closed = False

    def type(self, text: str) -> None:
        self.sock.sendall(attach.frame(attach.STDIN, text.encode()))

    def _receive(self) -> None:
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        if not data:
            self.closed = True
            return
        for kind, payload in self.reader.feed(data):
            if kind == attach.EXIT:
                self.exit_code = payload
            else:
                assert kind == attach.STDOUT, (kind, payload)   # a terminal has one stream
                self.output += payload

    def wait_for(self, predicate, what: str) -> None:
        end = time.monotonic() + ATTACH_DEADLINE
        while not predicate(self):
            if self.closed or time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}; the terminal showed {self.output[-300:]!r}")
            self._receive()

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def detach(self) -> None:
        self.sock.close()


def _check_goes_on(host: Ferry, name: str, before: int, word: str) -> None:
    """After a restore: the count goes on above `before`, on the terminal and in
    the log, and a line typed into the terminal reaches the restored shell."""
    info = host.inspect(name)
    assert info["State"]["Status"] == "running"
    assert info["Config"]["Tty"] is True          # podman's place for it: .Config.Tty

    client = Attached(host, name)
    client.wait_for(lambda c: any(n > before for n in ticks(c.text())), "the restored count on the terminal")
    assert min(ticks(client.text())) > before      # went on from memory, never from 1
    client.type(word + "\n")
    client.wait_for(lambda c: f"got {word} at " in c.text(), "the restored shell to answer")
    answered_at = int(re.search(rf"got {word} at (\d+)", client.text()).group(1))
    assert answered_at > before
    client.detach()   # a client that leaves does not stop the container

    wait_for(lambda: f"got {word} at {answered_at}" in host("logs", name).stdout, "the answer in the log")
    wait_for(lambda: logged_ticks(host, name)[-1] > answered_at, "the count to go on after the detach")
    counted = logged_ticks(host, name)
    assert counted[0] == 1 and before in counted   # the log holds the output from before the checkpoint...
    assert counted == sorted(set(counted))        # ...and after it, with no restart in between
    assert host.inspect(name)["State"]["Status"] == "running"

    done = host("exec", name, "sh", "-c", "echo $((6*7)); readlink /proc/1/fd/0; readlink /proc/1/fd/1")
    assert done.stdout.split() == ["42", "/dev/pts/0", "/dev/pts/0"]   # the restored shell keeps its terminal
    assert host("exec", name, "sh", "-c", "exit 3", check=False).returncode == 3


def test_terminal_container_survives_local_and_exported_checkpoints(ferry, tmp_path):
    cid = ferry("run", "-d", "-t", "--name", "tty-counter", "busybox", "sh", "-c", COUNT_AND_ANSWER).stdout.strip()
    track(ferry, "tty-counter")
    assert ferry.inspect("tty-counter")["Config"]["Tty"] is True
    wait_for(lambda: len(logged_ticks(ferry, "tty-counter")) >= 5, "the count on the terminal")

    # An attached client sees the checkpoint as the container's exit, with podman's code 0.
    watcher = Attached(ferry, "tty-counter")
    watcher.wait_for(lambda c: ticks(c.text()), "the count on an attached terminal")
    ferry("container", "checkpoint", "tty-counter")
    watcher.wait_for(lambda c: c.exit_code is not None, "the checkpoint's exit on the attached terminal")
    assert watcher.exit_code == b"0"
    watcher.detach()
    info = ferry.inspect("tty-counter")
    assert info["State"]["Status"] == "exited" and info["Config"]["Tty"] is True
    before = logged_ticks(ferry, "tty-counter")[-1]

    ferry("container", "restore", "tty-counter")
    _check_goes_on(ferry, "tty-counter", before, "local")

    archive = str(tmp_path / "tty-counter.tar.zst")
    ferry("container", "checkpoint", "tty-counter", "--export", archive)
    before = logged_ticks(ferry, "tty-counter")[-1]
    ferry("rm", "tty-counter")
    assert leftovers(ferry.root, {cid}) == []
    restored = ferry("container", "restore", "--import", archive, "--name", "tty-imported").stdout.strip()
    ferry.seen.add(restored)
    assert restored != cid and "tty-counter" not in ferry.names()
    _check_goes_on(ferry, "tty-imported", before, "imported")

    ferry("stop", "tty-imported")
    info = ferry.inspect("tty-imported")
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 7   # the shell's own code
    logs = ferry("logs", "tty-imported").stdout
    stopped_at = re.search(r"^stopping at (\d+)", logs, re.MULTILINE)
    assert stopped_at and int(stopped_at.group(1)) >= ticks(logs)[-1]   # the trap may come before the echo
    ferry("rm", "tty-imported")
    assert "tty-imported" not in ferry.names()
    assert leftovers(ferry.root, {cid, restored}) == []


def test_foreground_terminal_run_ends_at_checkpoint_and_restores(ferry):
    """`ferry run -t` on a real terminal, checkpointed from elsewhere: it returns
    0 and says so, as podman does; the restored container counts on from memory."""
    ended: dict = {}
    argv = ["--root", ferry.root, "run", "-t", "--name", "tty-fg", "busybox", "sh", "-c", COUNT_AND_ANSWER]
    runner = threading.Thread(target=lambda: ended.update(result=_run_on_pty(argv, [], deadline=60)))
    runner.start()
    try:
        wait_for(lambda: "tty-fg" in ferry.names() and len(logged_ticks(ferry, "tty-fg")) >= 5,
                 "the foreground count")
        track(ferry, "tty-fg")
        ferry("container", "checkpoint", "tty-fg")
    except BaseException:
        ferry("rm", "-f", "tty-fg", check=False)   # ends the foreground run, whose thread waits on it
        raise
    finally:
        runner.join(timeout=90)
    assert not runner.is_alive(), "ferry run -t did not return after the checkpoint"
    code, output = ended["result"]
    assert code == 0, output
    assert b"tick 1\r\n" in output and b"was checkpointed" in output
    before = logged_ticks(ferry, "tty-fg")[-1]
    assert max(ticks(output.decode(errors="replace"))) <= before

    ferry("container", "restore", "tty-fg")
    _check_goes_on(ferry, "tty-fg", before, "foreground")
    ferry("rm", "-f", "tty-fg")
