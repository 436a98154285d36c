"""Issue 21's volume verbs against the real podman on this machine: `volume
create --label/-o`, `volume inspect` (Labels, Options), `volume ls --filter`,
`volume prune`; and a tmpfs volume's options and labels carried through a
checkpoint archive (ferry only)."""

from __future__ import annotations

import json

import pytest

from tests.support.podman import Sides, busybox_sides

# (name, create flags): the volumes both engines hold.
VOLUMES = (
    ("tv", ("--label", "a=b", "-l", "c", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=uid=1000,mode=0700")),
    ("dv", ("-o", "o=uid=1000,gid=1000")),
    ("lv", ("--label", "a=z", "--driver", "local")),
    ("used", ()),
)


@pytest.fixture(scope="module")
def sides():
    setup = [("volume", "create", *flags, name) for name, flags in VOLUMES]
    # a stopped container's volume is not unused: prune must keep it
    setup.append(("create", "--name", "holder", "-v", "used:/data", "busybox", "true"))
    with busybox_sides("ferry-vol-", *setup) as pair:
        try:
            yield pair
        finally:
            pair.both("rm", "-f", "holder")
            for name, _ in VOLUMES:
                pair.ferry("volume", "rm", "-f", name, check=False)


def same(sides: Sides, *args: str) -> str:
    theirs, ours = sides.both(*args)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), (theirs.stderr, ours.stderr)
    return ours.stdout


def test_inspect_shows_labels_and_options_as_podman_s(sides):
    same(sides, "volume", "inspect", "tv", "dv", "lv", "--format",
         "{{.Name}} {{.Labels}} {{.Options}} {{.Driver}} {{.Scope}} {{.MountCount}}")
    theirs, ours = sides.both("volume", "inspect", "tv", "dv")
    for podman_s, ferry_s in zip(json.loads(theirs.stdout), json.loads(ours.stdout)):
        assert (ferry_s["Labels"], ferry_s["Options"]) == (podman_s["Labels"], podman_s["Options"])
        assert {k: ferry_s.get(k) for k in ("UID", "GID")} == {k: podman_s.get(k) for k in ("UID", "GID")}
        for key in set(podman_s) & set(ferry_s):
            assert type(ferry_s[key]) is type(podman_s[key]), key


@pytest.mark.parametrize("names, code", [
    (("used",), 2), (("nov", "used"), 2), (("used", "nov"), 2), (("nov",), 1), (("nov", "nov2"), 1),
], ids=lambda value: " ".join(value) if isinstance(value, tuple) else str(value))
def test_rm_exits_as_podman_s_for_a_volume_in_use_or_missing(sides, names, code):
    """2 when a volume is in use, whatever else failed; 1 when one is missing; each failure has its line."""
    theirs, ours = sides.both("volume", "rm", *names)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (code, ""), \
        (theirs.stderr, ours.stderr)
    assert len(ours.stderr.strip().splitlines()) == len(theirs.stderr.strip().splitlines()), ours.stderr
    assert "used" in sides.ferry("volume", "ls", "-q").stdout.split()


@pytest.mark.parametrize("filters", [
    ("label=a",), ("label=a=b",), ("label=c",), ("label=c=",), ("name=v",), ("name=^t",), ("name=nomatch",),
    ("driver=local",), ("opt=type=tmpfs",), ("label=a=b", "label=a=z"), ("label=a", "name=l"),
    ("dangling=true",), ("dangling=false",),
], ids=" ".join)
def test_ls_filters_choose_what_podman_s_choose(sides, filters):
    args = [arg for f in filters for arg in ("--filter", f)]
    same(sides, "volume", "ls", *args)
    same(sides, "volume", "ls", "-q", *args)


@pytest.mark.parametrize("args", [
    ("volume", "ls", "--filter", "bogus=1"),
    ("volume", "create", "-o", "bogus=1", "bad1"),
    ("volume", "create", "-o", "o=uid=x", "bad2"),
    ("volume", "create", "--driver", "nosuch", "bad3"),
    ("volume", "create", "-l", "=y", "bad4"),
    ("volume", "create", "tv"),
    ("volume", "inspect", "nosuch"),
    ("volume", "prune", "-f", "--filter", "bogus=1"),
], ids=" ".join)
def test_bad_requests_fail_as_podman_s_do(sides, args):
    theirs, ours = sides.both(*args)
    assert ours.returncode == theirs.returncode == 125, (theirs.stderr, ours.stderr)
    assert ours.stdout == "" and len(ours.stderr.strip().splitlines()) == 1, ours.stderr
    assert "bad" not in sides.ferry("volume", "ls", "-q").stdout   # nothing half-made


def test_a_tmpfs_volume_mounts_a_tmpfs_with_its_options(sides):
    command = ("run", "--rm", "-v", "tv:/data", "busybox", "sh", "-c", "grep ' /data ' /proc/mounts; ls -ldn /data")
    theirs, ours = sides.both(*command, run_flags=True)
    assert ours.returncode == theirs.returncode == 0, (theirs.stderr, ours.stderr)
    mount = [line.split() for line in ours.stdout.splitlines()]
    assert mount[0][0] == mount[0][2] == "tmpfs" and "mode=700" in mount[0][3] and "uid=1000" in mount[0][3]
    assert mount[1][:3] == ["drwx------", "2", "1000"]
    assert theirs.stdout.splitlines()[1].split()[:3] == mount[1][:3]
    owner = sides.both("run", "--rm", "-v", "dv:/data", "busybox", "stat", "-c", "%u:%g", "/data", run_flags=True)
    assert owner[0].stdout == owner[1].stdout == "1000:1000\n"


def test_prune_removes_unused_volumes_only(sides):
    try:
        for name in ("p1", "p2"):
            same(sides, "volume", "create", "--label", f"p={name}", name)
        assert same(sides, "volume", "prune", "-f", "--filter", "label=p=p1") == "p1\n"
        # podman's question and list; no answer (stdin closed) fails, and removes nothing
        theirs, ours = sides.both("volume", "prune")
        assert ours.returncode == theirs.returncode == 125
        assert ours.stdout == theirs.stdout and len(ours.stderr.strip().splitlines()) == 1
        assert "p2" in sides.ferry("volume", "ls", "-q").stdout
        ours = sides.ferry("volume", "prune", input="n\n")
        assert ours.returncode == 0 and ours.stdout.endswith("[y/N] ")
        assert "p2" in sides.ferry("volume", "ls", "-q").stdout
        pruned = same(sides, "volume", "prune", "-f").split()
        assert "p2" in pruned and "used" not in pruned   # `holder` is stopped, and still uses it
        assert same(sides, "volume", "prune", "-f") == ""
        for name, flags in VOLUMES:   # the others went too: make them again alike
            if name != "used":
                same(sides, "volume", "create", *flags, name)
    finally:
        sides.both("volume", "rm", "-f", "p1", "p2")


def test_a_checkpointed_container_s_volumes_are_not_unused(sides):
    ferry = sides.ferry
    ferry("volume", "create", "-l", "k=v", "-o", "type=tmpfs", "-o", "o=size=5m,mode=0750", "ck")
    ferry("run", "-d", "--name", "ckpt", "-v", "ck:/data", "busybox", "sleep", "1000")
    try:
        ferry("exec", "ckpt", "sh", "-c", "echo kept > /data/f")
        ferry("container", "checkpoint", "ckpt")
        assert "ck" not in ferry("volume", "prune", "-f").stdout.split()
        assert "ck" in ferry("volume", "ls", "-q", "--filter", "dangling=false").stdout.split()
    finally:
        ferry("rm", "-f", "ckpt", check=False)
        ferry("volume", "rm", "-f", "ck", check=False)


def test_a_tmpfs_volume_s_options_labels_and_content_travel_in_an_archive(sides, tmp_path):
    ferry = sides.ferry
    archive = str(tmp_path / "moved.tar")
    ferry("volume", "create", "-l", "k=v", "-o", "type=tmpfs", "-o", "o=size=5m,mode=0750", "mv")
    ferry("run", "-d", "--name", "mover", "-v", "mv:/data", "busybox", "sleep", "1000")
    try:
        ferry("exec", "mover", "sh", "-c", "echo travelled > /data/f")
        ferry("container", "checkpoint", "-e", archive, "mover")
        ferry("rm", "-f", "mover")
        ferry("volume", "rm", "mv")   # as on another host: the restore makes it
        ferry("container", "restore", "-i", archive)
        assert ferry("exec", "mover", "cat", "/data/f").stdout == "travelled\n"
        mount = ferry("exec", "mover", "grep", " /data ", "/proc/mounts").stdout.split()
        assert mount[2] == "tmpfs" and "size=5120k" in mount[3] and "mode=750" in mount[3]
        assert ferry("volume", "inspect", "mv", "--format", "{{.Labels}} {{.Options}}").stdout == \
            "map[k:v] map[o:size=5m,mode=0750 type:tmpfs]\n"
    finally:
        ferry("rm", "-f", "mover", check=False)
        ferry("volume", "rm", "-f", "mv", check=False)
