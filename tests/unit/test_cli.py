"""The command line's contract: one-line errors, exit codes, stable JSON."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from ferry.cli import main as cli
from ferry.cli import system as system_cli
from ferry.engine import system
from ferry.engine.listing import Listing
from ferry.host import probes
from ferry.store import db
from ferry.util import signals
from ferry.util.errors import BadArchive, Conflict, FerryError, ToolError, UsageError


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv,needle", [
    (["bogus"], "unknown command 'bogus' for 'ferry'"),
    (["--bogus"], "unknown flag or argument: --bogus"),
    (["system", "nope"], "unknown command 'nope' for 'ferry system'"),
    (["system", "check", "--format", "xml"], "invalid choice: 'xml'"),
    (["system"], "'ferry system' needs a subcommand"),
    ([], "no command given"),
])
def test_bad_invocations_are_one_line(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == cli.EXIT_USAGE
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert "hint: see 'ferry" in lines[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("ferry version ")


def test_info_honours_root(capsys, tmp_path):
    code, out, _ = run(capsys, "--root", str(tmp_path / "hostA"), "info", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["store"]["graphRoot"] == data["ferry"]["root"] == str(tmp_path / "hostA")
    assert data["ferry"]["database"].startswith(data["ferry"]["root"] + "/")
    assert not (tmp_path / "hostA").exists()  # reading paths creates nothing


def _fake_report(monkeypatch, *checks):
    monkeypatch.setattr(system, "system_check", lambda: system.SystemReport(tuple(checks)))


def test_system_check_json_and_exit_code(capsys, monkeypatch):
    _fake_report(monkeypatch, probes.Check("criu", "ok", "4.2.1", "fine", "x", True),
                 probes.Check("soft_dirty", "missing", "no", "off", "no pre-copy", False))
    code, out, _ = run(capsys, "system", "check", "--format", "json")
    assert code == 0
    assert json.loads(out)["checks"]["soft_dirty"]["status"] == "missing"


def test_system_check_not_ready(capsys, monkeypatch):
    _fake_report(monkeypatch, probes.Check("criu", "missing", "3.17.1", "too old; run 'make setup'",
                                           "no checkpoint", True))
    code, out, err = run(capsys, "system", "check")
    assert code == cli.EXIT_NOT_READY
    assert "criu" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "criu: too old" in lines[0] and "no checkpoint" in lines[0]


def test_errors_map_to_exit_codes(capsys, monkeypatch):
    assert cli.exit_code_for(UsageError("x")) == cli.EXIT_USAGE
    assert cli.exit_code_for(Conflict("x")) == cli.EXIT_ERROR
    assert cli.exit_code_for(BadArchive("x")) == cli.EXIT_ERROR

    class Custom(ToolError):
        pass
    assert cli.exit_code_for(Custom("runc", 1)) == cli.EXIT_ERROR

    def boom(_args):
        raise FerryError("something broke", hint="do this")
    monkeypatch.setattr(system_cli, "cmd_version", boom)
    code, _, err = run(capsys, "version")
    assert code == cli.EXIT_ERROR
    assert err == "ferry: error: something broke (hint: do this)\n"


@pytest.mark.parametrize("argv,word", [
    (["ps"], "ps"), (["--root", "/x", "ps", "-a"], "ps"), (["--debug", "network", "ls"], "network"),
    (["--root=/x", "images"], "images"), (["--help"], None), ([], None), (["--root", "/x"], None),
])
def test_command_word(argv, word):
    assert cli.command_word(argv) == word


def _command_names(parser) -> set[str]:
    return set(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)


def _subparsers(parser) -> dict:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_partial_parser_builds_only_the_command():
    for word in ("ps", "network", "images", "version", "volume", "push", "tag", "save"):
        assert _command_names(cli.build_parser(word)) == {word}
    container = _subparsers(cli.build_parser("container"))["container"]
    assert {"run", "ls", "ps", "checkpoint", "restore", "cleanup", "inspect"} <= _command_names(container)


def test_full_parser_lists_every_command_in_help_order():
    assert list(_subparsers(cli.build_parser())) == [
        "version", "info", "system", "run", "create", "container", "checkpoint", "ps", "logs", "stop", "restart", "start",
        "attach", "kill", "rm", "exec", "inspect", "cp", "diff", "export", "commit", "port", "top", "stats",
        "rename", "wait", "pause", "unpause", "events", "volume", "images", "pull", "push", "tag", "untag", "save", "load", "rmi", "history", "image",
        "network", "serve", "migrate"]


def test_an_unknown_command_gets_the_full_parser_for_its_error(capsys):
    assert _command_names(cli.build_parser("bogus")) == _command_names(cli.build_parser())
    code, _, err = run(capsys, "bogus")
    assert code == cli.EXIT_USAGE and "unknown command 'bogus' for 'ferry'" in err


def test_partial_and_full_parsers_read_ps_flags_alike():
    for argv in (["ps"], ["ps", "-a", "-q"], ["container", "ls", "--all", "--format", "json"]):
        partial = cli.build_parser(cli.command_word(argv)).parse_args(argv)
        full = cli.build_parser().parse_args(argv)
        assert vars(partial) == vars(full)


@pytest.mark.parametrize("failure, line", [
    (OSError(13, "Permission denied", "/var/lib/ferry/x"),
     "ferry: error: unexpected failure: Permission denied: /var/lib/ferry/x"),
    (__import__("sqlite3").OperationalError("database is locked"),
     "ferry: error: unexpected failure: state database: database is locked"),
    (KeyError("ports"), "ferry: error: unexpected failure: KeyError: 'ports'"),
    (RuntimeError("two\nlines"), "ferry: error: unexpected failure: RuntimeError: two | lines"),
])
def test_an_unexpected_failure_is_one_line_with_the_failure_code(capsys, monkeypatch, failure, line):
    def boom(_args):
        raise failure
    monkeypatch.setattr(system_cli, "cmd_version", boom)
    code, out, err = run(capsys, "version")
    assert code == cli.EXIT_ERROR
    assert out == ""
    assert err == f"{line} (hint: rerun with --debug for the traceback)\n"


def test_debug_logs_the_traceback_of_an_unexpected_failure(capsys, caplog, monkeypatch):
    def boom(_args):
        raise KeyError("ports")
    monkeypatch.setattr(system_cli, "cmd_version", boom)
    code, _, err = run(capsys, "--debug", "version")
    assert code == cli.EXIT_ERROR
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [KeyError]
    assert err == "ferry: error: unexpected failure: KeyError: 'ports'\n"  # no hint: the traceback is there


def test_a_reader_that_went_away_is_no_error(capsys, monkeypatch):
    def boom(_args):
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(system_cli, "cmd_version", boom)
    monkeypatch.setattr(cli, "_silence_stdout", lambda: None)  # capsys's stdout has no real fd
    code, out, err = run(capsys, "version")
    assert (code, err) == (cli.EXIT_BROKEN_PIPE, "")


# ---- the last handler: nothing escapes main() ----------------------------------

@pytest.fixture
def signal_handlers():
    """ferry.util.signals.install() changes the process's handlers: put pytest's back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("sig, code, line", [
    ("SIGINT", 130, "ferry: error: interrupted\n"),
    ("SIGTERM", 143, "ferry: error: interrupted by SIGTERM\n"),
    ("SIGHUP", 129, "ferry: error: interrupted by SIGHUP\n"),
])
def test_a_signal_exits_128_plus_its_number(capsys, monkeypatch, signal_handlers, sig, code, line):
    def killed(_args):
        signals.install()
        os.kill(os.getpid(), signal.Signals[sig])
        raise AssertionError("the signal did not interrupt")
    monkeypatch.setattr(system_cli, "cmd_version", killed)
    assert run(capsys, "version") == (code, "", line)


