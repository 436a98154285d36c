"""Writing checkpoint archives, front to back, in format 3: the head
(manifest.json), the members, then the trailer (checksums.json: every
member's size and BLAKE3 digest, hashed as it is written, in one pass) and,
with a signer, its Ed25519 signature (checksums.sig). Each file is streamed
into a compressor (zstd frames compressed on every core, or pigz).

The target is a path or a file descriptor. A path gets a 0600 temp file
beside it, which commit() fsyncs and renames into place. A file descriptor
(a pipe or a socket) is never sought: nothing is written to it twice.

Files and streams take the same path through this module, with one
difference, kept in the target: what a followed file (CRIU's page images,
see follow.py) needs before its size is known. A file leaves rooms, filled
in place once the size is known: the followed member's tar header, and the
head, which takes the members' exact total as max_size (padded with spaces,
which JSON allows, so its size never changes). Rooms are frames of exactly
known size (a raw zstd frame), and concatenated frames are plain zstd. A
stream cannot go back: its head carries the caller's max_size estimate, and
a followed file goes in as consecutive tar entries of its name, each of the
size known when it is written, all after the first marked FERRY.continue.
Files keep their rooms, though writing them as a stream would be simpler,
because podman's restore --import extracts each tar entry over the last
(issue 14 has it read ferry's files), and because an exact max_size sizes a
restore's staging exactly; a room costs one pwrite per followed member.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from typing import Callable, NamedTuple

import blake3

from ferry.checkpoint.archive import codecs
from ferry.checkpoint.archive.manifest import (CHECKSUMS_NAME, COMPRESSIONS, DIGEST, FORMAT_VERSION,
                                               MANIFEST_NAME, MAX_CHECKSUMS_BYTES, MAX_HEAD_BYTES, MAX_MEMBERS,
                                               MAX_SIZE_LIMIT, RESERVED_NAMES, SIGNATURE_NAME, Checksum, Checksums,
                                               Head, Signature, check_container, shown, unsafe_name_reason)
from ferry.checkpoint.archive.codecs import Sink, framed, sink_for
from ferry.checkpoint.archive.follow import FollowAbandoned, Follower
from ferry.checkpoint.archive.tarfmt import BLOCK, TAR_END, fixed_header, padding, tar_header
from ferry.checkpoint.hostinfo import HostInfo, host_info
from ferry.util.errors import FerryError, NotFound, UsageError, from_os_error
from ferry.util.fs import fsync_dir
from ferry.util.log import get_logger
from ferry.util.pipes import write_all
from ferry.util.progress import Progress, Reporter
from ferry.util.timefmt import utc_now

__all__ = ["ArchiveWriter", "WriteResult", "write_archive"]

log = get_logger("ferry.checkpoint.archive")


READ_BYTES = 4 << 20      # one read of a file being archived


class WriteResult(NamedTuple):
    path: str | None       # None for a stream
    size: int | None       # bytes of the archive file; None for a stream
    write_seconds: float   # from the writer's start to the rename (or the stream's end)
    streamed: int          # member bytes that went in while they were being written
    signer: str | None = None   # the signing key's fingerprint


class _Input(NamedTuple):
    name: str
    path: str
    size: int


def _open_input(path: str, name: str) -> tuple[int, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"cannot archive {shown(name)}: it does not exist") from None
    except OSError as exc:
        raise from_os_error(exc, f"cannot archive {shown(name)}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise FerryError(f"cannot archive {shown(name)}: not a regular file")
    return fd, info


def _input(source_dir: str, name: str, path: str | None = None) -> _Input:
    path = path or os.path.join(source_dir, name)
    fd, info = _open_input(path, name)
    os.close(fd)
    return _Input(name, path, info.st_size)


def _changed(name: str) -> FerryError:
    return FerryError(f"{shown(name)} changed while the archive was being written",
                      hint="nothing may write into a checkpoint while it is archived; checkpoint again")


def _copy_hashed(item: _Input, sink: Sink, reporter: Reporter) -> str:
    """Stream one complete file into the sink; its BLAKE3 digest."""
    fd, before = _open_input(item.path, item.name)
    try:
        if before.st_size != item.size:
            raise _changed(item.name)
        digest = blake3.blake3()
        copied = 0
        while copied < item.size:
            data = sink.read_from(fd, min(READ_BYTES, item.size - copied))
            if not data:
                raise _changed(item.name)
            digest.update(data)
            copied += len(data)
            reporter.add(len(data))
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise _changed(item.name)
        return digest.hexdigest()
    finally:
        os.close(fd)


class _Streamed(NamedTuple):
    member: Checksum
    path: str
    identity: tuple   # (inode, size, mtime_ns) when the member was closed


def _signer(signer):
    """A loaded private key, from a signing.PrivateKey or a PEM file's path."""
    if signer is None:
        return None
    from ferry.checkpoint import signing   # cryptography loads only to sign
    if isinstance(signer, signing.PrivateKey):
        return signer
    if isinstance(signer, (str, os.PathLike)):
        return signing.load_private_key(signer)
    raise TypeError("signer must be a signing.PrivateKey or the path of a PEM private key")


