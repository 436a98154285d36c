"""attach and detach, typed on a real pseudo-terminal: `run -it`, `attach`,
`start -a -i`, and `run -i` on a pipe, with podman's detach keys (Ctrl-P Ctrl-Q,
or --detach-keys). Detaching leaves the container running and exits 0; the
next attach finds the same shell. The last test types the same keys to the
real podman on this machine and to ferry."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.support.cli import busybox_root
from tests.support.podman import busybox_sides

DEADLINE = 30.0
CTRL_P, CTRL_Q = b"\x10", b"\x11"


class PtySession:
    """A command on a pseudo-terminal, typed at as a user would."""

    def __init__(self, argv: list[str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvp(argv[0], argv)
        self.output = b""
        self.code: int | None = None

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:   # EIO: the command ended
            return False
        self.output += chunk
        return bool(chunk)

    def expect(self, pattern: bytes) -> None:
        """Until the output (since the start) matches `pattern`."""
        end = time.monotonic() + DEADLINE
        while not re.search(pattern, self.output):
            assert time.monotonic() < end and self._read(0.2), (pattern, self.output)

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def settle(self, seconds: float = 0.5) -> None:
        """Let what was typed arrive alone (podman detaches only on keys read one at a time)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and self._read(end - time.monotonic()):
            pass

    def wait(self) -> int:
        end = time.monotonic() + DEADLINE
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > end:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
                raise AssertionError(f"still attached: {self.output!r}")
            self._read(0.1)
        while self._read(0.05) and select.select([self.fd], [], [], 0)[0]:
            pass
        os.close(self.fd)
        self.code = os.waitstatus_to_exitcode(status)
        return self.code


def ferry_argv(ferry, *args: str) -> list[str]:
    return [sys.executable, "-m", "ferry", "--root", ferry.root, *args]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with busybox_root(tmp_path_factory.mktemp("attach")) as cli:
        yield cli


@pytest.fixture
def ferry(host):
    yield host
    for name in host.names():
        host("rm", "-f", name, check=False)


def status(ferry, name: str) -> str:
    info = ferry.inspect(name)
    ferry.seen.add(info["Id"])
    return info["State"]["Status"]


def test_ctrl_p_ctrl_q_detaches_run_it_and_attach_comes_back(ferry):
    session = PtySession(ferry_argv(ferry, "run", "-it", "--name", "shell", "busybox", "sh"))
    session.expect(rb"# ")
    session.type(b"echo $((6*7))\r")
    session.expect(rb"42\r\n")
    session.type(CTRL_P + CTRL_Q)   # in one read: ferry's detach sees the sequence all the same
    assert session.wait() == 0, session.output
    assert status(ferry, "shell") == "running"

    again = PtySession(ferry_argv(ferry, "attach", "shell"))
    again.settle(1.0)
    again.type(b"echo hi\r")
    again.expect(rb"hi\r\n")
    again.type(CTRL_P)
    again.settle(0.3)
    again.type(CTRL_Q)   # one key at a time, as typed
    assert again.wait() == 0, again.output
    assert status(ferry, "shell") == "running"

    last = PtySession(ferry_argv(ferry, "attach", "shell"))
    last.settle(1.0)
    last.type(b"exit 7\r")
    assert last.wait() == 0, last.output   # podman's attach exits 0 whatever the container's code
    assert status(ferry, "shell") == "exited"
    assert ferry.inspect("shell")["State"]["ExitCode"] == 7


def test_detach_keys_choose_the_keys_or_turn_detaching_off(ferry):
    ferry("run", "-d", "-it", "--name", "keys", "busybox", "sh")
    status(ferry, "keys")
    session = PtySession(ferry_argv(ferry, "attach", "--detach-keys", "ctrl-x", "keys"))
    session.settle(1.0)
    session.type(CTRL_P + CTRL_Q + b"echo still here\r")   # not the keys now: they reach the shell
    session.expect(rb"still here\r\n")
    session.type(b"\x18")
    assert session.wait() == 0, session.output
    assert status(ferry, "keys") == "running"

    off = PtySession(ferry_argv(ferry, "attach", "--detach-keys", "", "keys"))
    off.settle(1.0)
    off.type(CTRL_P + CTRL_Q)
    off.settle(0.5)
    off.type(b"\rexit 3\r")
    assert off.wait() == 0, off.output
    assert ferry.inspect("keys")["State"]["ExitCode"] == 3


def test_start_attach_interactive_gives_a_created_container_s_terminal(ferry):
    ferry("create", "-it", "--name", "made", "busybox", "sh")
    assert status(ferry, "made") == "created"
    session = PtySession(ferry_argv(ferry, "start", "-a", "-i", "--detach-keys", "ctrl-a", "made"))
    session.expect(rb"# ")
    session.type(b"echo $((5*5))\r")
    session.expect(rb"25\r\n")
    session.type(b"\x01")
    assert session.wait() == 0, session.output
    assert status(ferry, "made") == "running"


