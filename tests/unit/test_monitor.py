"""The container monitor (runtime/monitor.py) in this process, without root:
`runc create` is faked at proc.spawn by starting the "container" as a real
shell with the stdio the monitor hands runc (pipes, or a pty sent back over
the console socket as runc does), and the other runc verbs and the exit
command are answered at proc._execute. The monitor's own loop then does the
real work: it logs the output, serves attach clients, reaps the container
and records its exit. main() runs in a child process, with the same fakes."""

from __future__ import annotations

import array
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time

import pytest

from ferry.runtime import attach, monitor
from ferry.store.layout import CHECKPOINTING, SPACE_RESERVE
from ferry.util import proc

CONTAINER_ID = "c" * 64


class FakeRunc:
    """runc at the chokepoint: `create` starts `script` as the container."""

    def __init__(self, script: str):
        self.script = script
        self.calls: list[list[str]] = []
        self.create_fails: tuple[int, str] | None = None   # exit code, the JSON log's error message
        self.container: subprocess.Popen | None = None

    def spawn(self, argv, *, desc, pass_fds=(), stdin=None, stdout=None, stderr=None, env=None, cwd=None,
              new_session=False):
        argv = list(argv)
        self.calls.append(argv)
        assert "create" in argv or "restore" in argv, argv
        log_path = argv[argv.index("--log") + 1]
        if self.create_fails:
            code, message = self.create_fails
            with open(log_path, "w") as f:
                f.write(json.dumps({"level": "info", "msg": "starting"}) + "\n")
                f.write(json.dumps({"level": "error", "msg": message}) + "\n")
            return Finished(code)
        pid_file = argv[argv.index("--pid-file") + 1]
        if "--console-socket" in argv:
            master, slave = os.openpty()
            self.container = subprocess.Popen(["sh", "-c", self.script], stdin=slave, stdout=slave, stderr=slave,
                                              start_new_session=True)
            os.close(slave)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as console:
                console.connect(argv[argv.index("--console-socket") + 1])
                console.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])
            os.close(master)
        else:
            self.container = subprocess.Popen(["sh", "-c", self.script], stdin=stdin, stdout=stdout, stderr=stderr)
        with open(pid_file, "w") as f:
            f.write(str(self.container.pid))
        return Finished(0)

    def execute(self, argv, *, timeout=None, input=None, env=None, cwd=None):
        self.calls.append(list(argv))
        return proc.Result(tuple(argv), 0, "", "")

    def ran(self, verb: str) -> list[list[str]]:
        return [c for c in self.calls if verb in c]


class Finished:
    def __init__(self, code: int):
        self.returncode = code

    def wait(self, timeout=None):
        return self.returncode

    def kill(self):
        pass


@pytest.fixture
def signals_restored():
    """listen() points the wakeup fd and SIGCHLD at the monitor's loop."""
    old_handler = signal.getsignal(signal.SIGCHLD)
    yield
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, old_handler)


@pytest.fixture
def make(tmp_path, monkeypatch, signals_restored):
    made = []

    def build(script: str, *extra: str, status_fd: int | None = None) -> tuple[monitor.Monitor, FakeRunc]:
        runc = FakeRunc(script)
        monkeypatch.setattr(proc, "spawn", runc.spawn)
        monkeypatch.setattr(proc, "_execute", runc.execute)
        monkeypatch.setattr(monitor.Runc, "base", lambda self, log_path=None: ["runc", "--root", self.state_root] + (
            ["--log", log_path, "--log-format", "json"] if log_path else []))
        directory = tmp_path / "container"
        directory.mkdir(exist_ok=True)
        argv = ["--container-dir", str(directory), "--runc-root", str(tmp_path / "runc"), "--id", CONTAINER_ID,
                "--bundle", str(directory), "--exit-command", json.dumps(["ferry", "container", "cleanup",
                                                                          CONTAINER_ID]), *extra]
        if status_fd is not None:
            argv += ["--status-fd", str(status_fd)]
        made.append(monitor.Monitor(monitor.parse(argv)))
        return made[-1], runc
    yield build
    for m in made:
        if getattr(m, "server", None) is not None:
            m.server.close()
        os.close(m.logs.fd)


def log_entries(directory) -> list[tuple[str, str, bytes]]:
    with open(os.path.join(directory, "ctr.log"), "rb") as f:
        return [tuple(line.split(b" ", 3)[1:]) for line in f.read().splitlines()]


