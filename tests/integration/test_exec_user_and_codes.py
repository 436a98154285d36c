"""Issue 15 on real runc: exec and run users, exec's 127/126, and the lifecycle
verbs' codes. Each expected value is what podman 4.3.1 gave on this machine for the
same command line (busybox, with www:1000:1001 and groups web:1001, extra:2000)."""

from __future__ import annotations

import pytest

from bench.busybox import make_rootfs_tar
from tests.conftest import require
from tests.support.cli import Ferry, leftovers


@pytest.fixture(scope="module")
def ferry(tmp_path_factory):
    for key in ("runc", "overlayfs", "netns", "nftables"):
        require(key)
    root = str(tmp_path_factory.mktemp("root"))
    cli = Ferry(root)
    tar = make_rootfs_tar(str(tmp_path_factory.mktemp("img") / "busybox.tar"),
                          str(tmp_path_factory.mktemp("work")))
    cli("image", "import", tar, "busybox")
    cli.seen = set()
    yield cli
    cli.remove_everything()
    assert leftovers(root, cli.seen) == []


def started(ferry, name: str, *argv: str) -> None:
    ferry("run", "-d", "--name", name, *argv)
    ferry.seen.add(ferry.inspect(name)["Id"])


@pytest.fixture(scope="module")
def web(ferry):
    started(ferry, "web", "busybox", "sleep", "600")
    ferry("exec", "web", "sh", "-c", "echo www:x:1000:1001::/:/bin/sh >> /etc/passwd; "
          "echo web:x:1001:www >> /etc/group; echo extra:x:2000:www >> /etc/group")
    return "web"


@pytest.mark.parametrize("user,ids", [
    ("www", "uid=1000(www) gid=1001(web) groups=1001(web),2000(extra)"),
    ("1000", "uid=1000(www) gid=1001(web) groups=1001(web),2000(extra)"),
    ("www:web", "uid=1000(www) gid=1001(web)"),
    ("1000:5", "uid=1000(www) gid=5"),
    ("1234", "uid=1234 gid=0(root)"),
    ("nobody", "uid=65534(nobody) gid=65534(nogroup)"),
])
def test_exec_user_as_podman(ferry, web, user, ids):
    done = ferry("exec", "-u", user, web, "id")
    assert done.stdout.strip() == ids


def test_exec_unknown_user_is_one_line(ferry, web):
    done = ferry("exec", "-u", "nosuchuser", web, "id", check=False)
    assert done.returncode == 125 and done.stderr.count("\n") == 1 and "nosuchuser" in done.stderr


@pytest.mark.parametrize("argv,code", [
    (["nosuchcmd"], 127), (["/nonexist/x"], 127), (["/etc/passwd"], 126), (["/etc"], 126),
    (["-w", "/nonexist", "--", "true"], 127), (["sh", "-c", "exit 255"], 255), (["sh", "-c", "exit 7"], 7),
])
def test_exec_codes_as_podman(ferry, web, argv, code):
    flags = argv[:argv.index("--")] if "--" in argv else []
    command = argv[argv.index("--") + 1:] if "--" in argv else argv
    done = ferry("exec", *flags, web, *command, check=False)
    assert done.returncode == code, done.stderr
    if code in (126, 127):
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("ferry: error: "), done.stderr


def test_exec_as_a_user_who_may_not_run_it_is_126(ferry, web):
    ferry("exec", web, "mkdir", "-p", "/private")
    ferry("exec", web, "sh", "-c", "cp /bin/busybox /private/true && chmod 700 /private/true")
    assert ferry("exec", "-u", "www", web, "/private/true", check=False).returncode == 126
    assert ferry("exec", web, "/private/true").returncode == 0


@pytest.mark.parametrize("flag,ids", [
    (["-u", "nobody"], "uid=65534(nobody) gid=65534(nogroup)"),
    (["--user=1000:5"], "uid=1000 gid=5"),
    (["--user", "nobody:root"], "uid=65534(nobody) gid=0(root)"),
])
def test_run_user(ferry, flag, ids):
    assert ferry("run", "--rm=true", *flag, "busybox", "id").stdout.strip() == ids


def test_run_user_is_kept_in_the_config_and_through_checkpoint_and_restore(ferry):
    started(ferry, "as-nobody", "-u", "nobody", "busybox", "sleep", "600")
    assert ferry.inspect("as-nobody")["Config"]["User"] == "nobody"
    for restored in (False, True):
        if restored:
            ferry("container", "checkpoint", "as-nobody")
            ferry("container", "restore", "as-nobody")
        assert ferry("exec", "as-nobody", "id", "-u").stdout.strip() == "65534"
        # the container's own process, not only what exec starts
        status = ferry("exec", "as-nobody", "cat", "/proc/1/status").stdout
        assert [line.split()[1:3] for line in status.splitlines() if line.startswith(("Uid:", "Gid:"))] == \
            [["65534", "65534"], ["65534", "65534"]]
    ferry("rm", "-f", "as-nobody")


def test_stop_each_name_and_rm_codes(ferry):
    for name in ("one", "two"):
        started(ferry, name, "busybox", "sleep", "600")
    done = ferry("stop", "-t", "0", "one", "nosuch", "two", check=False)
    assert done.returncode == 125 and done.stdout.split() == ["one", "two"]
    assert done.stderr.count("\n") == 1 and "'nosuch'" in done.stderr
    assert {ferry.inspect(n)["State"]["Status"] for n in ("one", "two")} == {"exited"}
    assert ferry("rm", "nosuch", check=False).returncode == 1
    assert ferry("rm", "-f", "nosuch", "one").returncode == 0
    ferry("start", "two")
    assert ferry("rm", "two", check=False).returncode == 2
    assert ferry("inspect", "nosuch", check=False).returncode == 125
    ferry("rm", "-f", "two")


def test_logs_tail_and_global_options_after_the_command(ferry):
    ferry("run", "--name", "talker", "busybox", "sh", "-c", "for i in 1 2 3 4 5; do echo l$i; done")
    ferry.seen.add(ferry.inspect("talker")["Id"])
    assert ferry("logs", "--tail", "2", "talker").stdout == "l4\nl5\n"
    assert ferry("logs", "--tail=1", "talker", "--debug=false").stdout == "l5\n"
    bad = ferry("logs", "--bogus", "talker", check=False)
    assert bad.returncode == 125 and "see 'ferry logs --help'" in bad.stderr
    ferry("rm", "talker")