def test_run_i_on_a_pipe_detaches_on_the_keys_and_keeps_stdin_open(ferry):
    run = subprocess.Popen(ferry_argv(ferry, "run", "-i", "--name", "cat", "busybox", "cat"),
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run.stdin.write(b"first line\n")
    run.stdin.flush()
    assert run.stdout.readline() == b"first line\n"
    run.stdin.write(CTRL_P + CTRL_Q)
    run.stdin.flush()
    assert run.wait(timeout=DEADLINE) == 0, run.stderr.read()
    run.stdin.close()
    assert status(ferry, "cat") == "running"   # its stdin stays open: cat waits on

    attached = subprocess.run(ferry_argv(ferry, "attach", "cat"), input=b"second line\n", capture_output=True,
                              timeout=DEADLINE)
    # our stdin's end closes the container's: cat ends, and attach with it
    assert (attached.returncode, attached.stdout) == (0, b"second line\n\n"), attached.stderr
    assert ferry("logs", "cat").stdout == "first line\nsecond line\n"


def test_attach_refuses_what_does_not_run_and_bad_keys(ferry):
    ferry("create", "--name", "idle", "busybox", "true")
    status(ferry, "idle")
    refused = ferry("attach", "idle", check=False)
    assert refused.returncode == 125 and "you can only attach to running containers" in refused.stderr
    assert ferry("attach", "nosuch", check=False).returncode == 125
    assert ferry("attach", check=False).returncode == 125
    bad = ferry("run", "--detach-keys", "ab", "--name", "badkeys", "busybox", "true", check=False)
    assert bad.returncode == 125 and "invalid detach keys: Unknown character: 'ab'" in bad.stderr
    assert "badkeys" not in ferry.names()   # refused before anything was made
    assert ferry("start", "-a", "--detach-keys", "CTRL-A", "idle", check=False).returncode == 125
    assert status(ferry, "idle") == "created"
    ferry("run", "-d", "--name", "busy", "busybox", "sleep", "1000")
    status(ferry, "busy")
    assert ferry("exec", "--detach-keys", "ctrl-p,", "busy", "true", check=False).returncode == 125
    assert ferry("exec", "--detach-keys", "ctrl-x", "busy", "true").returncode == 0


@pytest.fixture(scope="module")
def sides():
    with busybox_sides("ferry-attach-") as pair:
        yield pair


def test_detaching_from_run_it_as_podman_does(sides):
    """Both engines under the same keystrokes: Ctrl-P and Ctrl-Q typed one at a
    time detach `run -it`, exit 0, and leave the shell running."""
    engines = {"podman": [*sides.podman.argv("run", "-it", *sides.podman.run_flags(), "--name", "detached",
                                             "busybox", "sh")],
               "ferry": ferry_argv(sides.ferry, "run", "-it", "--name", "detached", "busybox", "sh")}
    try:
        for name, argv in engines.items():
            session = PtySession(argv)
            session.expect(rb"# ")
            session.type(b"echo $((6*7))\r")
            session.expect(rb"42\r\n")
            session.settle()
            session.type(CTRL_P)
            session.settle(0.3)
            session.type(CTRL_Q)
            assert session.wait() == 0, (name, session.output)
        theirs, ours = sides.both("inspect", "--format", "{{.State.Status}}", "detached")
        assert theirs.stdout == ours.stdout == "running\n"
    finally:
        sides.both("rm", "-f", "-t", "0", "detached")


# "ready" each second: a line read through an attach shows it is made
TRAPPER = ("busybox", "sh", "-c", 'trap "echo got; exit 7" INT TERM; while :; do echo ready; sleep 1 & wait; done')


def _attached(argv: list[str]) -> subprocess.Popen:
    """`argv` attached to the trapping container, once the container's first line came through."""
    attached = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert attached.stdout.readline() in (b"ready\n", b"ready\r\n"), attached.stderr.read()
    return attached


@pytest.mark.parametrize("verb", ["run", "attach", "start"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_without_sig_proxy_a_signal_ends_the_attach_as_podman_s(sides, verb, signum):
    """--sig-proxy=false: INT or TERM ends the attach with podman's exit code and
    nothing on stderr, and the container, which never got the signal, runs on."""
    codes, states = {}, {}
    try:
        for engine, argv in (("podman", sides.podman.argv), ("ferry", lambda *a: ferry_argv(sides.ferry, *a))):
            extra = sides.podman.run_flags() if engine == "podman" else []
            if verb == "run":
                line = argv("run", *extra, "--sig-proxy=false", "--name", "away", *TRAPPER)
            else:
                made = subprocess.run(argv("run" if verb == "attach" else "create", *extra, *(
                    ["-d"] if verb == "attach" else []), "--name", "away", *TRAPPER), capture_output=True)
                assert made.returncode == 0, made.stderr
                line = argv(verb, *(["-a"] if verb == "start" else []), "--sig-proxy=false", "away")
            attached = _attached(line)
            attached.send_signal(signum)
            _, err = attached.communicate(timeout=60)
            codes[engine] = (attached.returncode, err)
        theirs, ours = sides.both("inspect", "--format", "{{.State.Status}}", "away")
        states = (theirs.stdout, ours.stdout)
    finally:
        sides.both("rm", "-f", "-t", "0", "away")
    assert codes["ferry"] == codes["podman"], codes
    assert codes["ferry"][0] == {signal.SIGINT: 1, signal.SIGTERM: 0}[signum]
    assert states == ("running\n", "running\n")


def test_with_sig_proxy_a_signal_goes_to_the_container(sides):
    """The last --sig-proxy counts. ferry alone: podman 4.3.1 proxies only once
    its proxy is set up, after the first output has come (seen here: its run
    exited 0 and the container never got the signal)."""
    attached = _attached(ferry_argv(sides.ferry, "run", "--sig-proxy=false", "--sig-proxy=true", "--name", "proxied",
                                    *TRAPPER))
    try:
        attached.send_signal(signal.SIGTERM)
        out, err = attached.communicate(timeout=60)
    finally:
        sides.ferry("rm", "-f", "-t", "0", "proxied")
    assert (attached.returncode, out.replace(b"ready\n", b""), err) == (7, b"got\n", b"")
