"""ArchiveWriter.follow: files that another process is still writing go into
the archive as they grow, into a file or onto a pipe (never sought), and the
archive reads back exactly like one written from complete files."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time

import pytest
import zstandard

from ferry.checkpoint.archive import codecs, follow
from ferry.checkpoint.archive import CHECKSUMS_NAME, MANIFEST_NAME, ArchiveWriter, read_archive, read_manifest
from ferry.util.errors import BadArchive, FerryError
from tests.unit.test_archive import CONTAINER, HOST, SUFFIX, memory_pages, tar_bytes_of

FOLLOW_MIN = 64 << 10


@pytest.fixture(autouse=True)
def small_follow_threshold(monkeypatch):
    monkeypatch.setattr(follow, "FOLLOW_MIN", FOLLOW_MIN)


def _select(name: str) -> bool:
    return name.startswith("pages-")


class SlowWriter(threading.Thread):
    """Writes files in small pieces with pauses, one after another, as CRIU
    writes its page images."""

    def __init__(self, directory: str, files: dict[str, bytes], piece: int = 16 << 10):
        super().__init__(daemon=True)
        self.directory, self.files, self.piece = directory, files, piece

    def run(self) -> None:
        for name, data in self.files.items():
            with open(os.path.join(self.directory, name), "wb") as f:
                for start in range(0, len(data), self.piece):
                    f.write(data[start:start + self.piece])
                    f.flush()
                    time.sleep(0.002)


class Drain(threading.Thread):
    """Reads a pipe to its end into a file, as the far end of a socket would."""

    def __init__(self, read_fd: int, path: str):
        super().__init__(daemon=True)
        self.read_fd, self.path = read_fd, path

    def run(self) -> None:
        with open(self.path, "wb") as out:
            while data := os.read(self.read_fd, 1 << 20):
                out.write(data)
        os.close(self.read_fd)


def _follow_and_commit(tmp_path, compression: str, files: dict[str, bytes], *, after=None, target=None,
                       **writer_args):
    images = tmp_path / "ctr" / "checkpoint"
    images.mkdir(parents=True)
    path = str(tmp_path / f"out.{SUFFIX[compression]}")
    writer = ArchiveWriter(path if target is None else target, container=CONTAINER, compression=compression,
                           host=HOST, **writer_args)
    with writer:
        writer.follow(str(images), "checkpoint", _select)
        dumper = SlowWriter(str(images), files)
        dumper.start()
        dumper.join()
        if after:
            after(images, writer)
        writer.stop_following(complete=True)
        (tmp_path / "ctr" / "config.dump").write_bytes(b"{}")
        names = ["config.dump"] + [f"checkpoint/{n}" for n in sorted(os.listdir(images))]
        result = writer.commit(str(tmp_path / "ctr"), names)
    return result, names


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_followed_files_stream_and_read_back(tmp_path, compression):
    files = {"pages-1.img": memory_pages(300_000, 1), "core-1.img": os.urandom(3000),
             "pages-2.img": memory_pages(200_001, 2), "pages-3.img": memory_pages(8192, 3)}
    result, names = _follow_and_commit(tmp_path, compression, files)
    # pages-3 stays below FOLLOW_MIN, so it waits for the final frame.
    assert result.streamed == len(files["pages-1.img"]) + len(files["pages-2.img"])
    assert sorted(os.listdir(tmp_path)) == sorted(["ctr", "out." + SUFFIX[compression]])

    total = sum(map(len, files.values())) + 2   # and config.dump
    assert read_manifest(result.path).max_size == total   # the room took the exact total
    dest = tmp_path / "dest"
    contents = read_archive(result.path, str(dest))
    assert [m.name for m in contents.members][:2] == ["checkpoint/pages-1.img", "checkpoint/pages-2.img"]
    assert sorted(m.name for m in contents.members) == sorted(names)
    for name, data in files.items():
        assert (dest / "checkpoint" / name).read_bytes() == data
    # Any tar reader takes the followed members' headers.
    with tarfile.open(fileobj=io.BytesIO(tar_bytes_of(result.path))) as tar:
        assert tar.getnames()[0] == MANIFEST_NAME and tar.getnames()[-1] == CHECKSUMS_NAME
        assert tar.getmember("checkpoint/pages-2.img").size == len(files["pages-2.img"])
        assert json.load(tar.extractfile(MANIFEST_NAME))["max_size"] == total


def test_a_files_followed_members_are_one_entry_each(tmp_path, monkeypatch):
    """A file fills its header rooms in place rather than writing parts, as a
    stream does: podman's restore --import extracts each entry over the last."""
    monkeypatch.setattr(codecs, "FRAME_BYTES", 64 << 10)   # a stream would take pages-1.img in parts
    files = {"pages-1.img": memory_pages(700_000, 19), "core-1.img": os.urandom(3000)}
    result, names = _follow_and_commit(tmp_path, "zstd", files)
    assert result.streamed == len(files["pages-1.img"])
    with tarfile.open(fileobj=io.BytesIO(tar_bytes_of(result.path))) as tar:
        entries = tar.getmembers()
    assert sorted(e.name for e in entries) == sorted([MANIFEST_NAME, *names, CHECKSUMS_NAME])   # each once
    assert not any("FERRY.continue" in e.pax_headers for e in entries)
    pages = next(e for e in entries if e.name == "checkpoint/pages-1.img")
    assert pages.size == len(files["pages-1.img"])


