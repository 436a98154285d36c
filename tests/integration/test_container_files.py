"""cp, diff, export and commit: the verbs that reach a container's files.

The same command lines go to the real podman on this machine and to ferry
(exit codes, diff output, tar members, committed images that run); then what
only ferry is asked: a file copied in keeps its bytes and mode through a
checkpoint and a restore, a path under a volume lands in the volume, and a
symlink inside the container never leads a copy out to the host."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import uuid

import pytest

from tests.support.cli import busybox_root
from tests.support.podman import Sides, busybox_sides

ODD_BYTES = b"ab\x00\xff\n\x7fELF\r\n"
ODD_MODE = 0o751
SETUP = (("run", "-d", "--name", "up", "busybox", "sleep", "1000"),
         ("create", "--name", "cr", "busybox", "sleep", "1000"))


@pytest.fixture(scope="module")
def host_files(tmp_path_factory):
    """Host files to copy: an odd file, a text file, a tree."""
    base = tmp_path_factory.mktemp("cpfiles")
    odd = base / "odd"
    odd.write_bytes(ODD_BYTES)
    os.chmod(odd, ODD_MODE)
    os.chown(odd, 123, 456)
    (base / "hello").write_text("hello from the host\n")
    (base / "tree" / "sub").mkdir(parents=True)
    (base / "tree" / "sub" / "x").write_text("x\n")
    (base / "tree" / "top").write_text("top\n")
    return base


@pytest.fixture(scope="module")
def sides(host_files):
    with busybox_sides("ferry-files-", *SETUP) as pair:
        try:
            for container in ("up", "cr"):
                theirs, ours = pair.both("cp", str(host_files / "odd"), f"{container}:/odd")
                assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
            theirs, ours = pair.both("cp", str(host_files / "tree"), "up:/tmp/")
            assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
            theirs, ours = pair.both("cp", str(host_files / "hello"), "up:/hello")
            assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
            theirs, ours = pair.both("exec", "up", "rm", "/etc/group")
            assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
            yield pair
        finally:
            for image in ("files-commit", "files-changed"):
                pair.ferry("rmi", "-f", image, check=False)


def raw(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=120)


def ferry_argv(sides: Sides, *args: str) -> list[str]:
    return [sys.executable, "-m", "ferry", "--root", sides.ferry.root, *args]


def members(data: bytes) -> dict[str, tuple[str, int]]:
    """A tar's members: name (no trailing slash) -> (type, mode)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name.rstrip("/"): (m.type.decode(), m.mode & 0o7777) for m in tar}


@pytest.mark.parametrize("case", [
    ("cp", "nope:/odd", "{host}/x"),
    ("cp", "up:/nonexist", "{host}/x"),
    ("cp", "{host}/odd", "{host}/copy"),
    ("cp", "{host}/nonexist", "up:/x"),
    ("cp", "up:/etc", "{host}/odd"),
    ("cp", "{host}/tree", "up:/etc/passwd"),
    ("cp", "{host}/odd", "up:/nonexistdir/new"),
    ("cp", "{host}/odd", "up:/nonexistdir/sub/"),
    ("cp", "up:/odd", "{host}/nodir/x"),
    ("diff", "nope"),
    ("diff", "--format", "bogus", "up"),
    ("export", "nope"),
    ("commit", "nope", "files-nope"),
    ("commit", "-c", "BOGUS x", "up", "files-nope"),
    ("commit", "-c", "ENV", "up", "files-nope"),
    ("commit", "-m", "a message", "up", "files-nope"),
    ("commit", "up", "BAD::name"),
], ids=" ".join)
def test_bad_command_lines_fail_as_podman_s_do(sides, host_files, case):
    args = [arg.format(host=host_files) for arg in case]
    theirs, ours = sides.both(*args)
    assert ours.returncode == theirs.returncode == 125, (theirs.stderr, ours.stderr)
    assert ours.stdout == "" and len(ours.stderr.strip().splitlines()) == 1, ours.stderr


