"""The pure parts of cp, diff, export and commit: parsing locations and
`--change` lines, the committed config, and tar trees packed and unpacked
inside a root without leaving it."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections import namedtuple
from types import SimpleNamespace

import pytest

from ferry.engine.config import ContainerConfig
from ferry.engine.container_files import (Changes, ContainerFiles, clean, commit_config, parse_changes,
                                          parse_location, tree_changes, write_layer)
from ferry.image.manifest import ImageConfig
from ferry.runtime import inroot
from ferry.util.errors import DiskFull, UsageError

ROOT = os.geteuid() == 0


@pytest.mark.parametrize("text, expected", [
    ("web:/etc/hosts", ("web", "/etc/hosts")),
    ("web:relative", ("web", "relative")),
    ("/host/a:b", (None, "/host/a:b")),
    ("./a:b", (None, "./a:b")),
    ("plain", (None, "plain")),
    ("-", (None, "-")),
])
def test_locations_split_as_podman_s(text, expected):
    assert parse_location(text) == expected


@pytest.mark.parametrize("path, expected", [
    ("../../etc", "/etc"), ("a/./b/", "/a/b/"), ("/", "/"), ("", "/"), ("/x/../../y", "/y"),
])
def test_container_paths_are_cleaned_inside_root(path, expected):
    assert clean(path) == expected


def test_changes_parse_as_podman_s():
    parsed = dict(parse_changes(["CMD cat /f", "entrypoint [\"/bin/sh\", \"-c\"]", "ENV A=b C=\"d e\"",
                                 "EXPOSE 80", "LABEL x=y", "USER 1000", "WORKDIR /tmp", "VOLUME /v /w",
                                 "STOPSIGNAL SIGINT"]))
    assert parsed["CMD"] == ["/bin/sh", "-c", "cat /f"]
    assert parsed["ENTRYPOINT"] == ["/bin/sh", "-c"]
    assert parsed["ENV"] == [("A", "b"), ("C", "d e")]
    assert parsed["EXPOSE"] == "80/tcp"
    assert parsed["VOLUME"] == ["/v", "/w"]
    assert dict(parse_changes(["ENV K some value"]))["ENV"] == [("K", "some value")]
    assert dict(parse_changes(["CMD [\"x\"]"]))["CMD"] == ["x"]


@pytest.mark.parametrize("change, message", [
    ("BOGUS x", 'invalid change "BOGUS x" - invalid instruction BOGUS'),
    ("FROM x", 'invalid change "FROM x" - invalid instruction FROM'),
    ("ENV", 'invalid change "ENV" - must be formatted as KEY VALUE'),
    ("", 'invalid change "" - must be formatted as KEY VALUE'),
    ("EXPOSE http", None),
    ("VOLUME relative", None),
])
def test_bad_changes_are_refused_in_one_line(change, message):
    with pytest.raises(UsageError) as refused:
        parse_changes([change])
    if message:
        assert str(refused.value) == message


def _container(**fields) -> ContainerConfig:
    base = dict(image="localhost/busybox:latest", image_digest="sha256:" + "0" * 64,
                args=("sleep", "1000"), command=("sleep", "1000"), env=("PATH=/bin", "FOO=1"), workdir="/tmp",
                user="", hostname="h", network="ferry", ip="", mac="", ports=(), volumes=(), stop_signal="SIGTERM",
                rm=False, tty=False, interactive=False)
    base.update(fields)
    return ContainerConfig(**base)


def test_commit_config_takes_the_container_s_then_the_changes():
    image = ImageConfig(cmd=("sh",), env=("PATH=/bin",), labels=(("a", "1"),), exposed_ports=("22/tcp",))
    config = commit_config(image, _container(), parse_changes(["ENV FOO=2", "LABEL b=2", "EXPOSE 80",
                                                               "WORKDIR sub"]))
    assert config.cmd == ("sleep", "1000")
    assert config.env == ("PATH=/bin", "FOO=2")
    assert config.labels == (("a", "1"), ("b", "2"))
    assert config.exposed_ports == ("22/tcp", "80/tcp")
    assert config.working_dir == "/tmp/sub"
    entry = commit_config(image, _container(args=("/entry", "sleep", "1000")), [])
    assert entry.entrypoint == ("/entry",) and entry.cmd == ("sleep", "1000")


def test_changes_render_sorted_with_podman_s_letters():
    changes = Changes(changed=["/etc"], added=["/f", "/etc/new"], deleted=["/etc/group"])
    assert changes.lines() == ["C /etc", "D /etc/group", "A /etc/new", "A /f"]


def _tar(entries) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o751
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _unpack(root: str, dest: str, data: bytes, **kwargs) -> None:
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        unpacker = inroot.Unpacker(fd, dest, owner=(os.getuid(), os.getgid()), **kwargs)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            unpacker.extract_all(tar)
    finally:
        os.close(fd)


def test_unpacking_through_a_planted_link_stays_in_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "abs").symlink_to("/")
    (root / "climb").symlink_to("../../../../..")
    (root / "away").symlink_to(str(outside))
    for via in ("abs", "climb"):
        _unpack(str(root), via, _tar([("dropped", "file", b"x")]))
    assert (root / "dropped").read_bytes() == b"x"   # both land at the root's top
    with pytest.raises(FileNotFoundError):   # `away` names a dir the root does not have
        _unpack(str(root), "away", _tar([("dropped", "file", b"x")]))
    assert not (outside / "dropped").exists()


def test_a_member_climbing_out_is_refused(tmp_path):
    with pytest.raises(ValueError):
        _unpack(str(tmp_path), "", _tar([("../escape", "file", b"x")]))
    assert not (tmp_path.parent / "escape").exists()


def test_pack_then_unpack_keeps_bytes_modes_links(tmp_path):
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    (source / "d" / "f").write_bytes(b"\x00\xff")
    os.chmod(source / "d" / "f", 0o751)
    os.link(source / "d" / "f", source / "d" / "hard")
    (source / "d" / "l").symlink_to("/etc/passwd")
    buffer = io.BytesIO()
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    with tarfile.open(fileobj=buffer, mode="w|") as tar:
        inroot.Packer(tar).add(fd, "d", "renamed")
    os.close(fd)
    dest = tmp_path / "dest"
    dest.mkdir()
    _unpack(str(dest), "", buffer.getvalue())
    copied = dest / "renamed"
    assert (copied / "f").read_bytes() == b"\x00\xff"
    assert stat.S_IMODE(os.stat(copied / "f").st_mode) == 0o751
    assert os.stat(copied / "hard").st_ino == os.stat(copied / "f").st_ino
    assert os.readlink(copied / "l") == "/etc/passwd"


def test_a_dir_over_a_file_needs_overwrite_and_a_refusal_writes_nothing(tmp_path):
    (tmp_path / "x").write_text("file")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with tarfile.open(fileobj=io.BytesIO(_tar([("first", "file", b"1"), ("x", "dir", None)]))) as tar:
            with pytest.raises(inroot.Conflicting):
                inroot.Unpacker(fd, "").check_all(tar)
    finally:
        os.close(fd)
    assert not (tmp_path / "first").exists()
    with pytest.raises(inroot.Conflicting):
        _unpack(str(tmp_path), "", _tar([("x", "dir", None)]))
    _unpack(str(tmp_path), "", _tar([("x", "dir", None)]), overwrite=True)
    assert (tmp_path / "x").is_dir()


def test_lookup_of_a_missing_path_raises_file_not_found(tmp_path):
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as missing:
            inroot.lookup(fd, "/no/such")
        assert inroot.is_missing(missing.value)
    finally:
        os.close(fd)


@pytest.mark.skipif(not ROOT, reason="whiteouts are character devices: mknod needs root")
def test_diff_and_layer_of_an_upper_dir(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "group").write_text("g")
    (lower / "old").mkdir()
    (lower / "old" / "gone").write_text("g")
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc" / "group", stat.S_IFCHR, os.makedev(0, 0))
    (upper / "etc" / "new").write_text("n")
    (upper / "old").mkdir()
    os.setxattr(upper / "old", "trusted.overlay.opaque", b"y")
    (upper / "proc").mkdir()   # a mount point the runtime made
    changes = tree_changes(str(upper), [str(lower)], skip=frozenset({"/proc"}))
    assert changes == Changes(changed=["/etc"], added=["/etc/new", "/old"], deleted=["/etc/group"])
    buffer = io.BytesIO()
    write_layer(str(upper), buffer, skip=frozenset({"/proc"}))
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        names = tar.getnames()
    assert names == ["etc", "etc/.wh.group", "etc/new", "old", "old/.wh..wh..opq", "proc"]
    (upper / "etc" / "hosts").write_text("")   # bound over by the runtime: not the user's
    buffer = io.BytesIO()
    write_layer(str(upper), buffer, skip=frozenset({"/etc/hosts"}))
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        assert "etc/hosts" not in tar.getnames()


def _setid_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("tool")
        info.mode, info.size = 0o6755, 2
        tar.addfile(info, io.BytesIO(b"#!"))
    return buffer.getvalue()


def test_a_set_id_file_keeps_its_bits_in_a_container_and_loses_them_on_the_host(tmp_path):
    # Into a container the bits stay (the user's own file); out to the host a
    # container's file must not arrive as a set-id program.
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    _unpack(str(tmp_path / "in"), "", _setid_tar())
    _unpack(str(tmp_path / "out"), "", _setid_tar(), setid=False)
    assert stat.S_IMODE(os.stat(tmp_path / "in" / "tool").st_mode) == 0o6755
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "tool").st_mode) == 0o755


StatVfs = namedtuple("StatVfs", "f_bsize f_frsize f_blocks f_bfree f_bavail f_files f_ffree")


def _open_under(path: str) -> list[str]:
    """This process's open files under `path` (an unlinked spool shows as `path/#N (deleted)`)."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return [t for t in targets if t.startswith(path + "/")]