def test_a_file_changed_after_it_was_closed_is_archived_from_the_file(tmp_path):
    files = {"pages-1.img": memory_pages(200_000, 4)}
    replacement = memory_pages(250_000, 5)

    def rewrite(images, writer):
        deadline = time.monotonic() + 30
        while not writer._streamed:   # until the follower has closed the member
            assert time.monotonic() < deadline, "the follower never finished pages-1.img"
            time.sleep(0.01)
        (images / "pages-1.img").write_bytes(replacement)

    result, _ = _follow_and_commit(tmp_path, "zstd", files, after=rewrite)
    assert result.streamed == 0
    dest = tmp_path / "dest"
    read_archive(result.path, str(dest))
    assert (dest / "checkpoint" / "pages-1.img").read_bytes() == replacement


def test_many_members_need_no_room_at_the_front(tmp_path):
    """Format 3's head holds no member list: it never outgrows its room."""
    files = {"pages-1.img": memory_pages(200_000, 6), **{f"core-{i}.img": os.urandom(100) for i in range(400)}}
    result, names = _follow_and_commit(tmp_path, "zstd", files)
    assert result.streamed == len(files["pages-1.img"])
    dest = tmp_path / "dest"
    contents = read_archive(result.path, str(dest))
    assert len(contents.members) == len(names) == 402   # and config.dump
    for name, data in files.items():
        assert (dest / "checkpoint" / name).read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["ctr", "dest", "out.tar.zst"]


def test_a_failed_dump_leaves_no_archive(tmp_path):
    images = tmp_path / "checkpoint"
    images.mkdir()
    path = tmp_path / "out.tar.zst"
    with ArchiveWriter(str(path), container=CONTAINER, compression="zstd", host=HOST) as writer:
        writer.follow(str(images), "checkpoint", _select)
        (images / "pages-1.img").write_bytes(memory_pages(FOLLOW_MIN * 2, 7))
        time.sleep(0.1)   # let the follower start on it
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]


def test_gzip_does_not_follow(tmp_path):
    files = {"pages-1.img": memory_pages(200_000, 8)}
    result, _ = _follow_and_commit(tmp_path, "gzip", files)
    assert result.streamed == 0
    dest = tmp_path / "dest"
    read_archive(result.path, str(dest))
    assert (dest / "checkpoint" / "pages-1.img").read_bytes() == files["pages-1.img"]


# ---- onto a pipe: never sought, followed files in consecutive parts ----------

