"""`ferry checkpoint inspect`'s decoding of CRIU images (issue 17), on image
sets built with pycriu from dicts (test_imagecheck's): the process tree with
command lines read from the dumped pages, memory per process, open files,
sockets with their 4-tuples and states, mounts, file locks; and hostile
images, which give BadArchive and nothing else."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from ferry.checkpoint.imagecheck import MAX_BYTES, PE_PRESENT
from ferry.util.errors import BadArchive

pytest.importorskip("pycriu", reason="pycriu is installed by 'make setup'")
from ferry.checkpoint.inspect import MAX_ARGS, MAX_FILE_LOCKS, describe  # noqa: E402
from tests.unit.test_imagecheck import PAGE, Dump, corrupted, inet, run_of  # noqa: E402

ARGV = b"redis-server\0*:6379\0"
ARGS_AT = 0x5e0010          # in pid 1's second run, which starts one page into pages-1.img


def _address(text: str) -> int:
    return struct.unpack("<I", socket.inet_aton(text))[0]


@pytest.fixture
def dump():
    dump = Dump()
    mm = dump.entry("mm-1.img")
    mm.update(mm_arg_start=ARGS_AT, mm_arg_end=ARGS_AT + len(ARGV), mm_env_start=ARGS_AT + len(ARGV),
              mm_env_end=ARGS_AT + len(ARGV) + 8)
    pages = bytearray(dump.raw["pages-1.img"])
    offset = PAGE + (ARGS_AT - 0x5e0000)
    pages[offset:offset + len(ARGV) + 8] = ARGV + b"HOME=/\0\0"
    dump.raw["pages-1.img"] = bytes(pages)
    established = inet(16)
    established["isk"].update(state=1, src_port=6379, dst_port=40000, src_addr=[_address("10.90.0.5")],
                              dst_addr=[_address("10.90.0.1")])
    dump.images["files.img"]["entries"].append(established)
    dump.images["fdinfo-2.img"]["entries"].append(dict(id=16, flags=0, type="INETSK", fd=7))
    dump.images["filelocks.img"] = {"magic": "FILE_LOCKS", "entries": [
        lock(flag=2, type=1, pid=1, fd=3),                      # flock(LOCK_EX)
        lock(flag=1, type=0, pid=7, fd=4, start=100, len=50)]}  # fcntl F_RDLCK on bytes 100-149
    return dump


def lock(**fields) -> dict:
    return dict(dict(flag=2, type=1, pid=1, fd=3, start=0, len=0), **fields)


def test_the_tree_with_command_lines_memory_files_and_sockets(dump, tmp_path):
    found = describe(dump.write(tmp_path / "images"), env=True)
    first, second = found["processes"]
    assert (first["pid"], first["ppid"], first["comm"], first["cmdline"]) == (1, 0, "init", ["redis-server", "*:6379"])
    assert first["environment"] == ["HOME=/"]
    assert (second["pid"], second["ppid"], second["threads"], second["comm"]) == (7, 1, 2, "worker")
    assert second["cmdline"] == []     # its arguments lie in no dumped run: nothing is made up
    assert (first["memory_pages"], second["memory_pages"]) == (9, 4) and found["memory_pages"] == 13
    assert [f["fd"] for f in first["files"]] == [6, 7]
    assert first["files"][0]["description"] == "tcp 0.0.0.0:80 -> 0.0.0.0:0 LISTEN"
    listening, connected = found["sockets"]
    assert (listening["state"], listening["source"]) == ("LISTEN", "0.0.0.0:80")
    assert (connected["state"], connected["source"], connected["destination"]) == \
        ("ESTABLISHED", "10.90.0.5:6379", "10.90.0.1:40000")
    assert {m["mountpoint"] for m in found["mounts"]} >= {"/", "/proc", "/dev"}
    assert "environment" not in describe(str(tmp_path / "images"))["processes"][0]


def test_arguments_are_read_only_within_the_dump_and_bounded(dump, tmp_path):
    mm = dump.entry("mm-1.img")
    mm.update(mm_arg_start=0x5e0000, mm_arg_end=0x5e0000 + (64 << 20))   # claims 64 MiB of arguments
    dump.images["pagemap-1.img"]["entries"][2] = run_of(0x5e0000, 64, PE_PRESENT)
    dump.raw["pages-1.img"] = b"a" * (68 * PAGE)
    found = describe(dump.write(tmp_path / "images"))
    assert sum(len(a) for a in found["processes"][0]["cmdline"]) <= MAX_ARGS


def test_file_locks_are_listed_with_kind_type_owner_and_range(dump, tmp_path):
    found = describe(dump.write(tmp_path / "images"))
    assert found["file_locks"] == [
        {"kind": "flock", "type": "write", "pid": 1, "fd": 3, "start": 0, "len": 0},
        {"kind": "posix", "type": "read", "pid": 7, "fd": 4, "start": 100, "len": 50}]
    os.unlink(tmp_path / "images" / "filelocks.img")     # a dump without --file-locks, or without locks
    assert describe(str(tmp_path / "images"))["file_locks"] == []


def test_forged_file_locks_show_their_numbers_and_are_capped(dump, tmp_path):
    dump.images["filelocks.img"]["entries"] = [
        lock(flag=8, type=1 | 4),                                     # a breaking lease: CRIU's LEASE_BREAKING bit
        lock(flag=0xffffffff, type=0xffffffff, pid=-5, fd=-1, start=-(1 << 63), len=(1 << 63) - 1),
    ] + [lock(fd=n) for n in range(MAX_FILE_LOCKS)]
    locks = describe(dump.write(tmp_path / "images"))["file_locks"]
    assert len(locks) == MAX_FILE_LOCKS
    assert (locks[0]["kind"], locks[0]["type"]) == ("lease", "5")
    assert locks[1] == {"kind": "4294967295", "type": "4294967295", "pid": -5, "fd": -1,
                        "start": -(1 << 63), "len": (1 << 63) - 1}


def test_the_tree_shows_one_line_per_lock_or_none():
    from ferry.cli.checkpoints import _tree
    found = {"container": {"name": "kv"}, "archive": "kv.tar", "engine": "ferry", "memory": {"pages": 0, "bytes": 0},
             "rootfs_diff": 0, "volumes": {}, "tcp_established": False,
             "file_locks": [{"kind": "flock", "type": "write", "pid": 1, "fd": 3, "start": 0, "len": 0},
                            {"kind": "posix", "type": "read", "pid": 7, "fd": 4, "start": 100, "len": 50},
                            {"kind": "ofd", "type": "write", "pid": 7, "fd": 5, "start": 8, "len": 0}]}
    text = "\n".join(_tree(found))
    assert "File locks\n" in text
    assert "[flock write] pid 1, fd 3\n" in text
    assert "[posix read] pid 7, fd 4, from byte 100, 50 bytes\n" in text
    assert "[ofd write] pid 7, fd 5, from byte 8 to the end" in text
    assert "File locks: none" in "\n".join(_tree(dict(found, file_locks=[])))


@pytest.mark.parametrize("damage", ["no pstree", "truncated pstree", "symlinked pages", "huge files.img",
                                    "truncated filelocks.img", "huge filelocks.img", "filelocks.img of another kind"])
def test_damaged_images_are_refused_in_one_line(dump, tmp_path, damage):
    directory = dump.write(tmp_path / "images")
    if damage == "no pstree":
        os.unlink(os.path.join(directory, "pstree.img"))
    elif damage == "truncated pstree":
        with open(os.path.join(directory, "pstree.img"), "r+b") as f:
            f.truncate(10)
    elif damage == "symlinked pages":
        os.unlink(os.path.join(directory, "pages-1.img"))
        os.symlink("/etc/passwd", os.path.join(directory, "pages-1.img"))
    elif damage == "huge files.img":
        with open(os.path.join(directory, "files.img"), "ab") as f:
            f.truncate(65 << 20)
    elif damage == "truncated filelocks.img":
        with open(os.path.join(directory, "filelocks.img"), "r+b") as f:
            f.truncate(os.fstat(f.fileno()).st_size - 3)
    elif damage == "huge filelocks.img":
        with open(os.path.join(directory, "filelocks.img"), "ab") as f:
            f.truncate(MAX_BYTES["FILE_LOCKS"] + 1)
    else:
        with open(os.path.join(directory, "mm-1.img"), "rb") as source, \
                open(os.path.join(directory, "filelocks.img"), "wb") as f:
            f.write(source.read())
    with pytest.raises(BadArchive) as refused:
        describe(directory)
    assert "\n" not in refused.value.message
    assert ("filelocks.img" in refused.value.message) == ("filelocks" in damage)


def test_corrupted_images_only_ever_raise_bad_archive(dump, tmp_path):
    """The fuzz target of the safety issue, for inspect: byte flips,
    truncations and splices of every image; BadArchive or a result."""
    for directory in corrupted(dump.write(tmp_path / "clean"), seed=17, rounds=600):
        try:
            found = describe(directory, env=True)
            assert isinstance(found["processes"], list)
        except BadArchive as refusal:
            assert "\n" not in refusal.message
