"""ferry against the real podman on this machine, side by side (issue 15):
the same command lines give the same exit codes, and the fields scripts read
(states, IDs, users, --print-stats) have podman's values and shapes."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.podman import busybox_sides


@pytest.fixture(scope="module")
def sides():
    with busybox_sides("ferry-pp-", ("run", "-d", "--name", "s1", "busybox", "sleep", "1000")) as pair:
        yield pair


@pytest.mark.parametrize("args", [
    ("nosuchcommand",),
    ("run", "--nosuchflag", "busybox"),
    ("container",),
    ("inspect", "nosuch"),
    ("stop", "nosuch"),
    ("kill", "nosuch"),
    ("logs", "nosuch"),
    ("rm", "nosuch"),
    ("rm", "-f", "nosuch"),
    ("rm", "s1"),                              # running, without -f
    ("exec", "s1", "nosuchcmd"),
    ("exec", "s1", "/etc/passwd"),             # not executable
    ("exec", "s1", "/etc"),
    ("exec", "s1", "sh", "-c", "exit 7"),
], ids=lambda a: " ".join(a))
def test_the_same_command_line_exits_with_podman_s_code(sides, args):
    theirs, ours = sides.both(*args)
    assert ours.returncode == theirs.returncode, (theirs.stderr, ours.stderr)
    assert len(ours.stderr.strip().splitlines()) <= 1, ours.stderr


@pytest.mark.parametrize("args", [("inspect", "s1", "nosuch", "--format", "{{.Name}}"),
                                  ("inspect", "nosuch", "s1", "other", "--format", "{{.Name}}"),
                                  ("inspect", "nosuch", "other")], ids=lambda a: " ".join(a))
def test_inspect_shows_the_containers_it_finds_and_names_each_it_does_not(sides, args):
    theirs, ours = sides.both(*args)
    assert ours.returncode == theirs.returncode == 125
    if "--format" in args:
        assert ours.stdout == theirs.stdout == "s1\n"
    else:
        assert json.loads(ours.stdout) == json.loads(theirs.stdout) == []
    assert len(ours.stderr.strip().splitlines()) == len(theirs.stderr.strip().splitlines()), \
        (theirs.stderr, ours.stderr)


@pytest.mark.parametrize("user", ["nobody", "65534", "0", "root", "nobody:root", "65534:0"])
def test_exec_users_are_podman_s(sides, user):
    theirs, ours = sides.both("exec", "-u", user, "s1", "id")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), (theirs.stderr, ours.stderr)


def test_a_checkpointed_container_looks_as_podman_s_does(sides):
    for theirs, ours in (sides.both("run", "-d", "--name", "ck", "busybox", "sleep", "1000", run_flags=True),
                         sides.both("container", "checkpoint", "ck")):
        assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    fields = "{{.State.Status}} {{.State.ExitCode}} {{.State.Checkpointed}} {{.Config.StopSignal}} {{.OCIRuntime}}"
    theirs, ours = sides.both("inspect", "ck", "--format", fields)
    assert ours.stdout == theirs.stdout == "exited 0 true 15 runc\n"
    theirs, ours = sides.both("container", "restore", "ck", "--print-stats")
    podman_stats, ferry_stats = json.loads(theirs.stdout), json.loads(ours.stdout)
    assert set(ferry_stats) == set(podman_stats)
    [podman_entry], [ferry_entry] = podman_stats["container_statistics"], ferry_stats["container_statistics"]
    assert set(podman_entry) <= set(ferry_entry) and ferry_entry["RawInput"] == podman_entry["RawInput"] == "ck"
    assert set(podman_entry["criu_statistics"]) == set(ferry_entry["criu_statistics"])
    theirs, ours = sides.both("inspect", "ck", "--format", "{{.State.Status}} {{.State.Restored}}")
    assert ours.stdout == theirs.stdout == "running true\n"


def _rm_container_round_trip(run, names, archive: str) -> tuple[int, bool, bool]:
    """run(*args) -> CompletedProcess on one engine: (exit code of a local
    checkpoint, whether the export left it listed, whether the import kept its ID)."""
    original = run("run", "-d", "--rm", "--name", "gone", "busybox", "sleep", "1000").stdout.strip()
    local = run("container", "checkpoint", "gone").returncode
    assert run("container", "checkpoint", "gone", "--export", archive).returncode == 0
    listed = "gone" in names()
    restored = run("container", "restore", "--import", archive).stdout.strip()
    run("rm", "-f", "gone")
    return local, listed, restored == original


def test_an_export_of_an_rm_container_removes_it_and_its_import_keeps_the_id(sides, tmp_path):
    def podman(*args):
        if args[0] == "run":
            args = (args[0], *sides.podman.run_flags(), *args[1:])
        return subprocess.run(sides.podman.argv(*args), capture_output=True, text=True, timeout=300)

    def ferry(*args):
        return sides.ferry(*args, check=False)
    theirs = _rm_container_round_trip(podman, sides.podman.names, str(tmp_path / "podman.tar.gz"))
    ours = _rm_container_round_trip(ferry, sides.ferry.names, str(tmp_path / "ferry.tar.gz"))
    assert ours == theirs == (125, False, True)
