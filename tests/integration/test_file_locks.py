"""`--file-locks`: a process holding a file lock checkpoints and restores with
the lock still held, checked from inside the container (another process's
try-lock fails) and from the host (/proc/locks names the restored process).
Without it the dump is refused, in one line that says to add --file-locks, and
the container runs on, lock and all. `ferry checkpoint inspect` lists the lock
an exported archive took along.

busybox has no flock applet: a tiny static `locker` (built here with gcc,
which setup installs to build CRIU) takes the lock, or with -n tries it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.podman import Sides, busybox_sides, podman

LOCKER_C = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
static void bye(int sig) { (void)sig; _exit(0); }
int main(int argc, char **argv) {
    int try_only = argc == 3 && strcmp(argv[1], "-n") == 0;
    if (argc != 2 && !try_only) { fprintf(stderr, "usage: locker [-n] FILE\n"); return 2; }
    int fd = open(argv[argc - 1], O_RDWR | O_CREAT, 0644);
    if (fd < 0) { perror("open"); return 2; }
    if (flock(fd, LOCK_EX | (try_only ? LOCK_NB : 0)) != 0) { perror("flock"); return 1; }
    if (try_only) return 0;
    signal(SIGTERM, bye);
    for (;;) pause();
}
"""
LOCK_FILE = "/tmp/held.lock"


@pytest.fixture(scope="module")
def locker_dir(tmp_path_factory):
    """A directory holding the static locker, to bind into the containers."""
    return build_locker(tmp_path_factory.mktemp("locker"))


def build_locker(directory) -> str:
    """The static locker built in `directory` (a pathlib.Path); that directory."""
    assert shutil.which("gcc"), "gcc is missing: the lock holder is built with it (make setup installs it)"
    source = directory / "locker.c"
    source.write_text(LOCKER_C)
    built = subprocess.run(["gcc", "-static", "-O2", "-o", str(directory / "locker"), str(source)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, f"cannot build the static lock holder (libc6-dev missing?): {built.stderr[-200:]}"
    os.chmod(directory, 0o755)
    return str(directory)


@pytest.fixture(scope="module")
def sides():
    with busybox_sides("ferry-flock-") as pair:
        yield pair


@pytest.fixture
def locked(sides, locker_dir):
    """A container `name` on both sides whose process holds an flock on LOCK_FILE."""
    names = []

    def make(name: str) -> None:
        theirs, ours = sides.both("run", "-d", "--name", name, "-v", f"{locker_dir}:/lk:ro", "busybox",
                                  "/lk/locker", LOCK_FILE, run_flags=True)
        assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
        names.append(name)
        assert lock_is_held(sides, name) == (True, True)
    yield make
    if names:
        podman(sides.podman, "rm", "-f", "-t", "0", *names)
        sides.ferry("rm", "-f", *names)


def lock_is_held(sides: Sides, name: str) -> tuple[bool, bool]:
    """On each side: another process in the container cannot take the lock."""
    theirs, ours = sides.both("exec", name, "/lk/locker", "-n", LOCK_FILE)
    held = []
    for done in (theirs, ours):
        assert done.returncode in (0, 1), done.stderr
        held.append(done.returncode == 1)
    return held[0], held[1]


def host_lock_holders() -> set[int]:
    """The pids /proc/locks names as holding an FLOCK."""
    with open("/proc/locks") as f:
        return {int(line.split()[4]) for line in f if line.split()[1] == "FLOCK"}


def both_ok(sides: Sides, *args: str) -> tuple[str, str]:
    theirs, ours = sides.both(*args)
    assert theirs.returncode == ours.returncode == 0, (args, theirs.stderr, ours.stderr)
    return theirs.stdout, ours.stdout


def test_without_file_locks_the_dump_is_refused_and_the_container_keeps_its_lock(sides, locked):
    locked("nolocks")
    theirs, ours = sides.both("container", "checkpoint", "nolocks")
    assert (theirs.returncode, theirs.stdout) == (ours.returncode, ours.stdout) == (125, "")
    [line] = ours.stderr.strip().splitlines()
    assert "holds a file lock" in line and "--file-locks" in line, line
    assert sides.ferry.inspect("nolocks")["State"]["Status"] == "running"
    assert lock_is_held(sides, "nolocks") == (True, True)


def test_a_lock_taken_along_is_held_again_after_the_restore(sides, locked):
    locked("locks")
    assert both_ok(sides, "container", "checkpoint", "--file-locks", "locks") == ("locks\n", "locks\n")
    # podman takes the lock again only with --file-locks here too; ferry
    # always does, so its restore line has none.
    theirs = subprocess.run(sides.podman.argv("container", "restore", "--file-locks", "locks"),
                            capture_output=True, text=True, timeout=300)
    ours = sides.ferry("container", "restore", "locks")
    assert (theirs.returncode, theirs.stdout) == (ours.returncode, ours.stdout) == (0, "locks\n"), \
        (theirs.stderr, ours.stderr)
    assert lock_is_held(sides, "locks") == (True, True)
    assert sides.ferry.inspect("locks")["State"]["Pid"] in host_lock_holders()


def test_an_exported_lock_is_held_again_where_the_archive_is_restored(sides, locked, tmp_path):
    locked("moved")
    archive = str(tmp_path / "moved.tar.zst")
    sides.ferry("container", "checkpoint", "--file-locks", "-e", archive, "moved")
    assert_inspect_shows_the_flock(sides, archive)
    sides.ferry("rm", "moved")
    # The locker's directory is a host path the archive names: granted here.
    sides.ferry("container", "restore", "-i", archive, "--allow-bind-mounts")
    held = sides.ferry("exec", "moved", "/lk/locker", "-n", LOCK_FILE, check=False)
    assert held.returncode == 1, held.stderr
    assert sides.ferry.inspect("moved")["State"]["Pid"] in host_lock_holders()


def assert_inspect_shows_the_flock(sides: Sides, archive: str) -> None:
    """The lock is the locker's exclusive flock, on the fd it opened LOCK_FILE as."""
    found = sides.ferry.json("checkpoint", "inspect", "--all", "--format", "json", archive)
    [lock] = found["file_locks"]
    assert (lock["kind"], lock["type"]) == ("flock", "write"), lock
    [holder] = [p for p in found["processes"] if p["pid"] == lock["pid"]]
    assert [f["fd"] for f in holder["files"] if f["description"].endswith(LOCK_FILE)] == [lock["fd"]], holder
    tree = sides.ferry("checkpoint", "inspect", archive).stdout
    assert f"[flock write] pid {lock['pid']}, fd {lock['fd']}" in tree, tree