def test_cp_from_stdin_stops_before_the_disk_fills_and_leaves_no_spool(tmp_path, monkeypatch):
    """A stream from stdin has no size known ahead: its spool under ROOT/tmp
    stops, as DiskFull, once more would leave less than the margin free."""
    tmp = str(tmp_path / "tmp")
    engine = SimpleNamespace(layout=SimpleNamespace(tmp=tmp),
                             containers=SimpleNamespace(get=lambda name: SimpleNamespace(id="c" * 64, name=name)))
    # a 64 MiB filesystem with 5 MiB free: its margin is 3.2 MiB, so 1.8 MiB may be spooled
    monkeypatch.setattr(os, "statvfs", lambda path: StatVfs(4096, 4096, 16384, 1280, 1280, 1000, 500))
    stdin = io.BytesIO(b"\0" * (64 << 20))
    with pytest.raises(DiskFull) as stopped:
        ContainerFiles(engine).copy("-", "web:/tmp", stdin=stdin)
    assert stopped.value.message == ("cannot copy stdin into container web: stopped after 1.0 MiB, as more would "
                                     f"leave less than 3.2 MiB free under {tmp}")
    assert stdin.tell() == 2 * inroot.CHUNK   # it stopped reading too
    assert os.listdir(tmp) == [] and _open_under(tmp) == []
