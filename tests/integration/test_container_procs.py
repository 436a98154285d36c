"""Issue 21's compatibility suite for port, top, stats, rename, wait, pause and
unpause: the same command lines given to the real podman on this machine and
to ferry, compared on exit codes and output (or its shape where values such as
IDs, host ports and times legitimately differ); and pause against checkpoint."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys

import pytest

from tests.support.podman import Sides, busybox_sides

# Host ports the host chooses: podman and ferry share the host's network.
SETUP = (
    ("run", "-d", "--name", "up", "-p", "80", "-p", "127.0.0.1::9000/udp", "busybox", "sleep", "1000"),
    ("create", "--name", "made", "busybox", "true"),
    ("run", "--name", "done", "busybox", "sh", "-c", "exit 3"),
)


@pytest.fixture(scope="module")
def sides():
    with busybox_sides("ferry-procs-", *SETUP) as pair:
        yield pair


def same(sides: Sides, *args: str, shape=lambda text: text) -> str:
    """Both engines' exit code and output (through `shape`), which must be the same."""
    theirs, ours = sides.both(*args)
    assert (ours.returncode, shape(ours.stdout)) == (theirs.returncode, shape(theirs.stdout)), \
        (theirs.stderr, ours.stderr)
    return ours.stdout


def same_failure(sides: Sides, *args: str) -> None:
    theirs, ours = sides.both(*args)
    assert theirs.returncode != 0 and ours.returncode == theirs.returncode, (theirs.stderr, ours.stderr)
    assert ours.stdout == theirs.stdout
    assert len(ours.stderr.strip().splitlines()) == 1, ours.stderr


def host_ports(text: str) -> str:
    """Host ports the host chose, as PORT; the lines sorted, as podman 4.3.1 prints a
    container's ports in Go's map order, which changes from run to run."""
    return "".join(sorted(re.sub(r":\d+\b", ":PORT", text).splitlines(keepends=True)))


def short_ids(text: str) -> str:
    return re.sub(r"\b[0-9a-f]{12}\b", "ID", text)


@pytest.fixture
def running(sides):
    """A fresh running container, `name`, on both sides."""
    made = []

    def run(name: str, *flags: str) -> str:
        theirs, ours = sides.both("run", "-d", "--name", name, *flags, "busybox", "sleep", "1000", run_flags=True)
        assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
        made.append(name)
        return name
    yield run
    for name in made:
        sides.both("rm", "-f", "-t", "0", name)
        sides.ferry("rm", "-f", name, check=False)


# ---- port -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("port", "up"), ("port", "up", "80"), ("port", "up", "80/tcp"), ("port", "up", "9000/udp"),
    ("port", "made"), ("port", "done"), ("container", "port", "up"),
], ids=" ".join)
def test_port_prints_podman_s_lines(sides, args):
    out = same(sides, *args, shape=host_ports)
    if args[-1] in ("up", "80"):
        assert "0.0.0.0:" in out


def test_port_all_prints_each_running_container_s_with_its_id(sides):
    out = same(sides, "port", "-a", shape=lambda text: short_ids(host_ports(text)))
    assert out.count("\t") == 2


@pytest.mark.parametrize("args", [
    ("port", "up", "81"), ("port",), ("port", "nope"), ("port", "-a", "up"), ("port", "up", "abc"),
    ("port", "up", "80/sctp"),
], ids=" ".join)
def test_port_refuses_as_podman_does(sides, args):
    same_failure(sides, *args)


# ---- top --------------------------------------------------------------------------------------------------

def test_top_with_descriptors_prints_what_podman_s_prints(sides):
    out = same(sides, "top", "up", "pid", "user", "args", "comm")
    assert out.splitlines()[1].split() == ["1", "root", "sleep", "1000", "sleep"]


def test_top_comma_descriptors(sides):
    same(sides, "top", "up", "pid,user,ppid,pgid,comm,nice,group,ruser,rgroup,state")


def test_top_default_columns_are_podman_s(sides):
    theirs, ours = sides.both("top", "up")
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    assert ours.stdout.splitlines()[0].split() == theirs.stdout.splitlines()[0].split() == [
        "USER", "PID", "PPID", "%CPU", "ELAPSED", "TTY", "TIME", "COMMAND"]
    row = ours.stdout.splitlines()[1].split()
    assert row[:3] == ["root", "1", "0"] and row[5] == "?" and row[-2:] == ["sleep", "1000"]
    assert len(ours.stdout.splitlines()) == len(theirs.stdout.splitlines())


def test_top_hands_other_words_to_ps_in_the_container(sides):
    _, ours = sides.both("top", "up", "-o", "pid,comm")
    assert ours.returncode == 0 and ours.stdout.split()[:4] == ["PID", "COMMAND", "1", "sleep"]


