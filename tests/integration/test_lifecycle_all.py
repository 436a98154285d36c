"""Issue 21's lifecycle verbs against the real podman on this machine: `create`
then `start -a`, `attach` refusals, `stop/kill/rm/restart -a`, `stop --ignore`,
`rm -i/-t/-v`, `exec -d` and `exec --privileged`: the same command lines, the
same exit codes and output (podman's own IDs where it prints them)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.podman import Sides, busybox_sides

FULL_ID = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def sides():
    with busybox_sides("ferry-life-") as pair:
        yield pair


@pytest.fixture
def both(sides):
    """The engines, emptied after each test (the --all verbs act on everything)."""
    yield sides
    sides.both("rm", "-a", "-f", "-t", "0")
    sides.both("volume", "prune", "-f")


def same(sides: Sides, *args: str, run_flags: bool = False):
    theirs, ours = sides.both(*args, run_flags=run_flags)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), (args, theirs.stderr, ours.stderr)
    return ours


def same_code(sides: Sides, *args: str, run_flags: bool = False):
    theirs, ours = sides.both(*args, run_flags=run_flags)
    assert ours.returncode == theirs.returncode, (args, theirs.stderr, ours.stderr)
    return theirs, ours


def make(sides: Sides, name: str, *args: str, run: bool = True) -> None:
    verb = ("run", "-d") if run else ("create",)
    theirs, ours = sides.both(verb[0], *verb[1:], "--name", name, *args, run_flags=True)
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)


def ids(sides: Sides, *names: str) -> tuple[set[str], set[str]]:
    """Each engine's full IDs of `names`."""
    theirs, ours = sides.both("inspect", "--format", "{{.Id}}", *names)
    return set(theirs.stdout.split()), set(ours.stdout.split())


def states(sides: Sides, *names: str) -> str:
    return same(sides, "inspect", "--format", "{{.Name}} {{.State.Status}} {{.State.ExitCode}}", *names).stdout


def printed_ids(done) -> set[str]:
    lines = done.stdout.split()
    assert all(FULL_ID.match(line) for line in lines), done.stdout
    return set(lines)


