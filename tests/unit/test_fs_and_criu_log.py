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
        assert calls == [["mount", "-t", "tmpfs", "-o", f"mode=0700,size={available},huge=always", "ferry-scratch",
                          str(tmp_path)]]
    else:
        assert calls == []


def test_tmpfs_without_huge_pages_when_the_kernel_refuses_them(monkeypatch, tmp_path):
    from ferry.util import fs, proc
    calls = []

    def mount(argv, **_):
        calls.append(argv[4])
        return proc.Result(tuple(argv), 32 if "huge" in argv[4] else 0, "", "bad option")
    monkeypatch.setattr(fs, "memory_available", lambda: 8 << 30)
    monkeypatch.setattr(proc, "_execute", mount)
    assert fs.tmpfs_if_it_fits(str(tmp_path), 1 << 30)
    assert calls == [f"mode=0700,size={8 << 30},huge=always", f"mode=0700,size={8 << 30}"]


def test_memory_available_reads_meminfo():
    from ferry.util.fs import memory_available
    assert memory_available() > 0