def test_diff_lists_what_podman_s_lists(sides):
    for container, expected in (("up", {"C /etc", "D /etc/group", "A /odd", "A /tmp/tree/sub/x"}),
                                ("cr", {"A /odd"})):
        theirs, ours = sides.both("diff", container)
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), (theirs.stderr, ours.stderr)
        assert expected <= set(ours.stdout.splitlines())
    theirs, ours = sides.both("diff", "--format", "json", "up")
    assert json.loads(ours.stdout) == json.loads(theirs.stdout)
    assert {"changed", "added", "deleted"} <= set(json.loads(ours.stdout))


def test_diff_latest_is_the_container_created_last(sides):
    theirs, ours = sides.both("diff", "-l")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (0, "A /odd\n")
    theirs, ours = sides.both("diff", "-l", "up")
    assert ours.returncode == theirs.returncode == 125


def test_diff_of_an_image_lists_its_files_as_podman_s(sides):
    theirs, ours = sides.both("diff", "busybox")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)
    assert "A /bin/busybox" in ours.stdout.splitlines()


def test_container_diff_is_diff(sides):
    theirs, ours = sides.both("container", "diff", "up")
    assert ours.stdout == theirs.stdout == sides.ferry("diff", "up").stdout


@pytest.mark.parametrize("container", ["up", "cr"])
def test_cp_out_keeps_bytes_mode_and_owner_as_podman_s(sides, host_files, container):
    got = {}
    for side, argv in (("podman", sides.podman.argv), ("ferry", lambda *a: ferry_argv(sides, *a))):
        dest = host_files / f"out-{side}-{container}"
        done = raw(argv("cp", f"{container}:/odd", str(dest)))
        assert done.returncode == 0, done.stderr
        info = os.lstat(dest)
        got[side] = (dest.read_bytes(), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
    assert got["ferry"] == got["podman"] == (ODD_BYTES, ODD_MODE, 0, 0)


def test_cp_archive_false_keeps_the_archive_s_owner_as_podman_s(sides, host_files):
    theirs, ours = sides.both("cp", "--archive=false", str(host_files / "odd"), "up:/kept")
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    theirs, ours = sides.both("exec", "up", "stat", "-c", "%u %g %a", "/kept", "/odd")
    assert ours.stdout == theirs.stdout == "123 456 751\n0 0 751\n"


def test_cp_to_stdout_writes_podman_s_tar(sides):
    for path in ("/tmp/tree", "/tmp/tree/.", "/odd"):
        theirs = raw(sides.podman.argv("cp", f"up:{path}", "-"))
        ours = raw(ferry_argv(sides, "cp", f"up:{path}", "-"))
        assert ours.returncode == theirs.returncode == 0, (theirs.stderr, ours.stderr)
        assert members(ours.stdout) == members(theirs.stdout), path


def test_cp_from_stdin_unpacks_into_a_directory_as_podman_s(sides, host_files):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(host_files / "tree"), arcname="streamed")
    for argv in (sides.podman.argv, lambda *a: ferry_argv(sides, *a)):
        assert raw(argv("cp", "-", "up:/tmp"), buffer.getvalue()).returncode == 0
        assert raw(argv("cp", "-", "up:/odd"), buffer.getvalue()).returncode == 125
        assert raw(argv("cp", "-", "up:/tmp"), b"not a tar\n").returncode == 125
    theirs, ours = sides.both("exec", "up", "cat", "/tmp/streamed/sub/x", "/tmp/streamed/top")
    assert ours.stdout == theirs.stdout == "x\ntop\n"


def test_cp_of_a_dir_s_contents_and_into_a_dir_as_podman_s(sides, host_files):
    for args in (("exec", "up", "mkdir", "/dots"), ("cp", f"{host_files}/tree/.", "up:/dots"),
                 ("cp", f"{host_files}/tree", "up:/dots"), ("cp", f"{host_files}/tree", "up:/fresh")):
        theirs, ours = sides.both(*args)
        assert theirs.returncode == ours.returncode == 0, (args, theirs.stderr, ours.stderr)
    theirs, ours = sides.both("exec", "up", "ls", "-R", "/dots", "/fresh")
    assert ours.stdout == theirs.stdout
    assert "tree" in ours.stdout.split() and "top" in ours.stdout.split()