def test_create_then_start_attach_prints_the_output_and_exits_with_the_code(both):
    make(both, "hello", "busybox", "echo", "hi", run=False)
    assert same(both, "start", "-a", "hello").stdout == "hi\n"
    make(both, "three", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", run=False)
    theirs, ours = same_code(both, "start", "-a", "three")
    assert theirs.returncode == 3
    assert (ours.stdout, ours.stderr) == (theirs.stdout, theirs.stderr) == ("out\n", "err\n")
    assert same(both, "start", "-a", "hello").stdout == "hi\n"   # an exited one starts again
    assert same_code(both, "start", "-a", "hello", "three")[0].returncode == 125   # one at a time
    assert same_code(both, "start", "-a", "nosuch")[0].returncode == 125
    assert same(both, "start", "hello").stdout == "hello\n"


def test_attach_refuses_a_container_that_does_not_run(both):
    make(both, "made", "busybox", "true", run=False)
    make(both, "ended", "busybox", "true")
    for name in ("made", "ended", "nosuch"):
        theirs, ours = same_code(both, "attach", name)
        assert theirs.returncode == 125 and ours.stdout == theirs.stdout == ""
    assert same_code(both, "attach", "--detach-keys", "ab", "ended")[0].returncode == 125


def test_stop_all_stops_the_running_and_names_every_container(both):
    make(both, "up1", "busybox", "sleep", "1000")
    make(both, "up2", "busybox", "sleep", "1000")
    make(both, "done", "busybox", "true")
    make(both, "made", "busybox", "true", run=False)
    theirs, ours = same_code(both, "stop", "-a", "-t", "0")
    assert (printed_ids(theirs), printed_ids(ours)) == ids(both, "up1", "up2", "done", "made")
    assert states(both, "up1", "up2", "done", "made") == \
        "up1 exited 137\nup2 exited 137\ndone exited 0\nmade created 0\n"
    theirs, ours = same_code(both, "stop", "-a")   # nothing runs: every ID all the same
    assert (printed_ids(theirs), printed_ids(ours)) == ids(both, "up1", "up2", "done", "made")
    assert same_code(both, "stop", "-a", "up1")[0].returncode == 125
    assert same_code(both, "stop")[0].returncode == 125


def test_stop_ignore_and_rm_ignore_pass_over_missing_names(both):
    make(both, "here", "busybox", "sleep", "1000")
    assert same_code(both, "stop", "nosuch")[0].returncode == 125
    assert same(both, "stop", "--ignore", "-t", "0", "nosuch", "here").stdout == "here\n"
    assert same(both, "stop", "-i", "nosuch").stdout == ""
    assert same_code(both, "rm", "nosuch")[0].returncode == 1
    assert same(both, "rm", "-i", "nosuch", "here").stdout == "here\n"
    assert same(both, "rm", "--ignore", "nosuch").stdout == ""


def test_kill_all_signals_only_the_running(both):
    make(both, "k1", "busybox", "sleep", "1000")
    make(both, "k2", "busybox", "sleep", "1000")
    make(both, "made", "busybox", "true", run=False)
    theirs, ours = same_code(both, "kill", "-a")
    assert (printed_ids(theirs), printed_ids(ours)) == ids(both, "k1", "k2")
    assert states(both, "k1", "k2", "made") == "k1 exited 137\nk2 exited 137\nmade created 0\n"
    assert same(both, "kill", "-a").stdout == ""   # none runs now
    assert same_code(both, "kill", "made")[0].returncode == 125
    assert same_code(both, "kill", "-a", "k1")[0].returncode == 125


def test_rm_all_removes_all_but_a_running_one_without_force(both):
    make(both, "runs", "busybox", "sleep", "1000")
    make(both, "done", "busybox", "true")
    make(both, "made", "busybox", "true", run=False)
    expected = ids(both, "done", "made")
    theirs, ours = same_code(both, "rm", "-a")
    assert theirs.returncode == 2   # podman's code for a running container
    assert (printed_ids(theirs), printed_ids(ours)) == expected
    assert same(both, "ps", "-a", "--format", "{{.Names}}").stdout == "runs\n"
    expected = ids(both, "runs")
    theirs, ours = same_code(both, "rm", "-a", "-f", "-t", "0")
    assert (printed_ids(theirs), printed_ids(ours)) == expected
    assert same(both, "ps", "-a", "--format", "{{.Names}}").stdout == ""
    assert same_code(both, "rm", "-a", "x")[0].returncode == 125
    assert same_code(both, "rm")[0].returncode == 125


def test_rm_time_goes_with_force(both):
    make(both, "timed", "busybox", "sleep", "1000")
    assert same_code(both, "rm", "-t", "5", "timed")[0].returncode == 125
    assert same(both, "rm", "-f", "-t", "0", "timed").stdout == "timed\n"
    assert same_code(both, "rm", "-f", "-t", "-1", "x")[0].returncode == 125


def test_rm_volumes_takes_the_anonymous_volumes(both):
    make(both, "anon", "-v", "/data", "busybox", "true")
    make(both, "keep", "-v", "/data", "busybox", "true")
    theirs, ours = both.both("volume", "ls", "-q")
    assert len(theirs.stdout.split()) == len(ours.stdout.split()) == 2
    same(both, "rm", "-v", "anon")
    same(both, "rm", "keep")
    theirs, ours = both.both("volume", "ls", "-q")
    assert len(theirs.stdout.split()) == len(ours.stdout.split()) == 1   # rm without -v keeps it


def test_restart_all_starts_every_container(both):
    make(both, "r1", "busybox", "sleep", "1000")
    make(both, "r2", "busybox", "sleep", "1000", run=False)
    theirs, ours = same_code(both, "restart", "-a", "-t", "0")
    assert (printed_ids(theirs), printed_ids(ours)) == ids(both, "r1", "r2")
    assert states(both, "r1", "r2") == "r1 running 0\nr2 running 0\n"
    assert same_code(both, "restart", "-a", "r1")[0].returncode == 125


def test_exec_detach_prints_a_session_id_and_leaves_the_command_running(both):
    make(both, "box", "busybox", "sleep", "1000")
    theirs, ours = same_code(both, "exec", "-d", "box", "sh", "-c", "echo ran > /tmp/ran; exec sleep 900")
    assert FULL_ID.match(theirs.stdout.strip()) and FULL_ID.match(ours.stdout.strip()), (theirs, ours)
    same(both, "exec", "box", "sh", "-c", "until [ -e /tmp/ran ]; do sleep 0.1; done; cat /tmp/ran")
    assert "sleep 900" in same(both, "exec", "box", "ps", "-o", "args").stdout
    theirs, ours = same_code(both, "exec", "-d", "box", "nosuchcmd")
    assert theirs.returncode == 125 and ours.stdout == theirs.stdout == ""
    make(both, "made", "busybox", "true", run=False)
    assert same_code(both, "exec", "-d", "made", "true")[0].returncode == 125


@pytest.mark.parametrize("user", ["root", "1000"])
def test_exec_privileged_gives_podman_s_capabilities(both, user):
    make(both, "caps", "busybox", "sleep", "1000")
    plain = same(both, "exec", "-u", user, "caps", "grep", "^Cap", "/proc/self/status").stdout
    privileged = same(both, "exec", "--privileged", "-u", user, "caps", "grep", "^Cap", "/proc/self/status").stdout
    assert plain != privileged   # the bounding set at least grows



def test_attach_relays_stdin_and_output_as_podman_s(both):
    make(both, "reader", "-i", "busybox", "sh", "-c", "read line; echo got $line; exit 4")
    # the line reaches the shell only through the attach: no output comes before it
    theirs = subprocess.run(both.podman.argv("attach", "reader"), input="hello\n", capture_output=True,
                            text=True, timeout=120)
    ours = both.ferry("attach", "reader", input="hello\n", check=False)
    # podman's attach exits 0 whatever the container's code, after a newline of its own
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (0, "got hello\n\n"), \
        (theirs.stderr, ours.stderr)
    assert states(both, "reader") == "reader exited 4\n"
    for flags in (("--sig-proxy=false",), ("--sig-proxy",), ("--no-stdin", "--detach-keys", "ctrl-x")):
        theirs, ours = same_code(both, "attach", *flags, "reader")   # taken, then refused: it has exited
        assert theirs.returncode == 125


def test_the_all_verbs_take_a_checkpointed_container_as_a_stopped_one(both):
    make(both, "saved", "busybox", "sleep", "1000")
    make(both, "up", "busybox", "sleep", "1000")
    same(both, "container", "checkpoint", "saved")
    theirs, ours = same_code(both, "kill", "-a")
    assert (printed_ids(theirs), printed_ids(ours)) == ids(both, "up")
    theirs, ours = same_code(both, "stop", "-a")
    assert (printed_ids(theirs), printed_ids(ours)) == ids(both, "saved", "up")
    assert states(both, "saved") == "saved exited 0\n"
    theirs, ours = same_code(both, "rm", "-a")
    assert theirs.returncode == 0
    assert same(both, "ps", "-a", "--format", "{{.Names}}").stdout == ""


def test_latest_acts_on_the_container_created_last(both):
    """-l on each container verb that takes it: the one created last, printed by its full ID."""
    make(both, "older", "busybox", "sleep", "1000")
    make(both, "newest", "busybox", "sleep", "1000")
    assert same(both, "inspect", "-l", "--format", "{{.Name}}").stdout == "newest\n"
    assert same(both, "exec", "-l", "echo", "hi").stdout == "hi\n"
    newest = ids(both, "newest")
    for args in (("pause", "-l"), ("unpause", "-l"), ("kill", "-l", "-s", "USR1"), ("stop", "-l", "-t", "0"),
                 ("start", "-l"), ("restart", "-l", "-t", "0")):
        theirs, ours = same_code(both, *args)
        assert (set(theirs.stdout.split()), set(ours.stdout.split())) == newest, args
    assert states(both, "older", "newest") == "older running 0\nnewest running 0\n"
    theirs, ours = same_code(both, "rm", "-l", "-f", "-t", "0")
    assert (set(theirs.stdout.split()), set(ours.stdout.split())) == newest
    assert same(both, "ps", "-a", "--format", "{{.Names}}").stdout == "older\n"


@pytest.mark.parametrize("args", [
    ("stop", "-l", "older"), ("stop", "-l", "-a"), ("kill", "-l", "older"), ("rm", "-l", "older"),
    ("start", "-l", "older"), ("attach", "-l", "older"), ("inspect", "-l", "older"), ("pause", "-l", "older"),
    ("restart", "-l", "older"), ("unpause", "-l", "older"),
], ids=" ".join)
def test_latest_with_names_is_refused_as_podman_refuses_it(both, args):
    make(both, "older", "busybox", "sleep", "1000")
    theirs, ours = same_code(both, *args)
    assert theirs.returncode == 125 and ours.stdout == theirs.stdout == ""
    assert len(ours.stderr.strip().splitlines()) == 1, ours.stderr


def test_cidfile_written_by_run_and_create_is_read_by_the_verbs_that_take_it(both, tmp_path):
    def each(*args: str, file: str, run_flags: bool = False):
        """The same command line, CIDFILE being each engine's own file named `file`; the same exit code."""
        theirs_args = [a.replace("CIDFILE", str(tmp_path / f"podman-{file}")) for a in args]
        if run_flags:
            theirs_args[1:1] = both.podman.run_flags()
        theirs = subprocess.run(both.podman.argv(*theirs_args), capture_output=True, text=True, timeout=300)
        ours = both.ferry(*[a.replace("CIDFILE", str(tmp_path / f"ferry-{file}")) for a in args], check=False)
        assert ours.returncode == theirs.returncode, (args, theirs.stderr, ours.stderr)
        return theirs, ours

    each("run", "-d", "--cidfile", "CIDFILE", "--name", "ran", "busybox", "sleep", "1000", file="ran",
         run_flags=True)
    each("create", "--cidfile", "CIDFILE", "--name", "made", "busybox", "true", file="made", run_flags=True)
    for name in ("ran", "made"):
        held = {}
        for side in ("podman", "ferry"):
            path = tmp_path / f"{side}-{name}"
            held[side] = path.read_text()
            assert path.stat().st_mode & 0o777 == 0o644, (side, name)
        assert ({held["podman"]}, {held["ferry"]}) == ids(both, name)   # the bare full ID
    # a file that exists is refused, and no container is made
    theirs, ours = each("run", "-d", "--cidfile", "CIDFILE", "--name", "again", "busybox", "true", file="ran",
                        run_flags=True)
    assert theirs.returncode == 125 and len(ours.stderr.strip().splitlines()) == 1
    assert sorted(same(both, "ps", "-a", "--format", "{{.Names}}").stdout.split()) == ["made", "ran"]
    for args in (("pause",), ("unpause",), ("kill", "-s", "USR1"), ("stop", "-t", "0"), ("restart", "-t", "0")):
        theirs, ours = each(*args, "--cidfile", "CIDFILE", file="ran")
        assert theirs.returncode == 0 and (set(theirs.stdout.split()), set(ours.stdout.split())) == ids(both, "ran")
    for args in (("stop", "--cidfile", "CIDFILE", "ran"), ("stop", "--cidfile", "CIDFILE", "-a"),
                 ("stop", "--cidfile", "CIDFILE", "-l")):
        theirs, ours = each(*args, file="ran")
        assert theirs.returncode == 125 and ours.stdout == "" and len(ours.stderr.strip().splitlines()) == 1
    theirs, ours = each("stop", "--cidfile", "CIDFILE", file="none")
    assert theirs.returncode == 125 and len(ours.stderr.strip().splitlines()) == 1
    for name in ("made", "ran"):
        assert each("rm", "-f", "--cidfile", "CIDFILE", file=name)[0].returncode == 0
    assert same(both, "ps", "-a", "--format", "{{.Names}}").stdout == ""
    theirs, ours = each("rm", "--cidfile", "CIDFILE", file="ran")   # gone: 1, as for any missing name
    assert theirs.returncode == 1


def test_filter_and_start_all_choose_the_containers_podman_s_choose(both):
    for name in ("a1", "a2", "b1"):
        make(both, name, "--label", f"grp={name}", "busybox", "sleep", "1000", run=False)

    def acted(*args: str, code: int = 0) -> set[str]:
        """The names of the containers the command printed (by full ID), the same on both engines."""
        listed = both.both("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}")
        names_by_id = [dict(line.split() for line in done.stdout.splitlines()) for done in listed]
        theirs, ours = same_code(both, *args)
        assert theirs.returncode == code, (args, theirs.stderr)
        names = [{by_id[i] for i in printed_ids(done)} for by_id, done in zip(names_by_id, (theirs, ours))]
        assert names[0] == names[1], (args, names)
        return names[1]

    assert acted("start", "--all") == {"a1", "a2", "b1"}
    assert acted("stop", "-t", "0", "--filter", "name=a") == {"a1", "a2"}
    assert acted("start", "--filter", "name=a") == {"a1", "a2"}
    assert acted("start", "--all", "--filter", "name=a") == set()   # running already
    assert acted("rm", "--filter", "label=grp=b1", code=2) == set()
    assert acted("pause", "--filter", "name=a") == {"a1", "a2"}
    assert acted("unpause", "-f", "name=a2") == {"a2"}
    assert acted("rm", "-f", "-t", "0", "--filter", "label=grp=b1") == {"b1"}
    assert states(both, "a1", "a2") == "a1 paused 0\na2 running 0\n"
    for args in (("stop", "--filter", "name=a", "a1"), ("stop", "--filter", "bogus=1"), ("start", "--all", "a1")):
        theirs, ours = same_code(both, *args)
        assert theirs.returncode == 125 and ours.stdout == "" and len(ours.stderr.strip().splitlines()) == 1