def test_ctrl_c_without_ferrys_handlers_is_130(capsys, monkeypatch):
    def interrupted(_args):
        raise KeyboardInterrupt
    monkeypatch.setattr(system_cli, "cmd_version", interrupted)
    assert run(capsys, "version") == (130, "", "ferry: error: interrupted\n")


@pytest.mark.parametrize("failure, code", [
    (FerryError("no"), cli.EXIT_ERROR), (UsageError("no"), cli.EXIT_USAGE), (KeyError("x"), cli.EXIT_ERROR),
    (KeyboardInterrupt("SIGTERM"), 143),
])
@pytest.mark.parametrize("reporting", [BrokenPipeError(32, "Broken pipe"), KeyboardInterrupt("SIGHUP")])
def test_a_failure_while_reporting_still_gives_the_failures_code(capsys, monkeypatch, failure, code, reporting):
    """stderr gone, or a second signal while the first failure is reported."""
    def boom(_args):
        raise failure

    def report(*_args, **_kwargs):
        raise reporting
    monkeypatch.setattr(system_cli, "cmd_version", boom)
    monkeypatch.setattr(cli.render, "error", report)
    assert cli.main(["version"]) == code


def test_a_reader_gone_before_the_last_flush_is_no_error(capsys, monkeypatch):
    class Gone:
        def write(self, text):
            return len(text)

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(cli, "_silence_stdout", lambda: None)  # capsys's stdout has no real fd
    monkeypatch.setattr("sys.stdout", Gone())
    code = cli.main(["version"])
    assert (code, capsys.readouterr().err) == (cli.EXIT_BROKEN_PIPE, "")