def test_cp_of_a_file_over_a_dir_needs_overwrite_as_podman_s(sides, host_files):
    theirs, ours = sides.both("exec", "up", "mkdir", "-p", "/clash/odd")
    assert theirs.returncode == ours.returncode == 0
    theirs, ours = sides.both("cp", str(host_files / "odd"), "up:/clash/")
    assert ours.returncode == theirs.returncode != 0, (theirs.stderr, ours.stderr)
    assert len(ours.stderr.strip().splitlines()) == 1
    theirs, ours = sides.both("cp", "--overwrite", str(host_files / "odd"), "up:/clash/")
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    theirs, ours = sides.both("exec", "up", "stat", "-c", "%F %a", "/clash/odd")
    assert ours.stdout == theirs.stdout == "regular file 751\n"


def test_export_holds_the_added_file_as_podman_s(sides, host_files):
    got = {}
    for side, argv in (("podman", sides.podman.argv), ("ferry", lambda *a: ferry_argv(sides, *a))):
        out = host_files / f"export-{side}.tar"
        done = raw(argv("export", "-o", str(out), "up"))
        assert done.returncode == 0, done.stderr
        got[side] = members(out.read_bytes())
    for name in ("odd", "hello", "tmp/tree", "tmp/tree/sub/x", "bin/busybox"):
        assert got["ferry"][name] == got["podman"][name], name
    assert "etc/group" not in got["ferry"] and "etc/group" not in got["podman"]
    streamed = raw(ferry_argv(sides, "export", "up"))
    assert streamed.returncode == 0 and members(streamed.stdout) == got["ferry"]


def test_commit_makes_an_image_that_runs_as_podman_s(sides):
    theirs, ours = sides.both("commit", "up", "files-commit")
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    assert len(ours.stdout.strip()) == 64 and ours.stderr.splitlines()[0] == theirs.stderr.splitlines()[0]
    for args in (("cat", "/hello"), ("ls", "/etc/group"), ("stat", "-c", "%a %s", "/odd")):
        theirs, ours = sides.both("run", "--rm", "files-commit", *args, run_flags=True)
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), (args, theirs.stderr,
                                                                                       ours.stderr)


def test_commit_changes_set_the_config_as_podman_s(sides):
    changes = ["CMD cat /hello", "ENV A=b", "LABEL tier=web", "WORKDIR /tmp", "EXPOSE 8080", "USER 0",
               "ENTRYPOINT [\"/bin/sh\", \"-c\"]", "STOPSIGNAL SIGINT"]
    args = [arg for change in changes for arg in ("-c", change)]
    theirs, ours = sides.both("commit", "-q", "-a", "someone", *args, "up", "files-changed")
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    assert ours.stderr == "" and len(ours.stdout.strip()) == 64
    theirs, ours = sides.both("image", "inspect", "files-changed")
    podman_s, ferry_s = json.loads(theirs.stdout)[0]["Config"], json.loads(ours.stdout)[0]["Config"]
    for key in ("Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts"):
        assert ferry_s[key] == podman_s[key], key
    assert ferry_s["Cmd"] == ["/bin/sh", "-c", "cat /hello"] and ferry_s["ExposedPorts"] == {"8080/tcp": {}}
    theirs, ours = sides.both("run", "--rm", "files-changed", "echo $A; pwd", run_flags=True)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (0, "b\n/tmp\n")


# ---- ferry only ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def ferry(tmp_path_factory):
    with busybox_root(tmp_path_factory.mktemp("files")) as cli:
        yield cli


