"""ArchiveWriter.follow: files that another process is still writing go into
the archive as they grow, and the archive reads back exactly like one written
from complete files."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time

import pytest
import zstandard

from ferry.checkpoint import archive_write
from ferry.checkpoint.archive import read_archive, read_manifest
from ferry.checkpoint.archive_write import ArchiveWriter
from tests.unit.test_archive import CONTAINER, HOST, SUFFIX, _pages, _tar_bytes

FOLLOW_MIN = 64 << 10


@pytest.fixture(autouse=True)
def small_follow_threshold(monkeypatch):
    monkeypatch.setattr(archive_write, "FOLLOW_MIN", FOLLOW_MIN)


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


def _follow_and_commit(tmp_path, compression: str, files: dict[str, bytes], *, after=None, **writer_args):
    images = tmp_path / "ctr" / "checkpoint"
    images.mkdir(parents=True)
    path = str(tmp_path / f"out.{SUFFIX[compression]}")
    writer = ArchiveWriter(path, container=CONTAINER, compression=compression, host=HOST, **writer_args)
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
    files = {"pages-1.img": _pages(300_000, 1), "core-1.img": os.urandom(3000),
             "pages-2.img": _pages(200_001, 2), "pages-3.img": _pages(8192, 3)}
    result, names = _follow_and_commit(tmp_path, compression, files)
    # pages-3 stays below FOLLOW_MIN, so it waits for the final frame.
    assert result.streamed == len(files["pages-1.img"]) + len(files["pages-2.img"])
    assert os.listdir(tmp_path) == ["ctr", "out." + SUFFIX[compression]] or \
        sorted(os.listdir(tmp_path)) == sorted(["ctr", "out." + SUFFIX[compression]])

    manifest = read_manifest(result.path)
    assert [m.name for m in manifest.members][:2] == ["checkpoint/pages-1.img", "checkpoint/pages-2.img"]
    assert sorted(m.name for m in manifest.members) == sorted(names)
    dest = tmp_path / "dest"
    read_archive(result.path, str(dest))
    for name, data in files.items():
        assert (dest / "checkpoint" / name).read_bytes() == data
    # Any tar reader takes the followed members' headers.
    with tarfile.open(fileobj=io.BytesIO(_tar_bytes(result.path))) as tar:
        assert tar.getmember("checkpoint/pages-2.img").size == len(files["pages-2.img"])


def test_a_file_changed_after_it_was_closed_is_archived_from_the_file(tmp_path):
    files = {"pages-1.img": _pages(200_000, 4)}
    replacement = _pages(250_000, 5)

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


def test_a_manifest_larger_than_its_room_moves_the_body(tmp_path):
    files = {"pages-1.img": _pages(200_000, 6), **{f"core-{i}.img": os.urandom(100) for i in range(40)}}
    result, names = _follow_and_commit(tmp_path, "zstd", files, manifest_room=512)
    assert result.streamed == len(files["pages-1.img"])
    dest = tmp_path / "dest"
    read_archive(result.path, str(dest))
    for name, data in files.items():
        assert (dest / "checkpoint" / name).read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["ctr", "dest", "out.tar.zst"]


def test_a_failed_dump_leaves_no_archive(tmp_path):
    images = tmp_path / "checkpoint"
    images.mkdir()
    path = tmp_path / "out.tar.zst"
    with ArchiveWriter(str(path), container=CONTAINER, compression="zstd", host=HOST) as writer:
        writer.follow(str(images), "checkpoint", _select)
        (images / "pages-1.img").write_bytes(_pages(FOLLOW_MIN * 2, 7))
        time.sleep(0.1)   # let the follower start on it
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]


def test_gzip_does_not_follow(tmp_path):
    files = {"pages-1.img": _pages(200_000, 8)}
    result, _ = _follow_and_commit(tmp_path, "gzip", files)
    assert result.streamed == 0
    dest = tmp_path / "dest"
    read_archive(result.path, str(dest))
    assert (dest / "checkpoint" / "pages-1.img").read_bytes() == files["pages-1.img"]


# ---- frames: many small ones read back in order, hostile ones refused ---------

def test_many_frames_decompress_in_parallel_and_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(archive_write, "FRAME_BYTES", 64 << 10)
    files = {"pages-1.img": _pages(2_000_000, 9), "core-1.img": os.urandom(700)}
    result, _ = _follow_and_commit(tmp_path, "zstd", files)
    assert result.streamed == len(files["pages-1.img"])
    dest = tmp_path / "dest"
    read_archive(result.path, str(dest))
    assert (dest / "checkpoint" / "pages-1.img").read_bytes() == files["pages-1.img"]


@pytest.mark.parametrize("frame", [
    zstandard.ZstdCompressor(write_checksum=False, write_content_size=False).compress(b"x" * 300),
    zstandard.ZstdCompressor(write_checksum=True).compress(b"y" * 70_000),
    zstandard.ZstdCompressor().compress(b"z" * 300),        # a 2-byte content size (value - 256)
    archive_write._raw_zstd_frame(b""),
    archive_write._raw_zstd_frame(bytes(300_000)),
    b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"skip!",
    b"\x5f\x2a\x4d\x18" + bytes(4),
])
def test_the_frame_walker_finds_every_frame_end(frame):
    from ferry.checkpoint.archive import _ZstdFrameWalker
    stream = frame + frame
    for step in (1, 7, len(stream)):
        walker, ends, fed = _ZstdFrameWalker(), [], 0
        for start in range(0, len(stream), step):
            ends += [fed + end.offset for end in walker.feed(stream[start:start + step])]
            fed += len(stream[start:start + step])
        walker.finish()
        assert ends == [len(frame), 2 * len(frame)]


def test_a_frame_larger_than_the_limit_is_refused(tmp_path, monkeypatch):
    from ferry.checkpoint import archive
    from ferry.util.errors import BadArchive
    monkeypatch.setattr(archive, "MAX_FRAME_CONTENT", 100_000)
    monkeypatch.setattr(archive_write, "FRAME_BYTES", 1 << 20)
    files = {"pages-1.img": _pages(FOLLOW_MIN * 2, 10)}
    result, _ = _follow_and_commit(tmp_path, "zstd", files)
    with pytest.raises(BadArchive, match="zstd frame of more than"):
        read_archive(result.path, str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()


def test_an_archive_of_complete_files_compresses_its_manifest_too(tmp_path):
    """Small containers' archives are mostly manifest: it must not go in raw."""
    from ferry.checkpoint.archive_write import write_archive
    root = tmp_path / "ctr"
    (root / "checkpoint").mkdir(parents=True)
    names = []
    for i in range(40):
        (root / "checkpoint" / f"core-{i}.img").write_bytes(b"core " * 20)
        names.append(f"checkpoint/core-{i}.img")
    result = write_archive(str(tmp_path / "out.tar.zst"), str(root), names, container=CONTAINER,
                           compression="zstd", host=HOST)
    manifest = read_manifest(result.path)
    assert len(manifest.to_json().encode()) > result.size
    read_archive(result.path, str(tmp_path / "dest"))
    assert (tmp_path / "dest" / "checkpoint" / "core-39.img").read_bytes() == b"core " * 20
