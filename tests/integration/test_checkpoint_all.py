"""Issue 21's checkpoint verbs against podman on this machine: `container
checkpoint --all/--latest`, `container restore --all/--latest/--keep`, and
their refusals, compared on exit codes and output (the IDs each engine prints
name the same containers)."""

from __future__ import annotations

import re

import pytest

from tests.support.podman import Sides, busybox_sides, podman

FULL_ID = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def sides():
    with busybox_sides("ferry-ckall-") as pair:
        yield pair


@pytest.fixture
def made(sides):
    """Run these on both sides (name, command...); all of them go at the end."""
    names: list[str] = []

    def make(verb: str, name: str, *command: str) -> None:
        flags = ("-d",) if verb == "run" else ()
        theirs, ours = sides.both(verb, *flags, "--name", name, "busybox", *command, run_flags=True)
        assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
        names.append(name)
    yield make
    if names:
        podman(sides.podman, "rm", "-f", "-t", "0", *names)
        sides.ferry("rm", "-f", *names)


def both_ok(sides: Sides, *args: str) -> tuple[str, str]:
    theirs, ours = sides.both(*args)
    assert theirs.returncode == ours.returncode == 0, (args, theirs.stderr, ours.stderr)
    return theirs.stdout, ours.stdout


def names_of(sides: Sides, theirs: str, ours: str) -> tuple[list[str], list[str]]:
    """Each side's printed full IDs, as the names of its containers."""
    podman_names, ferry_names = [], []
    for printed, side, found in ((theirs, "podman", podman_names), (ours, "ferry", ferry_names)):
        for line in printed.splitlines():
            assert FULL_ID.match(line), (side, printed)
            if side == "podman":
                found.append(podman(sides.podman, "inspect", "--format", "{{.Name}}", line).strip())
            else:
                found.append(sides.ferry("inspect", "--format", "{{.Name}}", line).stdout.strip())
    return podman_names, ferry_names


def statuses(sides: Sides, *names: str) -> tuple[list[str], list[str]]:
    """Each side's state of the containers: running, exited or created."""
    theirs, ours = both_ok(sides, "inspect", "--format", "{{.State.Status}}", *names)
    return theirs.split(), ours.split()


def test_checkpoint_all_and_restore_all_take_the_same_containers(sides, made):
    made("run", "a1", "sleep", "1000")
    made("run", "b1", "sleep", "1000")
    made("create", "c1", "sleep", "1000")
    theirs, ours = names_of(sides, *both_ok(sides, "container", "checkpoint", "-a"))
    assert sorted(theirs) == sorted(ours) == ["a1", "b1"]   # the created one is no running container
    assert statuses(sides, "a1", "b1", "c1") == (["exited", "exited", "created"],) * 2
    theirs, ours = names_of(sides, *both_ok(sides, "container", "restore", "--all"))
    assert sorted(theirs) == sorted(ours) == ["a1", "b1"]
    assert statuses(sides, "a1", "b1", "c1") == (["running", "running", "created"],) * 2
    # Nothing to do is no failure, and says nothing.
    assert both_ok(sides, "container", "restore", "-a") == ("", "")


def test_latest_is_the_container_created_last(sides, made):
    made("run", "a2", "sleep", "1000")
    made("run", "b2", "sleep", "1000")
    for verb in ("checkpoint", "restore"):
        theirs, ours = names_of(sides, *both_ok(sides, "container", verb, "--latest"))
        assert theirs == ours == ["b2"]
    assert statuses(sides, "a2", "b2") == (["running", "running"],) * 2
    made("create", "c2", "sleep", "1000")
    for flag in ("--latest", "-l"):   # a created container has no checkpoint to take or restore
        for verb in ("checkpoint", "restore"):
            theirs, ours = sides.both("container", verb, flag)
            assert (theirs.returncode, theirs.stdout) == (ours.returncode, ours.stdout) == (125, ""), verb
            assert len(ours.stderr.strip().splitlines()) == 1, ours.stderr


@pytest.mark.parametrize("args", [
    ("container", "restore", "--all", "--import", "x.tar.gz"),
    ("container", "restore", "--latest", "--import", "x.tar.gz"),
    ("container", "checkpoint", "--latest", "a3"),
    ("container", "restore", "--latest", "a3"),
    ("container", "checkpoint", "-a", "a3"),
    ("container", "restore", "-a", "a3"),
    ("container", "checkpoint", "-a", "-l"),
    ("container", "restore", "--all", "--latest"),
    ("container", "checkpoint"),
    ("container", "checkpoint", "a3", "nosuch", "b3"),   # every name is looked up before any is checkpointed
    ("container", "restore", "a3", "nosuch", "b3"),      # or restored (neither is checkpointed here, anyway)
], ids=" ".join)
def test_refusals_are_podmans_and_change_nothing(sides, made, args):
    made("run", "a3", "sleep", "1000")
    made("run", "b3", "sleep", "1000")
    theirs, ours = sides.both(*args)
    assert (theirs.returncode, theirs.stdout) == (ours.returncode, ours.stdout) == (125, ""), theirs.stderr
    assert len(ours.stderr.strip().splitlines()) == 1, ours.stderr
    assert statuses(sides, "a3", "b3") == (["running", "running"],) * 2


def test_several_containers_one_failing_go_on_and_exit_125(sides, made):
    made("run", "a4", "sleep", "1000")
    made("create", "c4", "sleep", "1000")
    made("run", "b4", "sleep", "1000")
    for verb in ("checkpoint", "restore"):   # c4 was never running, nor checkpointed
        theirs, ours = sides.both("container", verb, "a4", "c4", "b4")
        assert (theirs.returncode, theirs.stdout) == (ours.returncode, ours.stdout) == (125, "a4\nb4\n"), \
            (theirs.stderr, ours.stderr)
        assert "c4" in ours.stderr and len(ours.stderr.strip().splitlines()) == 1, ours.stderr
    assert statuses(sides, "a4", "c4", "b4") == (["running", "created", "running"],) * 2


def test_export_of_all_takes_one_container_only(sides, made, tmp_path):
    """podman 4.3.1 writes every container into the one file, each over the
    last, and stops them all: ferry refuses instead (docs/podman-cli.md)."""
    made("run", "a5", "sleep", "1000")
    made("run", "b5", "sleep", "1000")
    archive = tmp_path / "all.tar.gz"
    done = sides.ferry("container", "checkpoint", "-a", "-e", str(archive), check=False)
    assert (done.returncode, done.stdout) == (125, "")
    assert "takes one container" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not archive.exists()
    assert statuses(sides, "a5", "b5")[1] == ["running", "running"]


def test_restore_keep_keeps_the_checkpoint_to_restore_again(sides, made):
    made("run", "k6", "sleep", "1000")
    assert both_ok(sides, "container", "checkpoint", "k6") == ("k6\n", "k6\n")
    assert both_ok(sides, "container", "restore", "--keep", "k6") == ("k6\n", "k6\n")
    assert both_ok(sides, "stop", "-t", "0", "k6") == ("k6\n", "k6\n")
    # Kept: it restores again. Without --keep, that restore used it up.
    assert both_ok(sides, "container", "restore", "k6") == ("k6\n", "k6\n")
    assert statuses(sides, "k6") == (["running"], ["running"])
    assert both_ok(sides, "stop", "-t", "0", "k6") == ("k6\n", "k6\n")
    theirs, ours = sides.both("container", "restore", "k6")
    assert (theirs.returncode, theirs.stdout) == (ours.returncode, ours.stdout) == (125, ""), ours.stdout
    assert statuses(sides, "k6") == (["exited"], ["exited"])