def test_cp_into_then_out_of_a_checkpointed_and_restored_container_keeps_bytes_and_mode(ferry, host_files):
    ferry("run", "-d", "--name", "ckpt", "busybox", "sleep", "1000")
    try:
        ferry("cp", str(host_files / "odd"), "ckpt:/odd")
        ferry("container", "checkpoint", "ckpt")
        assert ferry.inspect("ckpt")["State"]["Checkpointed"]
        ferry("container", "restore", "ckpt")
        assert ferry.inspect("ckpt")["State"]["Running"]
        out = host_files / "from-restored"
        ferry("container", "cp", "ckpt:/odd", str(out))
        assert out.read_bytes() == ODD_BYTES
        assert stat.S_IMODE(os.stat(out).st_mode) == ODD_MODE
        assert ferry("exec", "ckpt", "stat", "-c", "%a %s", "/odd").stdout == f"751 {len(ODD_BYTES)}\n"
    finally:
        ferry("rm", "-f", "ckpt", check=False)


def test_cp_into_a_checkpointed_container_is_there_after_restore(ferry, host_files):
    ferry("run", "-d", "--name", "waiting", "busybox", "sleep", "1000")
    try:
        ferry("container", "checkpoint", "waiting")
        ferry("cp", str(host_files / "hello"), "waiting:/while-checkpointed")
        ferry("container", "restore", "waiting")
        assert ferry("exec", "waiting", "cat", "/while-checkpointed").stdout == "hello from the host\n"
    finally:
        ferry("rm", "-f", "waiting", check=False)


def test_cp_under_a_volume_goes_to_the_volume(ferry, host_files):
    ferry("run", "-d", "--name", "withvol", "-v", "filesvol:/data", "busybox", "sleep", "1000")
    try:
        ferry("cp", str(host_files / "hello"), "withvol:/data/")
        mountpoint = ferry.json("volume", "inspect", "filesvol")[0]["Mountpoint"]
        assert open(os.path.join(mountpoint, "hello")).read() == "hello from the host\n"
        assert ferry("exec", "withvol", "cat", "/data/hello").stdout == "hello from the host\n"
        assert "/data/hello" not in ferry("diff", "withvol").stdout
    finally:
        ferry("rm", "-f", "-v", "withvol", check=False)
        ferry("volume", "rm", "-f", "filesvol", check=False)


def test_symlinks_in_the_container_never_lead_to_the_host(ferry, host_files, tmp_path):
    """Links planted in the container (absolute, and climbing with ..) are
    followed inside its root only, both ways."""
    ferry("run", "-d", "--name", "hostile", "busybox", "sleep", "1000")
    marker = f"ferry-escape-{uuid.uuid4().hex[:8]}"
    try:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, target in (("abs", "/"), ("climb", "../../../../../../.."), ("file", "/etc/hostname")):
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
        done = raw([sys.executable, "-m", "ferry", "--root", ferry.root, "cp", "-", "hostile:/"], buffer.getvalue())
        assert done.returncode == 0, done.stderr
        for link in ("abs", "climb"):
            ferry("cp", str(host_files / "hello"), f"hostile:/{link}/tmp/{marker}-{link}")
            assert not os.path.exists(f"/tmp/{marker}-{link}")
            assert ferry("exec", "hostile", "cat", f"/tmp/{marker}-{link}").stdout == "hello from the host\n"
        ferry("cp", "hostile:/climb/etc/passwd", str(tmp_path / "passwd"))
        assert (tmp_path / "passwd").read_text() == ferry("exec", "hostile", "cat", "/etc/passwd").stdout
        ferry("cp", "hostile:/file", str(tmp_path / "link"))   # the link itself, not what it names
        assert os.readlink(tmp_path / "link") == "/etc/hostname"
    finally:
        ferry("rm", "-f", "hostile", check=False)


def test_cp_out_of_etc_hosts_gives_the_bound_file(ferry, host_files):
    ferry("run", "-d", "--name", "named", "--hostname", "files-host", "busybox", "sleep", "1000")
    try:
        for name in ("hosts", "hostname"):
            copied = subprocess.run([sys.executable, "-m", "ferry", "--root", ferry.root, "cp", f"named:/etc/{name}",
                                     "-"], capture_output=True, timeout=60)
            with tarfile.open(fileobj=io.BytesIO(copied.stdout)) as tar:
                data = tar.extractfile(name).read().decode()
            assert data == ferry("exec", "named", "cat", f"/etc/{name}").stdout
        assert "files-host" in data
        refused = ferry("cp", str(host_files / "hello"), "named:/etc/hosts", check=False)
        assert refused.returncode == 125 and len(refused.stderr.splitlines()) == 1
    finally:
        ferry("rm", "-f", "named", check=False)


