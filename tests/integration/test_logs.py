"""`ferry logs` on real containers, side by side with the real podman (4.3.1
here): --timestamps, --since/--until (taken from each side's own -t output),
--tail with them, several containers, --follow with them, and the errors.
The same command lines give the same exit codes and the same text, modulo the
times, which differ between the two engines' containers."""

from __future__ import annotations

import datetime as dt
import json
import re
import select
import subprocess
import sys

import pytest

from bench.busybox import make_oci_archive
from tests.conftest import require
from tests.support.cli import Ferry, leftovers, wait_for
from tests.support.podman import Sides, private_podman

# One line a second: a, b and d on stdout, c on stderr.
PACED = "echo a; sleep 1; echo b; sleep 1; echo c >&2; sleep 1; echo d"
# Ends with a partial line: podman's conmon and ferry's monitor both log `y` as a P entry.
# (Only at the exit: ferry's monitor logs a line when it ends, not in pieces as they come.)
TWO = "echo x; printf y"
# Waits for /tmp/go (an exec makes it) between its two lines.
WAITER = "echo one; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo two"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z"
SHOWN_ENTRY = re.compile(rf"({STAMP}) ")
ENTRIES = ("a", "b", "d")
NS = 1_000_000_000


class Side:
    """One engine: how to run its CLI, and its paced container's entry times."""

    def __init__(self, name: str, argv):
        self.name, self.argv = name, argv   # argv(*args): the command line that runs the CLI
        self.times: dict[str, str] = {}

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)

    def inspect(self, container: str) -> dict:
        done = self.run("inspect", container)
        assert done.returncode == 0, (self.name, done.stderr)
        return json.loads(done.stdout)[0]

    def status(self, container: str) -> str:
        return self.inspect(container)["State"]["Status"]

    def container_id(self, container: str) -> str:
        return self.inspect(container)["Id"]


def _podman_side(sides: Sides) -> Side:
    def argv(*args: str) -> list[str]:
        args = list(args)
        if args[:1] == ["run"]:   # podman's default ulimits exceed this host's
            args[1:1] = sides.podman.run_flags()
        return sides.podman.argv(*args)
    return Side("podman", argv)


def _ferry_side(ferry: Ferry) -> Side:
    return Side("ferry", lambda *args: [sys.executable, "-m", "ferry", "--root", ferry.root, *args])


@pytest.fixture(scope="module")
def sides():
    for key in ("criu", "runc", "overlayfs", "netns", "nftables"):
        require(key)
    with private_podman("ferry-lg-") as (podman, base):
        ferry = Ferry(str(base / "ferry"))
        try:
            image = make_oci_archive(str(base / "busybox-oci.tar"), str(base))
            pair = Sides(podman, ferry)
            theirs, ours = pair.both("load", "-i", image)
            assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
            engines = (_podman_side(pair), _ferry_side(ferry))
            for side in engines:
                done = side.run("run", "-d", "--name", "lg-paced", "busybox", "sh", "-c", PACED)
                assert done.returncode == 0, (side.name, done.stderr)
                done = side.run("run", "-d", "--name", "lg-two", "busybox", "sh", "-c", TWO)
                assert done.returncode == 0, (side.name, done.stderr)
            for side in engines:
                for name in ("lg-paced", "lg-two"):
                    wait_for(lambda: side.status(name) == "exited", f"{side.name}'s {name} to exit")
                shown = side.run("logs", "-t", "lg-paced")
                side.times = dict(zip(ENTRIES, SHOWN_ENTRY.findall(shown.stdout)))
                side.times["c"] = SHOWN_ENTRY.findall(shown.stderr)[0]
                assert list(side.times) == [*ENTRIES, "c"], (side.name, shown.stdout, shown.stderr)
            yield engines
        finally:
            ids = {c["Id"] for c in ferry.json("ps", "-a", "--format", "json")}
            ferry.remove_everything()
    assert leftovers(ferry.root, ids) == []


def _ns(stamp: str) -> int:
    from ferry.util.timefmt import go_time_ns
    return go_time_ns(stamp)


def _between(times: dict[str, str], first: str, second: str) -> int:
    """A time halfway between two entries (a second apart), in nanoseconds."""
    return (_ns(times[first]) + _ns(times[second])) // 2


def _utc(ns: int, zone: dt.timezone = dt.timezone.utc) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / NS, zone)


def _both(sides, build) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """`build(times)` is the command line; each side gets it with its own times."""
    podman_side, ferry_side = sides
    return podman_side.run(*build(podman_side.times)), ferry_side.run(*build(ferry_side.times))


def _unstamped(text: str) -> str:
    return SHOWN_ENTRY.sub("", text)