# ---- targets: all that differs between a file and a stream -----------------

class _Room(NamedTuple):
    offset: int
    size: int


class _FileTarget:
    """A path: a 0600 temp file beside it, renamed into place by finish().
    With `sealing`, age encrypts what is written on its way into the file:
    such a target cannot be sought."""

    def __init__(self, path: str, sealing=None):
        self.path = self.name = path
        self._directory = os.path.dirname(os.path.abspath(path))
        self._encryptor = None
        try:
            # mkstemp creates the file 0600, so process memory is never readable by others.
            self.fd, self.temp = tempfile.mkstemp(dir=self._directory, prefix=f".{os.path.basename(path)}.",
                                                  suffix=".tmp")
        except FileNotFoundError:
            raise NotFound(f"cannot write {path}: directory {self._directory} does not exist") from None
        except OSError as exc:
            raise from_os_error(exc, f"cannot write {path}") from None
        self.file_fd = self.fd
        self.seekable = sealing is None
        if sealing is not None:
            try:
                self._encryptor = sealing.start(self.file_fd)
            except BaseException:
                self.abort()
                raise
            self.fd = self._encryptor.fd

    def room(self, placeholder: bytes) -> _Room:
        """Write `placeholder` where fill() will put bytes of the same length."""
        room = _Room(os.lseek(self.fd, 0, os.SEEK_CUR), len(placeholder))
        write_all(self.fd, placeholder)
        return room

    def fill(self, room: _Room, data: bytes, what: str) -> None:
        if len(data) != room.size:
            raise RuntimeError(f"{what} takes {len(data)} bytes, not the {room.size} left for it")
        if os.pwrite(self.fd, data, room.offset) != len(data):
            raise OSError(f"short write of {what}")

    def restart(self, why: str) -> None:
        log.warning("writing %s from the files instead of following them: %s", self.path, why)
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)

    def finish(self) -> int:
        if self._encryptor is not None:
            self._encryptor.finish()     # closes self.fd, the pipe into age
            self._encryptor, self.fd = None, self.file_fd
        os.fsync(self.fd)
        size = os.fstat(self.fd).st_size
        os.close(self.fd)
        self.fd = self.file_fd = -1
        os.replace(self.temp, self.path)
        self.temp = None    # the archive is in place: abort() leaves it alone
        fsync_dir(self._directory)
        return size

    def abort(self) -> None:
        if self._encryptor is not None:
            self._encryptor.abort()
            self._encryptor = None
        if self.file_fd >= 0:
            os.close(self.file_fd)
        self.fd = self.file_fd = -1
        if self.temp is not None:   # a failed rename too leaves no temp file
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp)
            self.temp = None