def test_a_stopped_container_s_root_is_unmounted_after_cp(ferry, host_files):
    ferry("create", "--name", "idle", "busybox", "cat", "/copied")
    try:
        ferry("cp", str(host_files / "hello"), "idle:/copied")
        rootfs = ferry.inspect("idle")["GraphDriver"]["Data"]["MergedDir"]
        with open("/proc/self/mountinfo") as f:
            assert f" {rootfs} " not in f.read()
        assert ferry("diff", "idle").stdout == "A /copied\n"
        assert ferry("cp", "idle:/copied", "-").stdout.endswith("\0")   # a tar, read from the mounted root
    finally:
        ferry("rm", "-f", "idle", check=False)


@contextlib.contextmanager
def small_tmp(root: str, size: str = "16m"):
    """ROOT/tmp on a tmpfs of its own, as small as test_full_disk's
    filesystems but only where cp spools, so the rest of the root has room."""
    tmp = os.path.join(root, "tmp")
    os.makedirs(tmp, mode=0o700, exist_ok=True)
    subprocess.run(["mount", "--make-private", "-t", "tmpfs", "-o", f"size={size},mode=0700", "ferry-test-cp", tmp],
                   check=True, capture_output=True, timeout=30)
    try:
        yield tmp
    finally:
        subprocess.run(["umount", tmp], check=True, capture_output=True, timeout=30)


def one_line_disk_full(done: subprocess.CompletedProcess, what: str, tmp: str) -> str:
    stderr = done.stderr.decode() if isinstance(done.stderr, bytes) else done.stderr
    assert done.returncode == 125, f"{what}: exit {done.returncode}: {stderr}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ferry: error: {what}: stopped after "), stderr
    assert f"free under {tmp} (hint: free space on the filesystem of {tmp}" in lines[0], lines[0]
    return lines[0]


def test_cp_stops_before_its_spool_fills_the_state_root_s_disk(ferry, tmp_path):
    """Both spools under ROOT/tmp, a tar from stdin and a file on its way out,
    stop once more would leave less than the margin free there: one line,
    exit 125, no spool left and nothing copied."""
    ferry("run", "-d", "--name", "spooler", "busybox", "sleep", "1000")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("big")
        info.size = 32 << 20   # twice the tmpfs
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    try:
        (tmp_path / "big-inside").write_bytes(bytes(32 << 20))
        ferry("cp", str(tmp_path / "big-inside"), "spooler:/big-inside")   # while ROOT/tmp has room
        with small_tmp(ferry.root) as tmp:
            cp_stdin = [sys.executable, "-m", "ferry", "--root", ferry.root, "cp", "-", "spooler:/tmp/"]
            done = raw(cp_stdin, buffer.getvalue())
            one_line_disk_full(done, "cannot copy stdin into container spooler", tmp)
            assert os.listdir(tmp) == []
            assert ferry("exec", "spooler", "ls", "/tmp").stdout == ""

            out = tmp_path / "big-outside"
            done = ferry("cp", "spooler:/big-inside", str(out), check=False)
            one_line_disk_full(done, "cannot copy /big-inside of container spooler to the host", tmp)
            assert os.listdir(tmp) == [] and not out.exists()

            # room enough: the bound is the disk's, not a size limit
            done = raw(cp_stdin, small_tar())
            assert done.returncode == 0, done.stderr
            assert ferry("exec", "spooler", "cat", "/tmp/small").stdout == "small\n"
    finally:
        ferry("rm", "-f", "spooler", check=False)


def small_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("small")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"small\n"))
    return buffer.getvalue()