# (command line from a side's times, its stdout, its stderr): what both print.
ALL = ("a\nb\nd\n", "c\n")
CASES = {
    "plain": (lambda t: ["logs", "lg-paced"], *ALL),
    "since b (exclusive)": (lambda t: ["logs", "--since", t["b"], "lg-paced"], "d\n", "c\n"),
    "until b (exclusive)": (lambda t: ["logs", "--until", t["b"], "lg-paced"], "a\n", ""),
    "since a until d": (lambda t: ["logs", "--since", t["a"], "--until", t["d"], "lg-paced"], "b\n", "c\n"),
    "since, no zone (UTC), fraction": (
        lambda t: ["logs", "--since", _utc(_between(t, "a", "b")).strftime("%Y-%m-%dT%H:%M:%S.%f"), "lg-paced"],
        "b\nd\n", "c\n"),
    "until, +01:00 zone": (
        lambda t: ["logs", "--until", _utc(_between(t, "b", "c"), dt.timezone(dt.timedelta(hours=1)))
                   .isoformat(), "lg-paced"], "a\nb\n", ""),
    "since, unix seconds with a fraction": (
        lambda t: ["logs", "--since", f"{_between(t, 'c', 'd') / NS:.3f}", "lg-paced"], "d\n", ""),
    "until, a date long after": (lambda t: ["logs", "--until", "2999-01-01", "lg-paced"], *ALL),
    "since, a date long after": (lambda t: ["logs", "--since", "2999-01-01", "lg-paced"], "", ""),
    "since 1h ago": (lambda t: ["logs", "--since", "1h", "lg-paced"], *ALL),
    "since 1h from now": (lambda t: ["logs", "--since", "-1h", "lg-paced"], "", ""),
    "until 1h: from now": (lambda t: ["logs", "--until", "1h", "lg-paced"], *ALL),
    "until 30m ago": (lambda t: ["logs", "--until", "-30m", "lg-paced"], "", ""),
    "tail 2 then since a": (lambda t: ["logs", "--tail", "2", "--since", t["a"], "lg-paced"], "d\n", "c\n"),
    "tail 2 then until b-c: nothing": (
        lambda t: ["logs", "--tail", "2", "--until", _utc(_between(t, "b", "c")).isoformat(), "lg-paced"], "", ""),
    "tail 3 then until b-c": (
        lambda t: ["logs", "--tail", "3", "--until", _utc(_between(t, "b", "c")).isoformat(), "lg-paced"], "b\n", ""),
    "tail 0": (lambda t: ["logs", "--tail", "0", "lg-paced"], "", ""),
    "tail -1": (lambda t: ["logs", "--tail=-1", "lg-paced"], *ALL),
    "-f on an exited container": (lambda t: ["logs", "-f", "--since", t["c"], "lg-paced"], "d\n", ""),
    "a partial line at the end": (lambda t: ["logs", "lg-two"], "x\ny", ""),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_filters_show_the_same_entries(sides, case):
    build, out, err = CASES[case]
    theirs, ours = _both(sides, build)
    assert (theirs.returncode, theirs.stdout, theirs.stderr) == (0, out, err)
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, out, err)


def test_timestamps_have_podman_s_shape(sides):
    theirs, ours = _both(sides, lambda t: ["logs", "-t", "lg-paced"])
    assert ours.returncode == theirs.returncode == 0
    for done in (theirs, ours):
        assert re.fullmatch(rf"{STAMP} a\n{STAMP} b\n{STAMP} d\n", done.stdout), done.stdout
        assert re.fullmatch(rf"{STAMP} c\n", done.stderr), done.stderr
    theirs, ours = _both(sides, lambda t: ["logs", "-t", "lg-two"])
    for done in (theirs, ours):   # the partial entry has its time, and no newline
        assert re.fullmatch(rf"{STAMP} x\n{STAMP} y", done.stdout), done.stdout
    # -t shows each side's own log's times, exactly: --since one excludes that entry.
    theirs, ours = _both(sides, lambda t: ["logs", "-t", "--since", t["b"], "lg-paced"])
    for done in (theirs, ours):
        assert (_unstamped(done.stdout), _unstamped(done.stderr)) == ("d\n", "c\n"), done


def _per_container(text: str, prefixes: dict[str, str]) -> dict[str, str]:
    """Several containers' output, each prefix's entries joined, by container name:
    podman writes them in no set order."""
    found: dict[str, str] = {}
    pieces = re.split("(" + "|".join(map(re.escape, prefixes)) + ") ", text)
    assert pieces[0] == "", text
    for prefix, entry in zip(pieces[1::2], pieces[2::2]):
        found[prefixes[prefix]] = found.get(prefixes[prefix], "") + entry
    return found


@pytest.mark.parametrize("names", [False, True], ids=["ids", "names"])
def test_several_containers_prefix_each_entry(sides, names):
    flags = ["-n"] if names else []
    theirs, ours = _both(sides, lambda t: ["logs", *flags, "lg-paced", "lg-two"])
    assert ours.returncode == theirs.returncode == 0
    for side, done in zip(sides, (theirs, ours)):
        prefixes = {"lg-paced": "lg-paced", "lg-two": "lg-two"} if names else \
            {side.container_id(n)[:12]: n for n in ("lg-paced", "lg-two")}
        assert _per_container(done.stdout, prefixes) == {"lg-paced": "a\nb\nd\n", "lg-two": "x\ny"}, side.name
        assert _per_container(done.stderr, prefixes) == {"lg-paced": "c\n"}, side.name


