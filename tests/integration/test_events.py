"""Issue 21's compatibility suite for `events`: the commands record what they
did, and `ferry events` shows it as podman's does (its statuses in order,
its line, its JSON), past ones with --stream=false, new ones as they come;
the image verbs' events too."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tarfile

import pytest

from tests.support.podman import Sides, busybox_sides

# One container's life on both sides; podman and ferry record it alike.
LIFE = (
    ("run", "-d", "--name", "ev", "--label", "team=x", "busybox", "sleep", "1000"),
    ("pause", "ev"), ("unpause", "ev"), ("rename", "ev", "ev2"), ("exec", "ev2", "true"),
    ("kill", "ev2"), ("wait", "ev2"), ("rm", "ev2"),
    ("run", "--name", "quits", "busybox", "sh", "-c", "exit 4"),
    ("run", "-d", "--name", "kept", "busybox", "sleep", "1000"),
    ("container", "checkpoint", "kept"), ("container", "restore", "kept"),
)


@pytest.fixture(scope="module")
def sides():
    with busybox_sides("ferry-events-", *LIFE) as pair:
        yield pair


def statuses(text: str) -> list[str]:
    """The lines, with a repeated one said once (podman may log a cleanup twice)."""
    lines = text.splitlines()
    return [line for i, line in enumerate(lines) if i == 0 or line != lines[i - 1]]


def same_statuses(sides: Sides, *args: str) -> list[str]:
    theirs, ours = sides.both("events", "--stream=false", *args)
    assert ours.returncode == theirs.returncode == 0, (theirs.stderr, ours.stderr)
    assert statuses(ours.stdout) == statuses(theirs.stdout)
    return statuses(ours.stdout)


def test_a_container_s_life_reads_as_podman_s(sides):
    assert same_statuses(sides, "--filter", "label=team=x", "--format", "{{.Status}}") == [
        "create", "init", "start", "pause", "unpause", "rename", "exec", "exec_died", "kill", "died", "cleanup",
        "remove"]


def test_filters_by_container_name_and_event(sides):
    assert same_statuses(sides, "--filter", "container=ev2", "--format", "{{.Status}} {{.Name}}") == [
        "rename ev2", "exec ev2", "exec_died ev2", "kill ev2", "died ev2", "cleanup ev2", "remove ev2"]
    assert same_statuses(sides, "--filter", "container=kept", "--filter", "event=checkpoint",
                         "--filter", "event=restore", "--format", "{{.Status}}") == ["checkpoint", "restore"]


def test_a_died_event_s_json_has_podman_s_keys_and_types(sides):
    theirs, ours = sides.both("events", "--stream=false", "--filter", "container=quits", "--filter",
                              "event=died", "--format", "json")
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    mine, podman_s = json.loads(ours.stdout), json.loads(theirs.stdout)
    assert list(mine) == list(podman_s)
    assert {k: type(v) for k, v in mine.items()} == {k: type(v) for k, v in podman_s.items()}
    assert (mine["ContainerExitCode"], mine["Name"], mine["Image"]) == (4, "quits", podman_s["Image"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", mine["Time"])


def test_the_default_line_is_podman_s(sides):
    theirs, ours = sides.both("events", "--stream=false", "--filter", "label=team=x", "--filter", "event=create")
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    shape = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,9})? \+0000 UTC container create [0-9a-f]{64} "
                       r"\(image=localhost/busybox:latest, name=ev, team=x\)\n")
    assert shape.fullmatch(ours.stdout) and shape.fullmatch(theirs.stdout)


def test_a_template_sees_podman_s_fields(sides):
    args = ("--filter", "container=quits", "--filter", "event=create",
            "--format", "{{.Type}} {{.Status}} {{.Name}} {{.Image}} {{len .ID}} {{.Attributes}}")
    assert same_statuses(sides, *args) == ["container create quits localhost/busybox:latest 64 map[]"]


def test_since_and_until_bound_the_past(sides):
    assert sides.ferry("events", "--stream=false", "--until", "2000-01-01T00:00:00Z").stdout == ""
    assert sides.ferry("events", "--stream=false", "--since", "1h", "--filter", "container=quits",
                       "--format", "{{.Status}}").stdout.split()[0] == "create"
    assert sides.ferry("events", "--since", "1h", "--until=-1s", "--filter", "event=died",
                       "--format", "{{.Name}}").stdout.split() == ["ev2", "quits"]   # --until ends the stream


@pytest.mark.parametrize("args", [("--filter", "bogus"), ("--since", "bogus")], ids=" ".join)
def test_bad_flags_get_one_line(sides, args):
    done = sides.ferry("events", "--stream=false", *args, check=False)
    assert done.returncode == 125 and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_the_stream_shows_new_events_and_ends_cleanly_on_a_signal(sides, stop):
    ferry = sides.ferry
    name = f"st{int(stop)}"
    # --since: the event counts whether it comes before the stream has started or after
    follower = subprocess.Popen([sys.executable, "-m", "ferry", "--root", ferry.root, "events", "--since", "10m",
                                 "--filter", f"container={name}", "--format", "{{.Status}}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ferry("create", "--name", name, "busybox", "true")
        ready, _, _ = select.select([follower.stdout], [], [], 30)
        assert ready, "no event came"
        assert follower.stdout.readline() == "create\n"
        follower.send_signal(stop)
        assert follower.wait(30) == 0, follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        follower.stdout.close()
        follower.stderr.close()
        ferry("rm", "-f", name, check=False)


def test_the_events_file_stays_private(sides):
    path = os.path.join(sides.ferry.root, "logs", "events.log")
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_commit_is_a_container_event(sides):
    theirs, ours = sides.both("commit", "quits", "quits-image")
    assert ours.returncode == theirs.returncode == 0, (theirs.stderr, ours.stderr)
    assert same_statuses(sides, "--filter", "event=commit", "--format", "{{.Type}} {{.Status}} {{.Name}}") == [
        "container commit quits"]


# ---- image events ------------------------------------------------------------------------------------

def image_verbs(registry: str, work: str, side: str) -> list[tuple[str, ...]]:
    """The image verbs, the same on both sides but for their own files and repository."""
    repo = f"{registry}/events/{side}:1"
    return [
        ("tag", "busybox", "mine:one", "mine:two"),
        ("save", "-o", f"{work}/one.tar", "mine:one"),
        ("save", "-m", "-o", f"{work}/two.tar", "mine:one", "mine:two"),
        ("rmi", "mine:two"),
        ("push", "--tls-verify=false", "mine:one", repo),
        ("pull", "--tls-verify=false", repo),
        ("image", "import", f"{work}/rootfs.tar", "imported:v1"),
        ("rmi", "imported:v1"),
        ("rmi", "-a"),
        ("load", "-i", f"{work}/one.tar"),
    ]


def on_side(pair: Sides, side: str, *args: str) -> subprocess.CompletedProcess:
    if side == "ferry":
        return pair.ferry(*args, check=False)
    return subprocess.run(pair.podman.argv(*args), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def image_sides(tmp_path_factory):
    from tests.support.registry import Registry
    base = tmp_path_factory.mktemp("image-events")
    registry = Registry(str(base / "registry")).start()
    try:
        with busybox_sides("ferry-image-events-") as pair:
            for side in ("podman", "ferry"):
                work = base / side
                work.mkdir()
                with tarfile.open(work / "rootfs.tar", "w") as tar:
                    tar.add(__file__, arcname="hello")
                for args in image_verbs(registry.host, str(work), side):
                    done = on_side(pair, side, *args)
                    assert done.returncode == 0, (side, args, done.stderr)
            yield pair, base
    finally:
        registry.stop()


def image_events(pair: Sides, side: str, base, *args: str) -> list[dict]:
    """The side's image events as JSON, its own paths and repository said as SIDE."""
    done = on_side(pair, side, "events", "--stream=false", "--filter", "type=image", *args, "--format", "json")
    assert done.returncode == 0, done.stderr
    text = done.stdout.replace(str(base / side), "WORK").replace(f"/events/{side}:", "/events/SIDE:")
    return [json.loads(line) for line in text.splitlines()]