@pytest.mark.parametrize("failure, reason", [
    (PermissionError(13, "Permission denied"), "Permission denied"),
    (OSError(5, "Input/output error"), "Input/output error"),
])
def test_an_os_error_in_a_command_is_one_line_and_125(capsys, monkeypatch, tmp_path, failure, reason):
    """ps with its state unreadable as the kernel would say it, past every translation."""
    root = str(tmp_path / "root")
    failure.filename = f"{root}/containers/c1/exit.json"

    def containers(self, all_states=False):
        raise failure
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(Listing, "containers", containers)
    code, out, err = run(capsys, "--root", root, "ps")
    assert (code, out) == (cli.EXIT_ERROR, "")
    assert err == (f"ferry: error: unexpected failure: {reason}: {failure.filename} "
                   "(hint: rerun with --debug for the traceback)\n")


def _hold_write_lock(root: str):
    """Another connection holding SQLite's write lock on the root's database."""
    holder = sqlite3.connect(os.path.join(root, "ferry.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_locked_database_is_one_line_and_125(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 200)
    root = str(tmp_path / "root")
    assert run(capsys, "--root", root, "volume", "ls")[0] == 0   # the root and its tables exist
    holder = _hold_write_lock(root)
    try:
        code, out, err = run(capsys, "--root", root, "volume", "create", "v1")
    finally:
        holder.close()
    assert (code, out) == (cli.EXIT_ERROR, "")
    assert err == (f"ferry: error: ferry's state in {root}/ferry.db stayed locked by another ferry command "
                   "for 0.2 s (hint: try again once that command has finished)\n")


def test_a_locked_database_is_one_line_and_125_for_the_process(tmp_path):
    """The same through a real process: no traceback reaches its stderr."""
    root = str(tmp_path / "root")
    code = f"""
        import os
        os.geteuid = lambda: 0   # Engine.db asks for root; a test needs none
        from ferry.store import db
        db.BUSY_TIMEOUT_MS = 200
        from ferry.cli.main import main
        raise SystemExit(main(["--root", {root!r}, *os.environ["ARGS"].split()]))
    """
    ferry = [sys.executable, "-c", textwrap.dedent(code)]
    made = subprocess.run(ferry, env={**os.environ, "ARGS": "volume ls"}, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    holder = _hold_write_lock(root)
    try:
        done = subprocess.run(ferry, env={**os.environ, "ARGS": "volume create v1"}, capture_output=True,
                              text=True, timeout=60)
    finally:
        holder.close()
    assert (done.returncode, done.stdout) == (cli.EXIT_ERROR, "")
    assert len(done.stderr.splitlines()) == 1 and "stayed locked" in done.stderr, done.stderr


# ---- issue 15: podman's command line and exit codes (checked against podman 4.3.1 here) ----

class FakeContainers:
    """The engine's containers as the lifecycle verbs see them: names that exist, what was done."""

    def __init__(self, *names, running=()):
        self.names, self.running, self.done = set(names), set(running), []

    def _known(self, name):
        if name not in self.names:
            from ferry.util.errors import NotFound
            raise NotFound(f"no such container {name!r}", hint="see 'ferry ps -a'")

    def stop(self, name, timeout):
        self._known(name)
        self.done.append(("stop", name))

    def remove(self, name, force, volumes=False, timeout=0):
        self._known(name)
        if name in self.running and not force:
            from ferry.util.errors import ContainerRunning
            raise ContainerRunning(f"container {name!r} is running")
        self.done.append(("rm", name))


@pytest.fixture
def containers(monkeypatch, signal_handlers):
    from ferry.engine import core
    fake = FakeContainers("a", "b", "up", running=("up",))
    monkeypatch.setattr(core, "Engine", lambda root: SimpleNamespace(containers=fake))
    return fake


@pytest.mark.parametrize("argv,code", [
    (["bogus"], 125), (["ps", "--bogus"], 125), (["container", "bogus"], 125), (["logs"], 125),
    (["stop", "nosuch"], 125), (["stop", "-t", "x", "a"], 125),
    (["rm", "nosuch"], 1), (["rm", "-f", "nosuch"], 0), (["rm", "up"], 2), (["container", "rm", "up"], 2),
    (["rm", "-f", "up"], 0), (["rm", "nosuch", "a"], 1), (["rm", "-f", "nosuch", "a"], 0),
])
def test_exit_codes_are_podmans(capsys, containers, argv, code):
    """podman 4.3.1 here: bad flag, unknown command, missing argument 125; stop of a
    missing name 125; rm of a missing name 1, rm -f of one 0, rm of a running one 2."""
    assert run(capsys, *argv)[0] == code


def test_stop_acts_on_every_name_it_can_and_reports_each_missing_one(capsys, containers):
    code, out, err = run(capsys, "stop", "a", "nosuch", "b", "ghost")
    assert code == 125
    assert containers.done == [("stop", "a"), ("stop", "b")]
    assert out.split() == ["a", "b"]
    lines = err.splitlines()
    assert len(lines) == 2 and "'nosuch'" in lines[0] and "'ghost'" in lines[1]


def test_rm_f_of_a_missing_name_removes_the_others_and_exits_0(capsys, containers):
    code, out, err = run(capsys, "rm", "-f", "nosuch", "a")
    assert (code, out, err) == (0, "a\n", "")
    assert containers.done == [("rm", "a")]


def test_a_bad_flag_names_the_subcommands_help(capsys):
    code, out, err = run(capsys, "logs", "--bogus", "c1")
    assert code == 125 and out == ""
    assert err == "ferry: error: unknown flag or argument: --bogus (hint: see 'ferry logs --help')\n"
    _, _, err = run(capsys, "container", "stop", "--bogus", "c1")
    assert "see 'ferry container stop --help'" in err


@pytest.mark.parametrize("argv,rm,detach", [
    (["run", "--rm=true", "img"], True, False), (["run", "--rm=false", "img"], False, False),
    (["run", "-d=false", "--rm", "img"], True, False), (["run", "-d=true", "img"], False, True),
    (["run", "--rm", "--rm=false", "img"], False, False), (["run", "--rm=True", "-d=1", "img"], True, True),
])
def test_boolean_flags_take_true_or_false(argv, rm, detach):
    args = cli.build_parser("run").parse_args(argv)
    assert (args.rm, args.detach) == (rm, detach)


@pytest.mark.parametrize("flags,sig_proxy", [
    ([], True), (["--sig-proxy"], True), (["--sig-proxy=false"], False), (["--sig-proxy=0"], False),
    (["--sig-proxy=false", "--sig-proxy"], True), (["--sig-proxy=false", "--sig-proxy=true"], True),
    (["--sig-proxy", "--sig-proxy=false"], False),
])
def test_a_flag_on_by_default_is_turned_off_by_false_and_the_last_one_counts(flags, sig_proxy):
    args = cli.build_parser("run").parse_args(["run", *flags, "img", "sh", "--sig-proxy=false"])
    assert args.sig_proxy is sig_proxy and args.command == ["sh", "--sig-proxy=false"]


def test_flag_like_words_of_the_containers_command_are_its_own():
    args = cli.build_parser("run").parse_args(["run", "img", "echo", "--rm=false", "-d=true"])
    assert args.command == ["echo", "--rm=false", "-d=true"] and not args.rm


def test_a_boolean_flag_refuses_other_values(capsys):
    code, _, err = run(capsys, "run", "--rm=maybe", "img")
    assert code == 125
    assert err == ('ferry: error: invalid argument "maybe" for "--rm" flag: it takes true or false '
                   "(hint: see 'ferry run --help')\n")


@pytest.mark.parametrize("argv", [
    ["--root", "/r", "--debug", "ps"], ["ps", "--root", "/r", "--debug"], ["ps", "--root=/r", "--debug=true"],
    ["container", "ls", "--debug", "--root", "/r"], ["--root", "/elsewhere", "ps", "--root", "/r", "--debug"],
])
def test_global_options_may_follow_the_command(argv):
    args = cli.build_parser(cli.command_word(argv)).parse_args(argv)
    assert (args.root, args.debug) == ("/r", True)


def test_global_options_before_the_command_are_kept():
    args = cli.build_parser("ps").parse_args(["--root", "/r", "--debug", "ps", "-a"])
    assert (args.root, args.debug, args.all) == ("/r", True, True)


@pytest.mark.parametrize("argv,tail", [
    (["logs", "--tail", "2", "c"], 2), (["logs", "--tail=0", "c"], 0),
    (["logs", "--tail", "-1", "c"], None), (["logs", "c"], None),
])
def test_logs_tail(argv, tail):
    args = cli.build_parser("logs").parse_args(argv)
    assert (args.tail, args.containers) == (tail, ["c"])


def test_logs_n_is_podman_s_names_not_tail():
    """podman's -n is --names (docker's -n is --tail): `logs -n a b` names two containers."""
    args = cli.build_parser("logs").parse_args(["logs", "-n", "a", "b"])
    assert (args.names, args.containers, args.tail) == (True, ["a", "b"], None)


def test_logs_tail_prints_the_last_lines(tmp_path):
    from ferry.cli import logs
    log = tmp_path / "ctr.log"
    log.write_bytes(b"".join(b"T stdout F l%d\n" % i for i in range(1, 6)) + b"T stderr F e1\n"
                    b"T stdout P par\nT stdout F tial\n")
    entries = logs.parse_entries(log.read_bytes())
    assert [e.text for e in logs.tail(entries, 2)] == [b"e1", b"par", b"tial"]
    assert logs.tail(entries, 100) == entries
    assert logs.tail(entries, 0) == []


def test_logs_keep_a_lone_carriage_return(tmp_path, capsysbinary):
    """A progress bar's \r, and a terminal's \r\n, are text: only \n ends an entry, as in podman's logs."""
    from ferry.cli import logs
    log = tmp_path / "ctr.log"
    log.write_bytes(b"T stdout F 50%\r60%\r100%\nT stdout F tty line\r\nT stdout F last\n")
    source = logs.Source("c" * 64, "c" * 12, str(log))
    entries = source.read()
    source.close()
    logs.Printer(timestamps=False, since=None, until=None, prefixes=False)(logs.merge([entries], [source]))
    assert capsysbinary.readouterr().out == b"50%\r60%\r100%\ntty line\r\nlast\n"
    assert [e.text for e in logs.tail(entries, 2)] == [b"tty line\r", b"last"]


def test_run_takes_a_user():
    for flag in (["-u", "www:web"], ["--user", "www:web"], ["--user=www:web"]):
        assert cli.build_parser("run").parse_args(["run", *flag, "img"]).user == "www:web"


def test_the_readme_says_what_the_exit_codes_are():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    section = readme.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    for code in ("125", "126", "127", "`rm`", "`rm -f`", "| 1 ", "| 2 "):
        assert code in section, code