def polled_until(m: monitor.Monitor, done, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the monitor never got there"
        m.poll(timeout=0.1)


def run_to_the_end(m: monitor.Monitor) -> None:
    m.create()
    m.listen()
    m.runc.start(m.args.id)
    m.serve()
    m.finish()


# ---- output, exit, exit command ---------------------------------------------------------

def test_output_is_logged_the_exit_recorded_and_the_exit_command_run(make):
    m, runc = make("printf 'one\\ntwo\\n'; printf 'oops\\n' >&2; printf 'no newline'; exit 3")
    run_to_the_end(m)
    entries = log_entries(m.dir)
    assert [e for e in entries if e[0] == b"stdout"] == [(b"stdout", b"F", b"one"), (b"stdout", b"F", b"two"),
                                                         (b"stdout", b"P", b"no newline")]
    assert (b"stderr", b"F", b"oops") in entries
    assert os.stat(os.path.join(m.dir, "ctr.log")).st_mode & 0o777 == 0o600
    with open(os.path.join(m.dir, "exit.json")) as f:
        recorded = json.load(f)
    assert recorded["exit_code"] == 3 and recorded["finished_at"].endswith("Z")
    assert runc.ran("cleanup") == [["ferry", "container", "cleanup", CONTAINER_ID]]
    assert runc.ran("start") and not os.path.exists(os.path.join(m.dir, "attach.sock"))
    # runc got the monitor's own pipes, never a host file CRIU could not dump
    [create] = runc.ran("create")
    assert create[create.index("--pid-file") + 1] == os.path.join(m.dir, "container.pid")
    assert m.container_pid == runc.container.pid


def test_a_container_killed_by_a_signal_exits_as_the_shell_says(make):
    m, runc = make("kill -TERM $$")
    run_to_the_end(m)
    with open(os.path.join(m.dir, "exit.json")) as f:
        assert json.load(f)["exit_code"] == 128 + signal.SIGTERM


def test_no_exit_command_runs_while_a_checkpoint_marker_exists(make):
    m, runc = make("exit 0")
    with open(os.path.join(m.dir, CHECKPOINTING), "w"):
        pass
    run_to_the_end(m)
    assert runc.ran("cleanup") == []   # the checkpointing command cleans up itself
    assert os.path.exists(os.path.join(m.dir, "exit.json"))


def test_no_exit_command_runs_while_a_command_holds_the_container(make, tmp_path):
    from ferry.util.locks import owned_lock
    lock = str(tmp_path / "locks" / "container-x")
    m, runc = make("exit 0", "--container-lock", lock)
    with owned_lock(lock, "ferry rm", wait=0, busy_message="busy"):
        run_to_the_end(m)
    assert runc.ran("cleanup") == []   # the holder (a stop, an rm) cleans up itself
    m, runc = make("exit 0", "--container-lock", lock)
    run_to_the_end(m)
    assert runc.ran("cleanup") == [["ferry", "container", "cleanup", CONTAINER_ID]]


def test_an_exit_that_cannot_be_recorded_still_reaches_the_exit_command(make, monkeypatch):
    m, runc = make("exit 4")
    reserve = os.path.join(m.dir, SPACE_RESERVE)
    monitor.reserve(reserve)   # the room kept since the start is given back for the exit record

    def full(path, data, mode=0o600):
        assert not os.path.exists(reserve)
        raise OSError(28, "No space left on device", path)
    monkeypatch.setattr(monitor, "atomic_write", full)
    run_to_the_end(m)
    assert not os.path.exists(os.path.join(m.dir, "exit.json")) and not os.path.exists(reserve)
    assert runc.ran("cleanup")


# ---- attach clients ------------------------------------------------------------------

def client_session(path: str, sent: list[bytes], received: list, ready: threading.Event) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        ready.set()
        for data in sent:
            conn.sendall(data)
        reader = attach.FrameReader()
        while True:
            data = conn.recv(65536)
            if not data:
                return
            received.extend(reader.feed(data))


def test_an_attached_client_gets_the_output_and_the_exit_and_feeds_stdin(make):
    m, runc = make("read line; echo \"got $line\"; read rest || echo eof", "--interactive", "--wait-attach")
    m.create()
    m.listen()
    received, ready = [], threading.Event()
    client = threading.Thread(target=client_session, args=(
        os.path.join(m.dir, "attach.sock"),
        [attach.frame(attach.STDIN, b"hello\n"), attach.frame(attach.STDIN_EOF)], received, ready))
    client.start()
    ready.wait(5)
    m.wait_first_client()
    assert len(m.clients) == 1
    m.serve()
    m.finish()
    client.join(5)
    # the input reached the container, and its end too (`read` saw EOF)
    assert b"".join(payload for kind, payload in received if kind == attach.STDOUT) == b"got hello\neof\n"
    assert received[-1] == (attach.EXIT, b"0")
    assert [e for e in log_entries(m.dir)] == [(b"stdout", b"F", b"got hello"), (b"stdout", b"F", b"eof")]


def test_a_client_that_goes_away_is_dropped_and_the_container_runs_on(make):
    m, runc = make("sleep 0.3; echo done")
    m.create()
    m.listen()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(os.path.join(m.dir, "attach.sock"))
    polled_until(m, lambda: len(m.clients) == 1)
    conn.close()
    polled_until(m, lambda: not m.clients)
    m.serve()
    m.finish()
    assert log_entries(m.dir) == [(b"stdout", b"F", b"done")]


def test_a_terminal_container_speaks_through_the_pty_runc_sent_and_takes_resizes(make):
    m, runc = make("stty size; read line; echo \"tty got $line\"", "--terminal", "--interactive")
    m.create()
    assert m.pty_master is not None and m.stdin_fd == m.pty_master
    assert not os.path.exists(os.path.join(m.dir, "console.sock"))
    m.listen()
    received, ready = [], threading.Event()
    client = threading.Thread(target=client_session, args=(
        os.path.join(m.dir, "attach.sock"), [attach.frame(attach.RESIZE, b"40 132")], received, ready))
    client.start()
    ready.wait(5)
    m.wait_first_client()
    polled_until(m, lambda: struct.unpack("HHHH", fcntl.ioctl(m.pty_master, termios.TIOCGWINSZ, b"\0" * 8))[:2]
                 == (40, 132))
    os.write(m.pty_master, b"hi\n")
    m.serve()
    m.finish()
    client.join(5)
    output = b"".join(payload for kind, payload in received if kind == attach.STDOUT)
    assert b"tty got hi" in output and received[-1] == (attach.EXIT, b"0")
    assert all(stream == b"stdout" for stream, _, _ in log_entries(m.dir))   # a terminal has one stream


# ---- start-up and its report ---------------------------------------------------------

def test_a_runc_create_that_fails_is_quoted_from_runc_s_log(make):
    m, runc = make("exit 0")
    runc.create_fails = (1, "exec: \"nope\": executable file not found in $PATH")
    with pytest.raises(RuntimeError, match=r'^exec: "nope": executable file not found in \$PATH$'):
        m.create()
    runc.create_fails = (2, "")
    with pytest.raises(RuntimeError, match="^runc exited 2$"):
        m.create()


def test_a_restore_that_fails_is_quoted_from_criu_s_log(make, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "restore.log").write_text("(00.1) Info: starting\n(00.2) Error (criu/files.c:9): Can't open file\n")
    m, runc = make("exit 0", "--restore-images", str(tmp_path / "images"), "--restore-work", str(work),
                   "--tcp-established")
    runc.create_fails = (1, "criu failed: type RESTORE errno 0")
    with pytest.raises(RuntimeError, match="^Can't open file$"):
        m.create()
    [restore] = runc.ran("restore")
    assert restore[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    assert {"--tcp-established", "--detach"} <= set(restore) and restore[-1] == CONTAINER_ID
    assert restore[restore.index("--image-path") + 1] == str(tmp_path / "images")


def test_report_says_one_line_once_and_closes_the_pipe(make):
    read_end, write_end = os.pipe()
    m, _ = make("exit 0", status_fd=write_end)
    m.report(ok=True, pid=42, state="created")
    m.report(ok=False, error="never sent")
    assert os.read(read_end, 4096) == b'{"ok": true, "pid": 42, "state": "created"}\n'
    assert os.read(read_end, 4096) == b""   # closed: the launcher reads to the end
    os.close(read_end)
    m2, _ = make("exit 0")
    m2.report(ok=True)   # no launcher waits: nothing to do


# ---- main(), as runtime.launch starts it -------------------------------------------------

HARNESS = textwrap.dedent("""
    import json, os, subprocess, sys
    from ferry.runtime import monitor
    from ferry.util import proc
    script, fail = sys.argv[1], sys.argv[2]

    def spawn(argv, *, desc, stdin=None, stdout=None, stderr=None, **_):
        argv = list(argv)
        if fail:
            with open(argv[argv.index("--log") + 1], "w") as f:
                f.write(json.dumps({"level": "error", "msg": fail}) + "\\n")
            return subprocess.Popen(["false"])
        child = subprocess.Popen(["sh", "-c", script], stdin=stdin, stdout=stdout, stderr=stderr)
        with open(argv[argv.index("--pid-file") + 1], "w") as f:
            f.write(str(child.pid))
        return subprocess.Popen(["true"])

    def execute(argv, **_):
        with open(os.path.join(os.environ["CALLS"]), "a") as f:
            f.write(json.dumps(list(argv)) + "\\n")
        return proc.Result(tuple(argv), 0, "", "")

    proc.spawn, proc._execute = spawn, execute
    monitor.Runc.base = lambda self, log_path=None: ["runc"] + (["--log", log_path] if log_path else [])
    sys.exit(monitor.main(sys.argv[3:]))
""")


def launch(tmp_path, script: str, fail: str = "") -> tuple[dict, str, subprocess.Popen]:
    directory = tmp_path / "container"
    directory.mkdir()
    read_end, write_end = os.pipe()
    calls = str(tmp_path / "calls")
    argv = [sys.executable, "-c", HARNESS, script, fail, "--container-dir", str(directory),
            "--runc-root", str(tmp_path / "runc"), "--id", CONTAINER_ID, "--bundle", str(directory),
            "--status-fd", str(write_end), "--exit-command", json.dumps(["cleanup", CONTAINER_ID])]
    launcher = subprocess.Popen(argv, pass_fds=[write_end], env=dict(os.environ, CALLS=calls))
    os.close(write_end)
    with os.fdopen(read_end, "rb") as status:
        report = json.loads(status.readline() or b"null")
    return report, str(directory), launcher


def wait_for(path: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return os.path.exists(path)


def test_main_reports_the_running_container_and_lives_on_to_record_its_exit(tmp_path):
    report, directory, launcher = launch(tmp_path, "sleep 0.2; echo bye; exit 7")
    assert launcher.wait(10) == 0   # the first process leaves at once; the monitor lives on
    assert report["ok"] is True and report["state"] == "running" and report["pid"] > 0
    with open(os.path.join(directory, "monitor.pid")) as f:
        assert int(f.read()) != launcher.pid
    assert os.path.getsize(os.path.join(directory, SPACE_RESERVE)) == monitor.RESERVE_BYTES
    assert wait_for(os.path.join(directory, "exit.json"))
    with open(os.path.join(directory, "exit.json")) as f:
        assert json.load(f)["exit_code"] == 7
    assert wait_for(str(tmp_path / "calls")) and wait_for_line(tmp_path / "calls", '["cleanup"')
    assert not os.path.exists(os.path.join(directory, SPACE_RESERVE))


def wait_for_line(path, text: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return True
        time.sleep(0.02)
    return False


def test_main_reports_a_failed_start_in_one_line_and_keeps_no_room(tmp_path):
    report, directory, launcher = launch(tmp_path, "exit 0", fail="exec: no such file")
    assert launcher.wait(10) == 0
    assert report == {"ok": False, "error": "exec: no such file"}
    assert wait_for_line(tmp_path / "calls", '"delete"')   # the half-started container is deleted
    assert not os.path.exists(os.path.join(directory, SPACE_RESERVE))
    assert not os.path.exists(os.path.join(directory, "exit.json"))


def _pipe_with(data: bytes) -> int:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    return read_fd


def test_a_warm_monitor_never_given_a_container_ends_quietly(tmp_path):
    from ferry.runtime import monitor
    assert monitor.main(["--argv-fd", str(_pipe_with(b"")), "--container-dir", str(tmp_path)]) == 0


def test_a_warm_monitor_refuses_a_container_its_command_line_does_not_name(tmp_path):
    from ferry.runtime import monitor
    given = ["--container-dir", str(tmp_path / "other"), "--runc-root", "/r", "--id", "x", "--bundle", "/b"]
    fd = _pipe_with(json.dumps(given).encode())
    assert monitor.main(["--argv-fd", str(fd), "--container-dir", str(tmp_path)]) == 2
    assert not os.path.exists(tmp_path / "monitor.pid")