@pytest.mark.parametrize("args", [("top", "made"), ("top", "done"), ("top", "nope"), ("top",)], ids=" ".join)
def test_top_refuses_as_podman_does(sides, args):
    same_failure(sides, *args)


# ---- stats ------------------------------------------------------------------------------------------------

def test_stats_table_has_podman_s_header_and_rows(sides):
    theirs, ours = sides.both("stats", "--no-stream")
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    assert ours.stdout.splitlines()[0].split() == theirs.stdout.splitlines()[0].split()
    assert len(ours.stdout.splitlines()) == len(theirs.stdout.splitlines()) == 4   # stopped ones too, as podman's


def test_stats_json_has_podman_s_keys_and_types(sides):
    theirs, ours = sides.both("stats", "--no-stream", "--format", "json", "up")
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    (mine,), (podman_s,) = json.loads(ours.stdout), json.loads(theirs.stdout)
    assert list(mine) == list(podman_s)
    assert {k: type(v) for k, v in mine.items()} == {k: type(v) for k, v in podman_s.items()}
    assert mine["pids"] == podman_s["pids"] == "1" and mine["name"] == "up"
    assert re.fullmatch(r"[\d.]+[kMG]?B / [\d.]+[kMGT]?B", mine["mem_usage"])


@pytest.mark.parametrize("template", [
    "{{.Name}} {{.PIDS}} {{.MemPerc}}",
    "table {{.Name}} {{.PIDS}} {{.BlockIO}}",
    "table {{.ID}} {{.Name}}",
], ids=lambda t: t)
def test_stats_templates_print_what_podman_s_print(sides, template):
    same(sides, "stats", "--no-stream", "--format", template, "up", "made", shape=short_ids)


@pytest.mark.parametrize("args", [("stats", "--no-stream", "nope")], ids=" ".join)
def test_stats_refuses_as_podman_does(sides, args):
    same_failure(sides, *args)


# ---- rename -----------------------------------------------------------------------------------------------

def test_rename_renames_as_podman_s_does(sides, running):
    running("rn")
    same(sides, "rename", "rn", "rn2")
    assert same(sides, "ps", "--filter", "name=rn", "--format", "{{.Names}}") == "rn2\n"
    same(sides, "rename", "rn2", "rn2")   # to itself: nothing to do
    same(sides, "container", "rename", "rn2", "rn")


@pytest.mark.parametrize("args", [
    ("rename", "made", "bad name"), ("rename", "made", "_x"), ("rename", "made", "done"), ("rename", "nope", "x"),
    ("rename", "made"),
], ids=" ".join)
def test_rename_refuses_as_podman_does(sides, args):
    same_failure(sides, *args)


def test_a_renamed_container_keeps_its_name_through_checkpoint_and_restore(sides):
    ferry = sides.ferry
    ferry("run", "-d", "--name", "old", "busybox", "sleep", "1000")
    try:
        ferry("container", "checkpoint", "--leave-running", "old")   # a stored one, listed by name
        ferry("rename", "old", "new")
        assert [c["Container"] for c in ferry.json("checkpoint", "ls", "--format", "json")] == ["new"]
        ferry("container", "checkpoint", "new")
        ferry("container", "restore", "new")
        assert ferry.inspect("new")["State"]["Status"] == "running"
        assert ferry("ps", "-a", "--filter", "name=old", "--format", "{{.Names}}").stdout == ""
    finally:
        ferry("rm", "-f", "new", check=False)
        ferry("rm", "-f", "old", check=False)


# ---- wait -------------------------------------------------------------------------------------------------

def test_wait_prints_each_exit_code(sides):
    assert same(sides, "wait", "done", "made") == "3\n0\n"


def test_wait_returns_when_the_container_exits(sides):
    for args in (("run", "-d", "--name", "ends", "busybox", "sh", "-c", "sleep 1; exit 4"),):
        theirs, ours = sides.both(*args, run_flags=True)
        assert theirs.returncode == ours.returncode == 0
    try:
        assert same(sides, "wait", "--interval", "100ms", "ends") == "4\n"
        assert same(sides, "wait", "--condition", "stopped", "ends") == "4\n"
    finally:
        sides.both("rm", "-f", "ends")


@pytest.mark.parametrize("args", [
    ("wait", "nope"), ("wait",), ("wait", "--condition", "bogus", "done"), ("wait", "--interval", "bogus", "done"),
], ids=" ".join)
def test_wait_refuses_as_podman_does(sides, args):
    same_failure(sides, *args)


def test_wait_on_a_checkpointed_container_fails_as_podman_s(sides, running):
    running("ck")
    theirs, ours = sides.both("container", "checkpoint", "ck")
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    same_failure(sides, "wait", "ck")   # it has no exit code
    theirs, ours = sides.both("container", "restore", "ck")
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)


# ---- pause / unpause ----------------------------------------------------------------------------------------