class _SealedFileTarget(_FileTarget):
    """A path, encrypted, where the writer follows growing files and so must
    fill the head in last: the archive grows in plain at `plain` (a file in
    ferry's own work dir, root's alone), and finish() has age encrypt it into
    the temp file beside the path, which is synced and renamed into place as
    an unencrypted archive is."""

    def __init__(self, path: str, plain: str, sealing):
        super().__init__(path)
        self.sealing, self.plain = sealing, plain
        try:
            self.fd = os.open(plain, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self.fd = -1
            self.abort()
            raise from_os_error(exc, f"cannot write {plain}") from None

    def finish(self) -> int:
        os.lseek(self.fd, 0, os.SEEK_SET)
        self._encryptor = self.sealing.start(self.file_fd, source=self.fd)
        self._encryptor.finish()
        self._encryptor = None
        os.close(self.fd)
        self.fd = self.file_fd
        os.unlink(self.plain)
        return super().finish()

    def abort(self) -> None:
        if self.fd >= 0 and self.fd != self.file_fd:
            os.close(self.fd)
        self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.plain)
        super().abort()


class _StreamTarget:
    """A file descriptor (a pipe, a socket): the caller's to close; never
    sought, never synced, and a writer that stops short leaves it without
    the trailer, which readers refuse. With `sealing`, age encrypts what is
    written on its way into the stream."""

    seekable = False
    path = temp = None

    def __init__(self, fd: int, sealing=None):
        self.fd = fd
        self.name = f"the archive stream (fd {fd})"
        self._encryptor = sealing.start(fd) if sealing is not None else None
        if self._encryptor is not None:
            self.fd = self._encryptor.fd

    def restart(self, why: str) -> None:
        raise FerryError(f"cannot write {self.name}: {why}",
                         hint="nothing may write into a checkpoint while it is archived; checkpoint again")

    def finish(self) -> None:
        if self._encryptor is not None:
            self._encryptor.finish()
            self._encryptor = None
        self.fd = -1

    def abort(self) -> None:
        if self._encryptor is not None:
            self._encryptor.abort()
            self._encryptor = None
        self.fd = -1


# ---- the writer ------------------------------------------------------------

