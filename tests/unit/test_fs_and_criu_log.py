from __future__ import annotations

import os
import stat

import pytest

from ferry.checkpoint import criu
from ferry.util.fs import atomic_write


def test_atomic_write_mode_and_content(tmp_path):
    path = tmp_path / "archive.json"
    atomic_write(str(path), "hello", mode=0o600)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["archive.json"]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "state"
    atomic_write(str(path), b"old")
    with pytest.raises(TypeError):
        atomic_write(str(path), 12345)  # not bytes: fails mid-write
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state"]


def test_quote_log_keeps_the_explaining_lines(tmp_path):
    log = tmp_path / "dump.log"
    log.write_text("(00.01) Info: all fine\n"
                   "(00.02) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: x\n"
                   "(00.03) Error (criu/sk-inet.c:20): inet: In-flight connection (l) for 10\n"
                   "(00.04) Error (criu/cr-dump.c:1975): Dumping FAILED.\n")
    assert criu.quote_log(str(log)) == "inet: In-flight connection (l) for 10 | Dumping FAILED."
    assert criu.quote_log(str(tmp_path / "absent.log")) == ""


def test_ensure_pipe_max_size_only_raises(tmp_path):
    knob = tmp_path / "pipe-max-size"
    knob.write_text("1048576\n")
    criu.ensure_pipe_max_size(wanted=4 << 20, path=str(knob))
    assert knob.read_text() == str(4 << 20)
    criu.ensure_pipe_max_size(wanted=1 << 20, path=str(knob))
    assert knob.read_text() == str(4 << 20)


@pytest.mark.parametrize("need, available, mounts", [
    (None, 8 << 30, False),              # the size is unknown: disk
    (1 << 30, 8 << 30, True),
    (6 << 30, 8 << 30, True),            # 6 + 1.5 + 0.5 GiB fits in 8
    (7 << 30, 8 << 30, False),           # and 7 does not: no room left beside it
])
def test_tmpfs_only_when_the_images_fit_in_memory_with_room_to_spare(monkeypatch, tmp_path, need, available, mounts):
    from ferry.util import fs, proc
    calls = []
    monkeypatch.setattr(fs, "memory_available", lambda: available)
    monkeypatch.setattr(proc, "_execute", lambda argv, **_: calls.append(list(argv)) or proc.Result(tuple(argv), 0, "", ""))
    assert fs.tmpfs_if_it_fits(str(tmp_path), need) is mounts
    if mounts:
        assert calls == [["mount", "--make-private", "-t", "tmpfs", "-o",
                          f"mode=0700,size={available},huge=always", "ferry-scratch", str(tmp_path)]]
    else:
        assert calls == []


def test_tmpfs_without_huge_pages_when_the_kernel_refuses_them(monkeypatch, tmp_path):
    from ferry.util import fs, proc
    calls = []

    def mount(argv, **_):
        assert argv[:4] == ["mount", "--make-private", "-t", "tmpfs"]
        calls.append(argv[5])
        return proc.Result(tuple(argv), 32 if "huge" in argv[5] else 0, "", "bad option")
    monkeypatch.setattr(fs, "memory_available", lambda: 8 << 30)
    monkeypatch.setattr(proc, "_execute", mount)
    assert fs.tmpfs_if_it_fits(str(tmp_path), 1 << 30)
    assert calls == [f"mode=0700,size={8 << 30},huge=always", f"mode=0700,size={8 << 30}"]


def test_memory_available_reads_meminfo():
    from ferry.util.fs import memory_available
    assert memory_available() > 0


MOUNTINFO = r"""27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
45 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
50 27 0:40 / /srv/a/b rw,relatime - tmpfs x rw
51 27 0:41 / /srv/a/bc rw,relatime - tmpfs x rw
52 50 0:42 / /srv/a/b/deep\040dir rw,relatime shared:7 master:3 - overlay overlay rw,lowerdir=/l,upperdir=/u\054v,workdir=/w
53 50 0:43 / /srv/a/b/back\134slash rw - tmpfs x rw
"""


def test_mountinfo_decodes_escapes_and_optional_fields(tmp_path):
    from ferry.util.fs import mountinfo
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    mounts = {m.id: m for m in mountinfo(str(info))}
    assert mounts[52].point == "/srv/a/b/deep dir"
    assert (mounts[52].parent, mounts[52].fstype) == (50, "overlay")
    assert "upperdir=/u,v" in mounts[52].options
    assert mounts[53].point == "/srv/a/b/back\\slash"
    assert mounts[45].fstype == "ext4"


def test_mounts_under_matches_whole_components_deepest_first(tmp_path):
    from ferry.util.fs import mounts_under
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    under = mounts_under("/srv/a/b", str(info))
    assert set(under) == {"/srv/a/b", "/srv/a/b/deep dir", "/srv/a/b/back\\slash"}  # not /srv/a/bc
    assert under[-1] == "/srv/a/b"
    assert mounts_under("/srv/a/b/", str(info)) == under
    assert "/srv/a/bc" in mounts_under("/srv/a", str(info))


def test_a_symlink_is_no_tree_of_mounts(tmp_path):
    """A symlink where a tree should be leads out of it: nothing below its
    target is listed, unmounted or deleted."""
    from ferry.util.fs import mounts_under, remove_tree, unmount_under
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("x")
    link = tmp_path / "tree"
    link.symlink_to(target)
    assert mounts_under(str(link), "/proc/self/mountinfo") == []
    assert "/proc" in mounts_under("/proc")
    proc_link = tmp_path / "proc-link"
    proc_link.symlink_to("/proc")
    assert mounts_under(str(proc_link)) == []
    unmount_under(str(proc_link))  # nothing to do, and no permission asked
    remove_tree(str(link))
    assert not link.exists() and (target / "keep").read_text() == "x"


def test_unmounting_everything_is_refused():
    from ferry.util.fs import unmount_under
    with pytest.raises(ValueError):
        unmount_under("/")