def test_several_containers_with_timestamps(sides):
    theirs, ours = _both(sides, lambda t: ["logs", "-t", "lg-paced", "lg-two"])
    assert ours.returncode == theirs.returncode == 0
    for side, done in zip(sides, (theirs, ours)):
        ids = "|".join(side.container_id(n)[:12] for n in ("lg-paced", "lg-two"))
        for line in done.stdout.splitlines():
            assert re.fullmatch(rf"(?:(?:{ids}) {STAMP} [a-z]+)+", line), (side.name, done.stdout)
        assert re.fullmatch(rf"(?:{ids}) {STAMP} c\n", done.stderr), (side.name, done.stderr)


@pytest.mark.parametrize("args", [
    ("logs", "nosuch"), ("logs", "lg-paced", "nosuch"), ("logs", "nosuch", "lg-paced"), ("logs",),
    ("logs", "-l", "lg-paced"), ("logs", "--since", "yesterday", "lg-paced"), ("logs", "--until", "10x", "lg-paced"),
    ("logs", "--since", "2026-11-30 20:41:39", "lg-paced"), ("logs", "--since", "1796071299,5", "lg-paced"),
    ("logs", "--tail", "abc", "lg-paced"), ("logs", "--since", "yesterday", "nosuch"),
], ids=lambda a: " ".join(a[1:]) or "none")
def test_the_same_failures_exit_125_printing_nothing(sides, args):
    theirs, ours = _both(sides, lambda t: list(args))
    assert ours.returncode == theirs.returncode == 125, (theirs.stderr, ours.stderr)
    assert ours.stdout == theirs.stdout == ""
    assert len(ours.stderr.strip().splitlines()) == 1, ours.stderr
    if "--since" in args or "--until" in args:
        assert "unable to interpret time value" in ours.stderr and "unable to interpret" in theirs.stderr


def test_latest_is_the_container_created_last(sides):
    theirs, ours = _both(sides, lambda t: ["logs", "-l"])
    assert ours.returncode == theirs.returncode == 0
    assert ours.stdout == theirs.stdout == "x\ny"


def _follow(side: Side, *args: str) -> subprocess.Popen:
    return subprocess.Popen(side.argv("logs", "-f", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)


@pytest.fixture
def waiters(sides):
    """A container on each side that logs `one`, then `two` once told (an exec)."""
    name = "lg-wait"
    for side in sides:
        done = side.run("run", "-d", "--name", name, "busybox", "sh", "-c", WAITER)
        assert done.returncode == 0, (side.name, done.stderr)
    for side in sides:
        wait_for(lambda: "one" in side.run("logs", name).stdout, f"{side.name}'s first line")
    yield name
    for side in sides:
        done = side.run("rm", "-f", name)
        assert done.returncode == 0, (side.name, done.stderr)


def _first_line(process: subprocess.Popen, what: str, deadline: float = 60) -> str:
    """The follower's first line, once it has printed it."""
    ready, _, _ = select.select([process.stdout], [], [], deadline)
    assert ready, f"{what} printed nothing"
    return process.stdout.readline()


def _finish(process: subprocess.Popen, what: str) -> tuple[str, str]:
    try:
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"{what} did not end")
    assert process.returncode == 0, (what, err)
    return out, err


def test_follow_prints_what_comes_until_the_container_exits(sides, waiters):
    podman_side, ferry_side = sides
    followers = {side.name: _follow(side, "--tail", "1", waiters) for side in (podman_side, ferry_side)}
    for side in (podman_side, ferry_side):
        assert _first_line(followers[side.name], f"{side.name} logs -f") == "one\n"
        assert side.run("exec", waiters, "touch", "/tmp/go").returncode == 0
    for side in (podman_side, ferry_side):
        out, _ = _finish(followers[side.name], f"{side.name} logs -f")
        assert out == "two\n", side.name
        assert side.status(waiters) == "exited"


def test_follow_with_until_shows_nothing_logged_after_it(sides, waiters):
    """ferry stops following once --until has passed, while the container still runs (as
    podman does since 4.4); podman 4.3.1 follows to the exit. Both show the same lines."""
    podman_side, ferry_side = sides
    # One absolute time for both (the containers' clock is the host's): `two`, logged
    # once ferry's follower has ended, comes after it on both sides.
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)).isoformat()
    followers = {side.name: _follow(side, "--until", until, waiters) for side in (podman_side, ferry_side)}
    out, _ = _finish(followers["ferry"], "ferry logs -f --until")
    assert out == "one\n"
    assert ferry_side.status(waiters) == "running"      # ferry did not wait for the exit
    assert podman_side.run("exec", waiters, "touch", "/tmp/go").returncode == 0
    out, _ = _finish(followers["podman"], "podman logs -f --until")
    assert out == "one\n"                               # `two` came after --until