class ArchiveWriter:
    """One archive on its way to `target`: a path (written to a temp file and
    renamed into place) or a file descriptor (a pipe or socket, never sought;
    the caller keeps and closes it). follow() (optional) streams growing files
    while they are written; commit() adds the complete files, the trailer and
    the signature. A writer that is not committed leaves no file behind once
    abort() (or the with block) ends it; a stream is left without its trailer,
    which readers refuse.

    `signer` (a signing.PrivateKey, or a PEM file's path) signs the trailer.
    `max_size` bounds the sum of the members' sizes, for the head of a stream
    that follows files (it must be written before they are known); the writer
    fails, in one line, rather than exceed it. A file's head gets the exact
    total, and so does a stream's when nothing was followed.

    `sealing` (encryption.Sealing) encrypts the archive with age. A sealed
    path that will follow files needs `plain`, a private file where the
    archive grows unencrypted until its head is filled in; without it, and
    for a stream, age encrypts what is written as it goes.
    """

    def __init__(self, target: str | int, *, container: dict, compression: str, host: HostInfo | None = None,
                 signer=None, max_size: int | None = None, sealing=None, plain: str | None = None):
        if compression not in COMPRESSIONS:
            raise UsageError(f"unknown compression {compression!r}", hint="use zstd, gzip or none")
        check_container(container)
        if max_size is not None and not (isinstance(max_size, int) and 0 <= max_size <= MAX_SIZE_LIMIT):
            raise ValueError(f"max_size must be an integer from 0 to {MAX_SIZE_LIMIT}")
        self.compression = compression
        self._signer = _signer(signer)
        self._container = dict(container)
        self._host = host if host is not None else host_info()
        self._created, self._mtime = utc_now(digits=0), int(time.time())
        self._started = time.monotonic()
        self._max_size = max_size
        self._head_width = len(self._head(MAX_SIZE_LIMIT))   # the widest max_size
        if self._head_width > MAX_HEAD_BYTES:
            raise FerryError(f"cannot write an archive: its {MANIFEST_NAME} would take {self._head_width} bytes, "
                             f"more than readers accept ({MAX_HEAD_BYTES})")
        self._head_bytes: bytes | None = None   # the head as written (a file's room: as it will be)
        self._head_room: _Room | None = None    # a file's head, written before the total was known
        self._declared: int | None = None       # max_size in a head already written
        self._member_bytes = 0                  # sizes of the members written so far
        self._streamed: list[_Streamed] = []
        self._follower: Follower | None = None
        if isinstance(target, int):
            self._target = _StreamTarget(target, sealing)
        elif sealing is not None and plain is not None:
            self._target = _SealedFileTarget(target, plain, sealing)
        else:
            self._target = _FileTarget(target, sealing)
        self.path = self._target.path

    @property
    def temp_path(self) -> str | None:
        """The file the archive grows in until commit() renames it (None for a
        stream): a journal records it, so a killed checkpoint leaves no half."""
        return self._target.temp

    def __enter__(self) -> "ArchiveWriter":
        return self

    def __exit__(self, *_exc) -> None:
        self.abort()

    def _head(self, max_size: int, width: int = 0) -> bytes:
        return Head(FORMAT_VERSION, self._created, self._host, self._container, self.compression, DIGEST,
                    max_size).to_json(width)

    def _head_member(self, head: bytes) -> bytes:
        return tar_header(MANIFEST_NAME, len(head), self._mtime) + head + bytes(padding(len(head)))

    # -- following growing files --
    def follow(self, directory: str, prefix: str, select: Callable[[str], bool]) -> None:
        """Stream the files of `directory` that `select` picks (as prefix/NAME)
        while another process writes them, until stop_following(). gzip
        archives are written by pigz in one stream, so they do not follow."""
        if self.compression == "gzip" or self._follower is not None:
            return
        if not self._target.seekable and self._max_size is None:
            raise ValueError("a stream's head comes before the files it follows: give the writer a max_size")
        self._follower = Follower(self.begin_followed, directory, prefix, select)

    def stop_following(self, *, complete: bool) -> None:
        """complete=True once the writing process has ended: each followed
        file is read to its end. A check that a closed file changed afterwards
        makes the writer start over from the files (a stream cannot, and fails)."""
        follower, self._follower = self._follower, None
        if follower is None:
            return
        try:
            with self._failing_as_ferry():
                follower.stop(complete)
            if complete:
                for item in self._streamed:
                    info = os.stat(item.path, follow_symlinks=False)
                    if (info.st_ino, info.st_size, info.st_mtime_ns) != item.identity:
                        raise FollowAbandoned(f"{item.member.name} changed after it was closed")
        except FollowAbandoned as why:
            self._target.restart(str(why))
            self._streamed.clear()
            self._head_bytes, self._head_room, self._declared, self._member_bytes = None, None, None, 0

    def begin_followed(self, name: str) -> "FollowedMember":
        """A member that goes in while its file grows (for follow.Follower)."""
        if self._head_bytes is None:
            self._lead()
        return FollowedMember(self, name)

    def _lead(self) -> None:
        """The head, before the first followed member, when the members'
        total is not known yet: a stream's declares the caller's max_size, a
        file's is a room that commit() fills with the exact total."""
        if self._target.seekable:
            self._head_bytes = self._head(0, self._head_width)
            self._head_room = self._target.room(framed(self.compression, self._head_member(self._head_bytes)))
        else:
            self._head_bytes, self._declared = self._head(self._max_size), self._max_size
            write_all(self._target.fd, framed(self.compression, self._head_member(self._head_bytes)))

    def _claim(self, count: int) -> None:
        """`count` more member bytes are about to go out: within a written head's max_size."""
        if self._declared is not None and self._member_bytes + count > self._declared:
            raise FerryError(f"cannot write {self._target.name}: its members exceed the max_size of "
                             f"{self._declared} bytes that its head declared",
                             hint="give the archive writer a larger max_size estimate")
        self._member_bytes += count

    # -- completing --
    def commit(self, source_dir: str, names: list[str], progress: Progress | None = None, *,
               paths: dict[str, str] | None = None) -> WriteResult:
        """Add the complete files `names` (relative to source_dir, in this
        order; those already streamed are skipped; `paths` may name another
        file for a member), then the trailer and the signature; for a path,
        fsync and rename into place."""
        if self._target.fd < 0:
            raise RuntimeError("the archive writer has ended")
        self.stop_following(complete=True)
        names = list(names)
        for name in names:
            reason = unsafe_name_reason(name) or ("reserved for ferry's own records" if name in RESERVED_NAMES
                                                  else None)
            if reason:
                raise ValueError(f"cannot archive {shown(name)}: {reason}")
        if len(set(names)) != len(names):
            raise ValueError("a name is given twice")
        done = {item.member.name for item in self._streamed}
        inputs = [_input(source_dir, name, (paths or {}).get(name)) for name in names if name not in done]
        if len(done) + len(inputs) > MAX_MEMBERS:
            raise FerryError(f"cannot write {self._target.name}: more than {MAX_MEMBERS} members")
        reporter = Reporter(progress, "write", sum(i.size for i in inputs))
        with self._failing_as_ferry():
            total = self._member_bytes + sum(i.size for i in inputs)
            lead = None
            if self._head_bytes is None:        # nothing went out yet: the head leads the body
                self._head_bytes = lead = self._head(total)
            elif self._head_room is not None:   # the room takes the exact total
                self._head_bytes = self._head(total, self._head_width)
            self._claim(total - self._member_bytes)
            self._write_body(inputs, reporter, lead)
            if self._head_room is not None:
                self._target.fill(self._head_room, framed(self.compression, self._head_member(self._head_bytes)),
                                  MANIFEST_NAME)
            size = self._target.finish()
        reporter.finish()
        return WriteResult(self.path, size, time.monotonic() - self._started,
                           sum(item.member.size for item in self._streamed),
                           self._signer.fingerprint if self._signer else None)

    @contextlib.contextmanager
    def _failing_as_ferry(self):
        """A full disk, a vanished directory or a closed pipe, as one line that names the archive."""
        try:
            yield
        except OSError as exc:
            raise from_os_error(exc, f"cannot write {self._target.name}") from None

    def _write_body(self, inputs: list[_Input], reporter: Reporter, lead: bytes | None) -> None:
        """The head when `lead` is given, the complete files, the trailer and
        the signature, as tar members in one compressed stream."""
        # Each file is hashed as it is read into the compressor: with the
        # digests at the end, no pass ahead is needed (format 2 read every
        # file twice); 1 GiB of pages went in 1.8 s here, against 1.9 s.
        headers = [tar_header(item.name, item.size, self._mtime) for item in inputs]
        checksums = [item.member for item in self._streamed]
        # Its size is known before the digests are: they are fixed-width hex.
        sketch = self._trailer(checksums + [Checksum(i.name, i.size, "0" * 64) for i in inputs])
        if len(sketch) > MAX_CHECKSUMS_BYTES:
            raise FerryError(f"cannot write {self._target.name}: its {CHECKSUMS_NAME} would take {len(sketch)} "
                             f"bytes, more than readers accept ({MAX_CHECKSUMS_BYTES})")
        body_size = (sum(len(h) + i.size + padding(i.size) for h, i in zip(headers, inputs))
                     + 3 * BLOCK + len(sketch) + BLOCK + len(TAR_END))
        if lead is not None:
            body_size += BLOCK + len(lead) + padding(len(lead))
        sink = sink_for(self.compression, self._target.fd, body_size)
        try:
            if lead is not None:
                sink.write(self._head_member(lead))
            for header, item in zip(headers, inputs):
                sink.write(header)
                checksums.append(Checksum(item.name, item.size, _copy_hashed(item, sink, reporter)))
                sink.write(bytes(padding(item.size)))
            trailer = self._trailer(checksums)
            sink.write(tar_header(CHECKSUMS_NAME, len(trailer), self._mtime) + trailer
                       + bytes(padding(len(trailer))))
            if self._signer is not None:
                signature = Signature.make(self._signer.public.raw, self._signer.sign(trailer)).to_json()
                sink.write(tar_header(SIGNATURE_NAME, len(signature), self._mtime) + signature
                           + bytes(padding(len(signature))))
            sink.write(TAR_END)
            sink.finish()
        except BaseException:
            sink.abort()
            raise

    def _trailer(self, checksums: list[Checksum]) -> bytes:
        return Checksums(FORMAT_VERSION, blake3.blake3(self._head_bytes).hexdigest(), tuple(checksums)).to_json()

    def abort(self) -> None:
        """Stop any follower and remove the temp file; harmless after commit."""
        if self._follower is not None:
            follower, self._follower = self._follower, None
            with contextlib.suppress(Exception):
                follower.stop(False)
        self._target.abort()


