"""`ferry exec` goes through the engine: Containers.exec runs runc exec in the
foreground and returns the command's exit code; the CLI only passes the flags on."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from ferry.cli import main as cli
from ferry.engine import core
from ferry.engine.containers import Containers
from ferry.util import proc
from ferry.util.errors import UsageError

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
    containers = SimpleNamespace(exec_argv=lambda name, command, **_: ARGV)
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
                      {"tty": False, "interactive": True, "env": ["A=1"], "workdir": "/srv", "user": "33"})]
