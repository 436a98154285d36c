"""run's extras on real runc and CRIU (issue 20): --env-file, --add-host,
--dns*, --replace, -P, --restart, --init and anonymous volumes, each checked
from inside the container, again after a checkpoint and restore in place and
after an export restored under a new name; and the exit codes of bad values
side by side with podman's."""

from __future__ import annotations

import os

import pytest

from bench.busybox import make_oci_archive
from tests.support.cli import busybox_root, http_get, wait_for
from tests.support.podman import busybox_sides

# The busybox image again, with a VOLUME holding the image's files (/var/www
# has index.html) and an EXPOSEd port.
VOLUMED = "localhost/busybox-vol:latest"
INIT = "/run/podman-init"


@pytest.fixture(scope="module")
def ferry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run-extras")
    with busybox_root(workdir) as cli:
        image = make_oci_archive(str(workdir / "vol-oci.tar"), str(workdir), name=VOLUMED,
                                 extra_config={"Volumes": {"/var/www": {}}, "ExposedPorts": {"80/tcp": {}}})
        cli("load", "-i", image)
        yield cli
        for volume in cli.json("volume", "ls", "--format", "json"):
            cli("volume", "rm", "-f", volume["Name"], check=False)


def run(ferry, *args: str) -> str:
    cid = ferry(*args).stdout.strip().splitlines()[-1]
    ferry.seen.add(cid)
    return cid


def exec_out(ferry, name: str, script: str) -> str:
    return ferry("exec", name, "sh", "-c", script).stdout


def volumes(ferry) -> set[str]:
    return {v["Name"] for v in ferry.json("volume", "ls", "--format", "json")}


def state(ferry, name: str) -> tuple[str, int]:
    info = ferry.inspect(name)
    return info["State"]["Status"], info["RestartCount"]