class FollowedMember:
    """A member that goes into the archive while its file grows: add() its
    bytes in order, close(), then commit() it once it is known complete. In a
    file it is one tar entry, whose header is a room filled at commit(); on a
    stream each add() is an entry of its own, all after the first marked
    FERRY.continue."""

    def __init__(self, writer: ArchiveWriter, name: str):
        self.name = name
        self.size = 0
        self._writer = writer
        target = writer._target
        # A placeholder of the header's exact length: fixed_header is one block whatever the size.
        self._header_room = (target.room(framed(writer.compression, fixed_header(name, 0, writer._mtime)))
                             if target.seekable else None)
        self._sink = sink_for(writer.compression, target.fd, None)

    def add(self, fd: int, length: int, digest) -> None:
        """The next `length` bytes of the file fd, mapped a frame at a time, and added to `digest`."""
        writer = self._writer
        writer._claim(length)
        if self._header_room is None:   # a stream: a header of this part's size
            self._sink.write(tar_header(self.name, length, writer._mtime, continued=self.size > 0))
        for start in range(self.size, self.size + length, codecs.FRAME_BYTES):
            self._sink.write_mapped(fd, start, min(codecs.FRAME_BYTES, self.size + length - start), digest)
        self.size += length
        if self._header_room is None:
            self._sink.write(bytes(padding(length)))

    def close(self) -> None:
        if self._header_room is not None:
            self._sink.write(bytes(padding(self.size)))
        self._sink.finish()

    def abort(self) -> None:
        self._sink.abort()

    def commit(self, path: str, digest: str, identity: tuple) -> None:
        """The member is complete: its header takes its size, and commit() skips its file."""
        writer = self._writer
        if self._header_room is not None:
            writer._target.fill(self._header_room, framed(writer.compression,
                                                          fixed_header(self.name, self.size, writer._mtime)),
                                f"the header of {shown(self.name)}")
        writer._streamed.append(_Streamed(Checksum(self.name, self.size, digest), path, identity))


def write_archive(path: str, source_dir: str, names: list[str], *, container: dict, compression: str,
                  progress: Progress | None = None, host: HostInfo | None = None, signer=None) -> WriteResult:
    """Archive the complete regular files `names` (relative to source_dir, in
    this order, between manifest.json and checksums.json) into `path`,
    atomically and with mode 0600, signed by `signer` if given.

    `host` defaults to host_info() of this machine. Progress phase: "write",
    in bytes of the files.
    """
    with ArchiveWriter(path, container=container, compression=compression, host=host, signer=signer) as writer:
        return writer.commit(source_dir, names, progress)
