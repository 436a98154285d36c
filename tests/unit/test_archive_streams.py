"""Archives read from pipes (ArchiveReader on a file descriptor: the head,
then the rest, in one pass) and where an archive's path leads (endpoints)."""

from __future__ import annotations

import os
import pty
import threading

import pytest

from ferry.checkpoint.archive import ArchiveReader, ArchiveWriter, read_archive
from ferry.checkpoint.archive.endpoints import export_endpoint, import_endpoint, is_stdout
from ferry.util.errors import BadArchive, FerryError, NotFound, UsageError
from tests.unit.test_archive import CONTAINER, HOST, SUFFIX, memory_pages

FILES = {"config.dump": b"{}", "checkpoint/pages-1.img": memory_pages(300_001, 5),
         "checkpoint/core-1.img": os.urandom(5000)}


@pytest.fixture
def archive_dir(tmp_path):
    root = tmp_path / "ctr"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _written(tmp_path, archive_dir, compression: str) -> bytes:
    path = tmp_path / f"a.{SUFFIX[compression]}"
    with ArchiveWriter(str(path), container=CONTAINER, compression=compression, host=HOST) as writer:
        writer.commit(str(archive_dir), list(FILES))
    return path.read_bytes()


def _feed(data: bytes, *, pieces: int = 7) -> int:
    """A pipe's read end, written into by a thread in uneven pieces."""
    read_fd, write_fd = os.pipe()

    def write() -> None:
        try:
            step = max(1, len(data) // pieces)
            for start in range(0, len(data), step):
                os.write(write_fd, data[start:start + step])
        except BrokenPipeError:
            pass
        finally:
            os.close(write_fd)
    threading.Thread(target=write, daemon=True).start()
    return read_fd


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_a_pipe_is_read_once_head_first(tmp_path, archive_dir, compression):
    data = _written(tmp_path, archive_dir, compression)
    fd = _feed(data)
    try:
        with ArchiveReader(fd) as reader:
            head = reader.head()
            assert head.max_size == sum(map(len, FILES.values()))
            assert reader.head() is head   # read once
            contents = reader.extract(str(tmp_path / "dest"))
    finally:
        os.close(fd)
    assert contents.head == head
    for name, body in FILES.items():
        assert (tmp_path / "dest" / name).read_bytes() == body


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_a_pipe_cut_short_or_edited_is_refused_and_leaves_nothing(tmp_path, archive_dir, compression):
    data = _written(tmp_path, archive_dir, compression)
    middle = len(data) // 2
    for bad, reason in ((data[:middle], "truncated|corrupt"),
                        (data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:],
                         "checksum mismatch|corrupt")):
        fd = _feed(bad)
        try:
            with pytest.raises(BadArchive, match=reason), ArchiveReader(fd) as reader:
                reader.extract(str(tmp_path / "dest"))
        finally:
            os.close(fd)
        assert not (tmp_path / "dest").exists()


def test_a_file_and_a_pipe_give_the_same_contents(tmp_path, archive_dir):
    data = _written(tmp_path, archive_dir, "zstd")
    from_file = read_archive(str(tmp_path / "a.tar.zst"), str(tmp_path / "f"))
    fd = _feed(data)
    try:
        with ArchiveReader(fd) as reader:
            from_pipe = reader.extract(str(tmp_path / "p"))
    finally:
        os.close(fd)
    assert from_pipe == from_file


def test_a_fifo_path_is_read_as_a_stream(tmp_path, archive_dir):
    data = _written(tmp_path, archive_dir, "gzip")
    fifo = str(tmp_path / "in.fifo")
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as f:
            f.write(data)
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    with ArchiveReader(fifo) as reader:
        reader.extract(str(tmp_path / "dest"))
    writer.join()
    assert (tmp_path / "dest" / "checkpoint/core-1.img").read_bytes() == FILES["checkpoint/core-1.img"]


def test_an_empty_pipe_is_not_an_archive(tmp_path):
    fd = _feed(b"")
    try:
        with pytest.raises(BadArchive), ArchiveReader(fd) as reader:
            reader.head()
    finally:
        os.close(fd)


# ---- endpoints -------------------------------------------------------------

def test_where_a_checkpoint_goes(tmp_path):
    assert export_endpoint(str(tmp_path / "new.tar.zst")).target == str(tmp_path / "new.tar.zst")
    (tmp_path / "old.tar").write_bytes(b"x")
    assert export_endpoint(str(tmp_path / "old.tar")).target == str(tmp_path / "old.tar")   # replaced whole
    with pytest.raises(UsageError, match="is a directory"):
        export_endpoint(str(tmp_path))
    fifo = str(tmp_path / "out.fifo")
    os.mkfifo(fifo)
    read_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # a reader, so the open does not wait
    try:
        with export_endpoint(fifo) as endpoint:
            assert endpoint.stream and endpoint.name == fifo and endpoint.owned_fd == endpoint.target
            owned = endpoint.owned_fd
        with pytest.raises(OSError):
            os.fstat(owned)   # closed with the endpoint
    finally:
        os.close(read_fd)


def test_where_a_restore_reads_from(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        import_endpoint(str(tmp_path / "missing.tar"))
    with pytest.raises(FerryError, match="is not a file"):
        import_endpoint(str(tmp_path))
    (tmp_path / "a.tar").write_bytes(b"x")
    assert import_endpoint(str(tmp_path / "a.tar")).target == str(tmp_path / "a.tar")


def test_stdout_is_told_apart_from_other_files(tmp_path, capfd):
    (tmp_path / "x.tar").write_bytes(b"")
    assert is_stdout("-") and is_stdout("/dev/stdout")
    assert not is_stdout(str(tmp_path / "x.tar"))
    assert not is_stdout(str(tmp_path / "new.tar.zst"))
    assert not is_stdout(None)


def test_a_terminal_is_never_an_archive():
    leader, follower = pty.openpty()
    saved = os.dup(0), os.dup(1)
    try:
        os.dup2(follower, 0)
        os.dup2(follower, 1)
        with pytest.raises(FerryError, match="will not write a checkpoint archive to a terminal"):
            export_endpoint("-")
        with pytest.raises(FerryError, match="will not read a checkpoint archive from a terminal"):
            import_endpoint("-")
    finally:
        os.dup2(saved[0], 0)
        os.dup2(saved[1], 1)
        for fd in (*saved, leader, follower):
            os.close(fd)