def monitor_runs(ferry, cid: str) -> bool:
    """Whether a monitor of this container lives: none means nothing can start it again."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"ferry.runtime.monitor" in cmdline and cid.encode() in cmdline:
            return True
    return False


HOSTS_FLAGS = ("--add-host", "foo:1.2.3.4", "--add-host", "six.example:::1", "--dns", "9.9.9.9",
               "--dns-search", "a.example", "--dns-option", "ndots:3")
RESOLV = "search a.example\nnameserver 9.9.9.9\noptions ndots:3\n"


def check_inside(ferry, name: str, written: str) -> None:
    """What the flags gave the container, seen from inside it."""
    hosts = exec_out(ferry, name, "cat /etc/hosts").splitlines()
    assert hosts[:2] == ["1.2.3.4\tfoo", "::1\tsix.example"], hosts
    assert exec_out(ferry, name, "cat /etc/resolv.conf") == RESOLV
    assert exec_out(ferry, name, "cat /proc/1/cmdline").split("\0")[:3] == [INIT, "--", "sh"]
    assert exec_out(ferry, name, "echo $FROM_FILE $OVERRIDDEN") == "file e\n"
    # The image's /var/www was copied up into the anonymous volume; /data holds what was written.
    assert exec_out(ferry, name, "cat /var/www/index.html") == "hello from busybox\n"
    assert exec_out(ferry, name, "cat /data/note") == written
    # An orphan reparented to PID 1 (the init) is reaped, not left a zombie.
    ferry("exec", name, "sh", "-c", "(sleep 0.1 &) ; true")
    wait_for(lambda: "Z" not in exec_out(ferry, name, "cat /proc/[0-9]*/stat | cut -d' ' -f3 | sort -u"),
             "the orphan reaped by the init")


def test_flags_inside_and_after_checkpoint_restore_and_export(ferry, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# a comment\nFROM_FILE=file\nOVERRIDDEN=from-file\n")
    run(ferry, "run", "-d", "--name", "xt", "--init", *HOSTS_FLAGS, "--env-file", str(env_file),
        "-e", "OVERRIDDEN=e", "-v", "/data", VOLUMED, "sh", "-c", "echo one > /data/note; exec sleep 1000")
    wait_for(lambda: exec_out(ferry, "xt", "cat /data/note 2>/dev/null"), "the note written")
    check_inside(ferry, "xt", "one\n")
    info = ferry.inspect("xt")
    assert info["Path"] == INIT and info["Args"][:2] == ["--", "sh"]
    host = info["HostConfig"]
    assert host["ExtraHosts"] == ["foo:1.2.3.4", "six.example:::1"] and host["Dns"] == ["9.9.9.9"]
    assert host["DnsSearch"] == ["a.example"] and host["DnsOptions"] == ["ndots:3"] and host["Init"] is True
    anonymous = {m["Destination"]: m["Name"] for m in info["Mounts"]}
    assert set(anonymous) == {"/data", "/var/www"} and all(len(n) == 64 for n in anonymous.values())
    assert set(anonymous.values()) <= volumes(ferry)

    ferry("container", "checkpoint", "xt")
    assert state(ferry, "xt")[0] == "exited"
    ferry("container", "restore", "xt")
    check_inside(ferry, "xt", "one\n")

    archive = str(tmp_path / "xt.tar.zst")
    ferry("container", "checkpoint", "xt", "--leave-running", "--file", archive)
    run(ferry, "container", "restore", "--name", "xt2", "--file", archive)
    check_inside(ferry, "xt2", "one\n")
    copies = {m["Destination"]: m["Name"] for m in ferry.inspect("xt2")["Mounts"]}
    assert set(copies) == set(anonymous) and not set(copies.values()) & set(anonymous.values())
    ferry("exec", "xt2", "sh", "-c", "echo two > /data/note")   # its own volume, not the other's
    assert exec_out(ferry, "xt", "cat /data/note") == "one\n"

    # rm keeps anonymous volumes, rm -v removes them (podman's rule).
    ferry("rm", "-f", "xt2")
    assert set(copies.values()) <= volumes(ferry)
    ferry("rm", "-f", "-v", "xt")
    assert not set(anonymous.values()) & volumes(ferry)
    for name in copies.values():
        ferry("volume", "rm", name)


def test_dns_none_leaves_the_image_s_resolv_conf(ferry):
    done = ferry("run", "--rm", "--dns", "none", "busybox", "cat", "/etc/resolv.conf", check=False)
    assert done.returncode == 1 and "No such file" in done.stderr + done.stdout


def test_rm_flag_removes_anonymous_volumes(ferry):
    before = volumes(ferry)
    ferry("run", "--rm", "-v", "/scratch", VOLUMED, "true")
    assert volumes(ferry) == before


def test_replace_removes_the_container_of_that_name(ferry):
    first = run(ferry, "run", "-d", "--replace", "--name", "rp", "busybox", "sleep", "1000")   # none yet: fine
    printed = ferry("run", "-d", "--replace", "--name", "rp", "busybox", "sleep", "1000").stdout.splitlines()
    assert printed[0] == "rp" and len(printed) == 2   # podman names the one it replaced, then the new ID
    second = printed[1]
    ferry.seen.add(second)
    assert first != second and ferry.inspect("rp")["Id"] == second
    assert not ferry("inspect", first, check=False).returncode == 0
    ferry("rm", "-f", "rp")


def test_publish_all_publishes_the_exposed_ports(ferry):
    run(ferry, "run", "-d", "--name", "pa", "-P", VOLUMED, "httpd", "-f", "-p", "80", "-h", "/var/www")
    bindings = ferry.inspect("pa")["HostConfig"]["PortBindings"]
    port = int(bindings["80/tcp"][0]["HostPort"])
    assert port > 0
    assert http_get(f"http://127.0.0.1:{port}/") == "hello from busybox\n"
    ferry("rm", "-f", "-v", "pa")


def test_on_failure_restarts_up_to_its_count(ferry):
    cid = run(ferry, "run", "-d", "--name", "of", "--restart", "on-failure:2", "busybox",
              "sh", "-c", "sleep 0.3; exit 3")
    wait_for(lambda: state(ferry, "of") == ("exited", 2) and not monitor_runs(ferry, cid),
             "two restarts, then exited for good", deadline=60)
    info = ferry.inspect("of")
    assert info["State"]["ExitCode"] == 3
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    ferry("rm", "of")


QUIT_LOOP = "rm -f /tmp/quit; while [ ! -e /tmp/quit ]; do sleep 0.1; done"   # ends when told to


def test_always_restarts_until_stopped_or_killed(ferry):
    cid = run(ferry, "run", "-d", "--name", "al", "--restart", "always", "busybox", "sh", "-c", QUIT_LOOP)
    for count in (1, 2):   # an exit of its own, code 0, starts it again
        ferry("exec", "al", "touch", "/tmp/quit")
        wait_for(lambda: state(ferry, "al") == ("running", count), f"restart {count}")
    assert ferry.inspect("al")["HostConfig"]["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    ferry("stop", "-t", "1", "al")
    wait_for(lambda: not monitor_runs(ferry, cid), "its monitor gone")
    assert state(ferry, "al") == ("exited", 2)
    ferry("start", "al")   # a start by the user sets the count back, as podman's does
    assert state(ferry, "al") == ("running", 0)
    ferry("kill", "al")    # podman: a killed container is not restarted either
    wait_for(lambda: state(ferry, "al")[0] == "exited" and not monitor_runs(ferry, cid), "killed for good")
    assert state(ferry, "al") == ("exited", 0)
    ferry("rm", "al")


def test_a_checkpointed_always_container_is_not_restarted(ferry):
    cid = run(ferry, "run", "-d", "--name", "ck", "--restart", "always", "busybox", "sh", "-c", QUIT_LOOP)
    ferry("container", "checkpoint", "ck")
    wait_for(lambda: not monitor_runs(ferry, cid), "its monitor gone")
    info = ferry.inspect("ck")
    assert info["State"]["Status"] == "exited" and info["State"]["Checkpointed"] and info["RestartCount"] == 0
    ferry("container", "restore", "ck")
    assert state(ferry, "ck") == ("running", 0)
    # Restored, it keeps its policy: its own exit starts it again.
    ferry("exec", "ck", "touch", "/tmp/quit")
    wait_for(lambda: state(ferry, "ck") == ("running", 1), "restarted after its exit")
    ferry("rm", "-f", "ck")


# ---- side by side with podman ------------------------------------------------------

@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    with busybox_sides("ferry-rx-") as pair:
        yield pair


@pytest.mark.parametrize("flags", [
    ("--add-host", "foo"), ("--add-host", "foo:bar"), ("--add-host", ":1.2.3.4"),
    ("--dns", "bad"), ("--dns", "1.2.3.4", "--dns", "none"), ("--dns-search", "bad..x"),
    ("--dns-option", 'x"y'), ("--dns", "none", "--dns-search", "."), ("--dns", "none", "--dns-option", "ndots:1"),
    ("--restart", "bogus"), ("--restart", "on-failure:x"), ("--restart", "on-failure:-1"),
    ("--restart", "always:3"), ("--rm", "--restart", "always"),
    ("--env-file", "/nonexistent/env"), ("--replace",),
], ids=lambda a: " ".join(a))
def test_bad_values_exit_as_podman_s(sides, flags):
    theirs, ours = sides.both("run", "--rm", *flags, "busybox", "true", run_flags=True)
    assert ours.returncode == theirs.returncode == 125, (theirs.stderr, ours.stderr)
    assert len(ours.stderr.strip().splitlines()) == 1, ours.stderr


def test_hosts_and_resolv_conf_lines_are_podman_s(sides):
    script = "head -2 /etc/hosts; cat /etc/resolv.conf"
    theirs, ours = sides.both("run", "--rm", *HOSTS_FLAGS, "busybox", "sh", "-c", script, run_flags=True)
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    assert ours.stdout == theirs.stdout == "1.2.3.4\tfoo\n::1\tsix.example\n" + RESOLV


def test_env_file_is_read_as_podman_reads_it(sides, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text('  A=1\n# no\nB = 2 \nC="q"\nD=x=y\nNOT_SET_ANYWHERE\n')
    script = 'echo "[$A] [$C] [$D] [$(env | grep -c NOT_SET_ANYWHERE)]"'
    theirs, ours = sides.both("run", "--rm", "--env-file", str(env_file), "-e", "A=2", "busybox",
                              "sh", "-c", script, run_flags=True)
    assert ours.stdout == theirs.stdout == '[2] ["q"] [x=y] [0]\n', (theirs.stdout, ours.stdout)
    # A key with blanks is kept as written (a shell drops it from its children's environment).
    theirs, ours = sides.both("run", "--rm", "--env-file", str(env_file), "busybox", "env", run_flags=True)
    assert "B = 2 " in theirs.stdout.splitlines() and "B = 2 " in ours.stdout.splitlines(), \
        (theirs.stdout, ours.stdout)