def test_pause_and_unpause_as_podman_s(sides, running):
    running("p1")
    assert same(sides, "pause", "p1") == "p1\n"
    assert same(sides, "ps", "-a", "--filter", "name=p1", "--format", "{{.Names}} {{.Status}} {{.State}}") \
        == "p1 Paused Paused\n"
    assert same(sides, "ps", "-a", "--filter", "status=paused", "--format", "{{.Names}}") == "p1\n"
    assert same(sides, "ps", "--filter", "name=p1", "--format", "{{.Names}}") == ""   # not running
    assert same(sides, "inspect", "--format", "{{.State.Status}} {{.State.Paused}} {{.State.Running}}", "p1") \
        == "paused true false\n"
    same_failure(sides, "pause", "p1")
    same_failure(sides, "start", "p1")   # only a created or stopped container starts
    same_failure(sides, "top", "p1")
    same_failure(sides, "exec", "p1", "true")      # podman: 255
    same_failure(sides, "exec", "-d", "p1", "true")   # podman: 125
    assert same(sides, "port", "p1") == ""
    assert same(sides, "stats", "--no-stream", "--format", "{{.Name}} {{.PIDS}}", "p1") == "p1 1\n"
    same_failure(sides, "rm", "p1")   # running or paused: podman's exit code 2
    assert same(sides, "container", "unpause", "p1") == "p1\n"
    assert same(sides, "inspect", "--format", "{{.State.Status}} {{.State.Paused}}", "p1") == "running false\n"
    same_failure(sides, "unpause", "p1")


@pytest.mark.parametrize("args", [
    ("pause", "made"), ("pause", "done"), ("unpause", "made"), ("pause", "nope"), ("pause",), ("unpause",),
    ("exec", "made", "true"), ("exec", "done", "true"), ("exec", "-d", "done", "true"),
], ids=" ".join)
def test_pause_and_exec_refuse_as_podman_does(sides, args):
    same_failure(sides, *args)


def test_checkpoint_of_a_paused_container_is_refused_and_leaves_it_paused(sides, running):
    running("pc")
    same(sides, "pause", "pc")
    same_failure(sides, "container", "checkpoint", "pc")
    same_failure(sides, "container", "checkpoint", "--leave-running", "pc")
    assert same(sides, "inspect", "--format", "{{.State.Status}}", "pc") == "paused\n"
    # --all checkpoints the running ones only: a paused one is no failure, and stays paused
    assert "pc" not in sides.ferry("container", "checkpoint", "--all", "--leave-running").stdout
    assert same(sides, "inspect", "--format", "{{.State.Status}}", "pc") == "paused\n"
    # once unpaused, it checkpoints and restores
    same(sides, "unpause", "pc")
    for verb in ("checkpoint", "restore"):
        theirs, ours = sides.both("container", verb, "pc")
        assert theirs.returncode == ours.returncode == 0, (verb, theirs.stderr, ours.stderr)
    assert same(sides, "inspect", "--format", "{{.State.Status}}", "pc") == "running\n"
    assert same(sides, "exec", "pc", "echo", "alive") == "alive\n"


def test_kill_and_rm_force_end_a_paused_container(sides, running):
    running("pk")
    same(sides, "pause", "pk")
    assert same(sides, "kill", "pk") == "pk\n"
    assert same(sides, "wait", "pk") == "137\n"
    same(sides, "start", "pk")
    same(sides, "pause", "pk")
    assert same(sides, "rm", "-f", "pk") == "pk\n"


def test_stop_ends_a_paused_container(sides):
    """podman 4.3.1's stop of a paused container fails ("running or paused,
    refusing to clean up") and leaves it paused; ferry thaws it and stops it."""
    ferry = sides.ferry
    ferry("run", "-d", "--name", "ps1", "busybox", "sleep", "1000")
    try:
        ferry("pause", "ps1")
        ferry("stop", "-t", "0", "ps1")
        state = ferry.inspect("ps1")["State"]
        assert (state["Status"], state["Paused"], state["ExitCode"]) == ("exited", False, 137)
        ferry("start", "ps1")
        assert ferry.inspect("ps1")["State"]["Status"] == "running"   # no stale pause
    finally:
        ferry("rm", "-f", "ps1", check=False)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_stats_streams_reports_until_a_signal(sides, stop):
    follower = subprocess.Popen([sys.executable, "-m", "ferry", "--root", sides.ferry.root, "stats", "--interval",
                                 "1", "--format", "{{.Name}} {{.PIDS}}", "up"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while len(lines) < 2:   # a second report: it streams
            ready, _, _ = select.select([follower.stdout], [], [], 30)
            assert ready, "no report came"
            lines.append(follower.stdout.readline())
        assert lines == ["up 1\n", "up 1\n"]
        follower.send_signal(stop)
        assert follower.wait(30) == 0, follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        follower.stdout.close()
        follower.stderr.close()