def _follow_onto_pipe(tmp_path, compression, files, **kwargs):
    read_fd, write_fd = os.pipe()
    received = str(tmp_path / f"received.{SUFFIX[compression]}")
    drain = Drain(read_fd, received)
    drain.start()
    try:
        result, names = _follow_and_commit(tmp_path, compression, files, target=write_fd, **kwargs)
    finally:
        os.close(write_fd)
        drain.join()
    return result, names, received


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_a_pipe_gets_followed_files_in_consecutive_parts(tmp_path, monkeypatch, compression):
    monkeypatch.setattr(codecs, "FRAME_BYTES", 64 << 10)
    files = {"pages-1.img": memory_pages(700_000, 11), "core-1.img": os.urandom(3000),
             "pages-2.img": memory_pages(300_001, 12)}
    result, names, received = _follow_onto_pipe(tmp_path, compression, files, max_size=5 << 20)
    assert (result.path, result.size) == (None, None)
    assert result.streamed == len(files["pages-1.img"]) + len(files["pages-2.img"])
    with tarfile.open(fileobj=io.BytesIO(tar_bytes_of(received))) as tar:
        entries = tar.getmembers()
    parts = [e for e in entries if e.name == "checkpoint/pages-1.img"]
    assert len(parts) >= 2, "pages-1.img should have gone out in parts while it grew"
    assert sum(p.size for p in parts) == len(files["pages-1.img"])
    assert "FERRY.continue" not in parts[0].pax_headers
    assert all(p.pax_headers.get("FERRY.continue") == "1" for p in parts[1:])
    assert entries[0].name == MANIFEST_NAME and entries[-1].name == CHECKSUMS_NAME

    head = read_manifest(received)
    assert head.max_size == head.size_bound == 5 << 20   # the caller's estimate: it went out first
    dest = tmp_path / "dest"
    contents = read_archive(received, str(dest))
    assert sorted(m.name for m in contents.members) == sorted(names)
    for name, data in files.items():
        assert (dest / "checkpoint" / name).read_bytes() == data


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_a_pipe_gets_complete_files_with_their_exact_total(tmp_path, compression):
    root = tmp_path / "ctr"
    root.mkdir()
    files = {"config.dump": b"{}", "pages.img": memory_pages(123_457, 13)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    read_fd, write_fd = os.pipe()
    received = str(tmp_path / f"received.{SUFFIX[compression]}")
    drain = Drain(read_fd, received)
    drain.start()
    try:
        with ArchiveWriter(write_fd, container=CONTAINER, compression=compression, host=HOST) as writer:
            writer.commit(str(root), list(files))
    finally:
        os.close(write_fd)
        drain.join()
    assert read_manifest(received).max_size == sum(map(len, files.values()))
    read_archive(received, str(tmp_path / "dest"))
    assert (tmp_path / "dest" / "pages.img").read_bytes() == files["pages.img"]


def test_a_pipe_refuses_to_follow_without_max_size(tmp_path):
    read_fd, write_fd = os.pipe()
    try:
        with ArchiveWriter(write_fd, container=CONTAINER, compression="zstd", host=HOST) as writer:
            with pytest.raises(ValueError, match="max_size"):
                writer.follow(str(tmp_path), "checkpoint", _select)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_stream_fails_in_one_line_rather_than_exceed_its_max_size(tmp_path, monkeypatch):
    monkeypatch.setattr(codecs, "FRAME_BYTES", 64 << 10)
    files = {"pages-1.img": memory_pages(400_000, 14)}
    with pytest.raises(FerryError, match="exceed the max_size of 200000 bytes") as caught:
        _follow_onto_pipe(tmp_path, "zstd", files, max_size=200_000)
    assert "\n" not in caught.value.message and caught.value.hint
    # What went out is not an archive a reader takes.
    with pytest.raises(BadArchive):
        read_archive(str(tmp_path / "received.tar.zst"), str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()


def test_a_stream_fails_when_its_complete_files_exceed_max_size(tmp_path):
    files = {"pages-1.img": memory_pages(200_000, 15)}   # followed, within the bound
    with pytest.raises(FerryError, match="exceed the max_size"):
        # config.dump (2 bytes) at commit is one byte too many
        _follow_onto_pipe(tmp_path, "zstd", files, max_size=len(files["pages-1.img"]) + 1)


def test_a_stream_cannot_start_over_when_a_followed_file_changes(tmp_path):
    files = {"pages-1.img": memory_pages(200_000, 16)}

    def rewrite(images, writer):
        deadline = time.monotonic() + 30
        while not writer._streamed:
            assert time.monotonic() < deadline, "the follower never finished pages-1.img"
            time.sleep(0.01)
        (images / "pages-1.img").write_bytes(memory_pages(250_000, 17))

    with pytest.raises(FerryError, match="changed after it was closed"):
        _follow_onto_pipe(tmp_path, "zstd", files, after=rewrite, max_size=1 << 20)


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_a_reader_that_went_away_is_one_line(tmp_path, compression):
    root = tmp_path / "ctr"
    root.mkdir()
    (root / "pages.img").write_bytes(memory_pages(2 << 20, 18))   # more than a pipe holds
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        with ArchiveWriter(write_fd, container=CONTAINER, compression=compression, host=HOST) as writer:
            with pytest.raises(FerryError, match=rf"^cannot write the archive stream \(fd {write_fd}\): ") as caught:
                writer.commit(str(root), ["pages.img"])
    finally:
        os.close(write_fd)
    assert "\n" not in caught.value.message


# ---- frames: many small ones read back in order, hostile ones refused ---------

def test_many_frames_decompress_in_parallel_and_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(codecs, "FRAME_BYTES", 64 << 10)
    files = {"pages-1.img": memory_pages(2_000_000, 9), "core-1.img": os.urandom(700)}
    result, _ = _follow_and_commit(tmp_path, "zstd", files)
    assert result.streamed == len(files["pages-1.img"])
    dest = tmp_path / "dest"
    read_archive(result.path, str(dest))
    assert (dest / "checkpoint" / "pages-1.img").read_bytes() == files["pages-1.img"]


@pytest.mark.parametrize("frame", [
    zstandard.ZstdCompressor(write_checksum=False, write_content_size=False).compress(b"x" * 300),
    zstandard.ZstdCompressor(write_checksum=True).compress(b"y" * 70_000),
    zstandard.ZstdCompressor().compress(b"z" * 300),        # a 2-byte content size (value - 256)
    codecs.raw_zstd_frame(b""),
    codecs.raw_zstd_frame(bytes(300_000)),
    b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"skip!",
    b"\x5f\x2a\x4d\x18" + bytes(4),
])
def test_the_frame_walker_finds_every_frame_end(frame):
    stream = frame + frame
    for step in (1, 7, len(stream)):
        walker, ends, fed = codecs.ZstdFrameWalker(), [], 0
        for start in range(0, len(stream), step):
            ends += [fed + end.offset for end in walker.feed(stream[start:start + step])]
            fed += len(stream[start:start + step])
        walker.finish()
        assert ends == [len(frame), 2 * len(frame)]


def test_a_frame_larger_than_the_limit_is_refused(tmp_path, monkeypatch):
    from ferry.util.errors import BadArchive
    monkeypatch.setattr(codecs, "MAX_FRAME_CONTENT", 100_000)
    monkeypatch.setattr(codecs, "FRAME_BYTES", 1 << 20)
    files = {"pages-1.img": memory_pages(FOLLOW_MIN * 2, 10)}
    result, _ = _follow_and_commit(tmp_path, "zstd", files)
    with pytest.raises(BadArchive, match="zstd frame of more than"):
        read_archive(result.path, str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()


def test_an_archive_of_complete_files_compresses_its_records_too(tmp_path):
    """Small containers' archives are mostly head and trailer: they must not go in raw."""
    from ferry.checkpoint.archive import write_archive
    root = tmp_path / "ctr"
    (root / "checkpoint").mkdir(parents=True)
    names = []
    for i in range(40):
        (root / "checkpoint" / f"core-{i}.img").write_bytes(b"core " * 20)
        names.append(f"checkpoint/core-{i}.img")
    result = write_archive(str(tmp_path / "out.tar.zst"), str(root), names, container=CONTAINER,
                           compression="zstd", host=HOST)
    records = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(tar_bytes_of(result.path))).getmembers()}
    assert records[CHECKSUMS_NAME].size > result.size
    read_archive(result.path, str(tmp_path / "dest"))
    assert (tmp_path / "dest" / "checkpoint" / "core-39.img").read_bytes() == b"core " * 20


def test_a_mapped_frame_whose_view_lingers_is_left_to_unmap_itself(tmp_path, monkeypatch):
    """ThreadPoolExecutor's worker drops its work item (and the view of the
    pages it compressed) only after it has set the result: closing the
    mapping in that instant raised BufferError and failed a checkpoint."""
    import hashlib
    pages = tmp_path / "pages-1.img"
    pages.write_bytes(os.urandom(1 << 16) * 4)
    lingering = []
    sink_fd = os.open(tmp_path / "out.zst", os.O_WRONLY | os.O_CREAT, 0o600)
    sink = codecs.ZstdSink(sink_fd, None)
    compress = sink._compress

    def compress_and_keep_the_view(data):
        lingering.append(data)   # as a work item not yet dropped would
        return compress(data)
    monkeypatch.setattr(sink, "_compress", compress_and_keep_the_view)
    with open(pages, "rb") as source:
        sink.write_mapped(source.fileno(), 0, pages.stat().st_size, hashlib.sha256())
        sink.finish()
    os.close(sink_fd)
    assert lingering and zstandard.ZstdDecompressor().decompressobj().decompress(
        (tmp_path / "out.zst").read_bytes()) == pages.read_bytes()
