"""`ferry exec` goes through the engine: Containers.exec runs runc exec in the
foreground and returns the command's exit code; the CLI only passes the flags on."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from ferry.cli import main as cli
from ferry.engine import core
from ferry.engine.containers import Containers
from ferry.util import proc
from ferry.engine import containers as engine_containers
from ferry.util.errors import CommandNotExecutable, CommandNotFound, ToolError, UsageError

ARGV = ["runc", "exec", "c1", "ls"]


@pytest.fixture
def ran(monkeypatch):
    """What reached the subprocess chokepoint, and where the command's stdin pointed."""
    calls = []

    def run_foreground(argv, *, desc, env=None):
        calls.append((argv, desc, os.fstat(0).st_rdev))
        return 7
    monkeypatch.setattr(proc, "run_foreground", run_foreground)
    return calls


def _exec(**flags):
    """Containers.exec on a stand-in whose exec_argv (checked in test_containers_engine) gives ARGV."""
    containers = SimpleNamespace(exec_argv=lambda name, command, **_: ARGV, get=lambda name: SimpleNamespace(id=name),
                                 dir=lambda cid: "/nonexistent", _exec_foreground=Containers._exec_foreground)
    options = {"tty": False, "interactive": False, "env": [], "workdir": None, "user": None, **flags}
    return Containers.exec(containers, "c1", ["ls"], **options)


@pytest.fixture
def stdin_pipe():
    """fd 0 a pipe, as under a CI runner; the original comes back after."""
    saved = os.dup(0)
    read, write = os.pipe()
    os.dup2(read, 0)
    os.close(read)
    yield
    os.dup2(saved, 0)
    os.close(saved)
    os.close(write)


def test_exec_returns_the_commands_exit_code_and_gives_it_no_stdin_without_i(ran, stdin_pipe):
    before = os.fstat(0)
    assert _exec() == 7
    assert ran == [(ARGV, "runc exec", os.stat(os.devnull).st_rdev)]
    after = os.fstat(0)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)   # ours comes back


def test_exec_i_hands_the_command_our_stdin(ran, stdin_pipe):
    assert _exec(interactive=True) == 7
    assert ran == [(ARGV, "runc exec", os.fstat(0).st_rdev)]


def test_exec_t_needs_a_terminal(ran, stdin_pipe):
    with pytest.raises(UsageError, match="-t needs a terminal on stdin"):
        _exec(tty=True)
    assert ran == []


def test_the_cli_passes_the_flags_to_the_engine_and_returns_its_code(monkeypatch, tmp_path):
    calls = []

    class Engine:
        def __init__(self, root):
            self.root = root
            self.containers = SimpleNamespace(exec=lambda *a, **kw: calls.append((root, a, kw)) or 3)
    monkeypatch.setattr(core, "Engine", Engine)
    root = str(tmp_path / "root")
    code = cli.main(["--root", root, "exec", "-i", "-e", "A=1", "-w", "/srv", "-u", "33", "c1", "--", "sh", "-c", "x"])
    assert code == 3
    assert calls == [(root, ("c1", ["sh", "-c", "x"]),
                      {"tty": False, "interactive": True, "env": ["A=1"], "workdir": "/srv", "user": "33",
                       "privileged": False})]


# ---- issue 15: a command that cannot start gets podman's code in one line --------------

def _runc_log(path, message: str) -> str:
    """runc's JSON log as `runc --log-format json` writes it."""
    path.write_text(json.dumps({"level": "error", "msg": message, "time": "t"}) + "\n")
    return str(path)


START = "exec failed: unable to start container process: "


@pytest.mark.parametrize("runc_says,kind,code", [
    ('exec: "nosuchcmd": executable file not found in $PATH', CommandNotFound, 127),
    ('exec: "/x/y": stat /x/y: no such file or directory', CommandNotFound, 127),
    ('exec: "/etc/passwd": permission denied', CommandNotExecutable, 126),
    ('chdir to cwd ("/nope") set in config.json failed: no such file or directory', CommandNotFound, 127),
    ("something else broke", ToolError, 125),
])
def test_runc_exec_failures_become_podmans_codes(tmp_path, runc_says, kind, code):
    """podman 4.3.1 here: `exec C nosuchcmd` 127, `exec C /etc/passwd` 126 (and /etc
    126, -w /nonexist 127), each one line; ferry before: 255 and runc's log line."""
    log = _runc_log(tmp_path / "runc.log", START + runc_says)
    with pytest.raises(kind) as raised:
        engine_containers._raise_exec_failure("nosuchcmd", log)
    assert cli.exit_code_for(raised.value) == code
    assert "\n" not in raised.value.message


def test_a_commands_own_255_stays_its_code(tmp_path):
    log = tmp_path / "runc.log"
    log.write_text("")
    assert engine_containers._raise_exec_failure("sh", str(log)) is None


@pytest.mark.parametrize("name,verdict", [
    ("sh", ""), ("/bin/sh", ""), ("nosuchcmd", "127 executable file not found in $PATH"),
    ("/bin/nosuch", "127 no such file or directory"), ("/etc/passwd", "126 permission denied"),
    ("/etc", "126 permission denied"), ("passwd", "127 executable file not found in $PATH"),
])
def test_commands_are_looked_up_as_runc_does(tmp_path, monkeypatch, name, verdict):
    for d in ("bin", "etc"):
        (tmp_path / d).mkdir()
    (tmp_path / "bin" / "sh").write_text("")
    (tmp_path / "bin" / "sh").chmod(0o755)
    (tmp_path / "etc" / "passwd").write_text("")
    monkeypatch.chdir(tmp_path)
    looked_up = name if "/" not in name else "." + name   # the test's root is tmp_path, not /
    assert engine_containers._lookup_verdict(looked_up, "./bin:./etc") == verdict