def test_image_verbs_record_podman_s_events(image_sides):
    pair, base = image_sides
    theirs, ours = (image_events(pair, side, base) for side in ("podman", "ferry"))
    assert [e["Status"] for e in ours] == [e["Status"] for e in theirs] == [
        "loadfromarchive",                      # busybox_sides' load
        "tag", "tag", "save", "save", "save", "untag", "remove", "push", "pull", "tag", "untag", "remove",
        "untag", "untag", "untag", "remove",    # rmi -a: busybox's names, then the image
        "loadfromarchive"]
    # Names and IDs as podman's, but for the name order of rmi -a and the busybox archive's path.
    def comparable(events):
        return [(e["Status"], e.get("Name", "") if i not in (0, 13, 14, 15) else "", bool(e.get("ID")))
                for i, e in enumerate(events)]
    assert comparable(ours) == comparable(theirs)
    assert sorted(e["Name"] for e in ours[13:16]) == sorted(e["Name"] for e in theirs[13:16])
    assert [list(e) for e in ours] == [list(e) for e in theirs]   # keys, with podman's omitted empty ones
    assert all(e["Attributes"] is None and e["Type"] == "image" for e in ours)


def test_image_events_filter_by_name_id_and_event_as_podman_s(image_sides):
    pair, base = image_sides
    for args in (("--filter", "image=mine:one"), ("--filter", "image=localhost/mine:two"),
                 ("--filter", "event=remove", "--filter", "event=save")):
        theirs, ours = (image_events(pair, side, base, *args) for side in ("podman", "ferry"))
        assert [(e["Status"], e.get("Name")) for e in ours] == [(e["Status"], e.get("Name")) for e in theirs], args
    for side in ("podman", "ferry"):   # an ID prefix: the busybox image's events, none of the imported one's
        pushed = image_events(pair, side, base, "--filter", "event=push")[0]["ID"]
        assert [e["Status"] for e in image_events(pair, side, base, "--filter", f"image={pushed[:12]}")] == [
            "tag", "tag", "save", "save", "save", "untag", "remove", "push", "untag", "untag", "untag", "remove"]


def test_an_image_event_s_default_line_and_template_are_podman_s(image_sides):
    pair, _ = image_sides
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,9})? \+0000 UTC image"
    shapes = {   # an empty ID or name still has its space
        ("--filter", "event=loadfromarchive"): rf"{stamp} loadfromarchive  /\S+/one\.tar\n",
        ("--filter", "event=tag", "--filter", "image=mine:two"): rf"{stamp} tag [0-9a-f]{{64}} mine:two\n",
        ("--filter", "event=remove"): rf"{stamp} remove [0-9a-f]{{64}} \n",
    }
    for args, shape in shapes.items():
        for side in ("podman", "ferry"):
            last = on_side(pair, side, "events", "--stream=false", *args).stdout.splitlines(keepends=True)[-1]
            assert re.fullmatch(shape, last), (side, last)
    theirs, ours = pair.both("events", "--stream=false", "--filter", "event=pull",
                             "--format", "{{.Type}} {{.Status}} [{{.ID}}] [{{.Image}}] {{.Attributes}}")
    assert ours.stdout == theirs.stdout == "image pull [] [] map[]\n"
