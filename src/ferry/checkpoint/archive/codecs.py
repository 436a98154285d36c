"""The archive's compressions, each codec's reading side (a ChunkSource of
decompressed chunks) beside its writing side (a Sink): plain tar, zstd in
independent frames (compressed and decompressed on every core), gzip by pigz
or zlib; and the raw frames that let the writer fill a room in place."""

from __future__ import annotations

import collections
import contextlib
import mmap
import os
import queue
import shutil
import struct
import subprocess
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import zstandard

from ferry.checkpoint.archive.manifest import COMPRESSIONS, HINT_DAMAGED, HINT_FOREIGN, trailing, truncated
from ferry.util import proc
from ferry.util.pipes import end_process, grow_pipe, start_writeback, write_all
from ferry.util.errors import BadArchive, FerryError, ToolError, UsageError

CHUNK = 1 << 20            # unit of reads, hashing and decompressed output
PIPELINE_DEPTH = 8         # chunks a gzip or plain archive is read ahead
STOP_POLL = 0.1            # seconds a full read-ahead queue waits before it looks for a stop
MAX_FRAME_CONTENT = 128 << 20      # ferry writes zstd frames of at most 64 MiB

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SUFFIXES = ((".tar.gz", "gzip"), (".tgz", "gzip"), (".tar.zst", "zstd"), (".tar.zstd", "zstd"),
            (".tzst", "zstd"), (".tar", "none"))


# ---- compression choice ---------------------------------------------------------

def compression_for(path: str, explicit: str | None = None) -> str:
    """An explicit choice wins; otherwise the file name says (never sniffed)."""
    if explicit is not None:
        if explicit in COMPRESSIONS:
            return explicit
        raise UsageError(f"unknown compression {explicit!r}", hint="use zstd, gzip or none")
    lowered = os.path.basename(path).lower()
    for suffix, compression in SUFFIXES:
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return compression
    raise UsageError(f"cannot tell the compression of {path}",
                     hint="name it .tar.gz, .tar.zst or .tar, or pass --compress")


def find_pigz() -> str | None:
    return shutil.which("pigz", path=proc.TOOL_PATH)


# ---- the two sides --------------------------------------------------------------

class RawInput:
    """The archive's bytes as they come from fd: a file (peeked at with
    pread, so pigz may read fd itself) or a pipe or socket, whose first bytes
    are read to tell its format and handed out again first."""

    def __init__(self, fd: int, *, seekable: bool):
        self.fd = fd
        self.seekable = seekable
        self._first = b""

    def peek(self, size: int) -> bytes:
        if self.seekable:
            return os.pread(self.fd, size, 0)
        while len(self._first) < size and (data := os.read(self.fd, size - len(self._first))):
            self._first += data
        return self._first[:size]

    @property
    def untouched(self) -> bool:
        """Nothing of fd has been read yet: another process may read it instead."""
        return not self._first

    def read(self, size: int) -> bytes:
        if self._first:
            data, self._first = self._first, b""
            return data
        return os.read(self.fd, size)


class ChunkSource:
    """The archive's decompressed bytes: read() gives the next chunk, b"" at
    the end, after the decompressor has checked its own end of stream."""

    def read(self) -> bytes:
        raise NotImplementedError

    def stop(self) -> None:
        """Make a read blocked in another thread return soon."""

    def release(self, chunk) -> None:
        """The reader is done with `chunk`, the oldest it was given."""

    def close(self) -> None:
        pass


class Sink:
    """The temp file at its current offset, through a compressor or not.
    write() is done with `data` when it returns: callers reuse their buffers."""

    _scratch: memoryview | None = None

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def write_mapped(self, fd: int, offset: int, length: int, digest) -> None:
        """Write `length` bytes of the file fd from `offset` (page-aligned),
        mapped rather than read, and add them to `digest`."""
        with mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=offset) as mapping:
            with memoryview(mapping) as view:
                digest.update(view)
                self.write(view)

    def read_from(self, fd: int, limit: int) -> memoryview:
        """Read up to `limit` bytes of fd into the sink; the bytes read (empty
        at the end of the file), valid until the next call."""
        if self._scratch is None or len(self._scratch) < limit:
            self._scratch = memoryview(bytearray(limit))
        data = self._scratch[:os.readv(fd, [self._scratch[:limit]])]
        self.write(data)
        return data

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


# ---- none: plain tar ------------------------------------------------------------

class PlainSource(ChunkSource):
    def __init__(self, raw: RawInput):
        self._raw = raw

    def read(self) -> bytes:
        return self._raw.read(CHUNK)


class PlainSink(Sink):
    def __init__(self, fd: int):
        self._fd = fd

    def write(self, data) -> None:
        write_all(self._fd, data)


# ---- zstd: independent frames ---------------------------------------------------

ZSTD_BLOCK_MAX = 128 << 10     # zstd block

# Memory pages: zstd's double-fast search with small tables (256 KiB each).
# On redis pages it costs about what level 1 costs and writes archives a
# little smaller than podman's (level 1 is 6% larger; level 3, as small,
# takes 25-40% more CPU).
PAGES_ZSTD = dict(strategy=zstandard.STRATEGY_DFAST, window_log=19, chain_log=16, hash_log=16,
                  min_match=5, search_log=1)
# Small bodies, where CPU does not matter: level 3 with an 8 MiB window also
# finds the pages that several processes (nginx's workers) share.
SMALL_ZSTD_LEVEL, SMALL_ZSTD_WINDOW_LOG = 3, 23
SMALL_BODY = 64 << 20
# A tiny body (a busybox's 160 KiB) takes level 9: 3 ms, and 7% smaller than
# level 3 (26.8 KiB against 28.7 KiB; podman's gzip is 26.7 KiB).
TINY_ZSTD_LEVEL, TINY_BODY = 9, 256 << 10
# Large bodies go in independent frames of this size, compressed by a pool of
# threads. zstd's own threads in streaming mode kept the 2 cores here only
# half busy (3.3 s against 2.2 s for 1.17 GiB), and the window (512 KiB) makes
# the frame boundaries cost nothing in size (redis 256 MiB: 8 MiB frames are
# 0.1% larger than 32 MiB ones). Small, because a restore holds each frame in
# flight whole: 32 MiB frames made its peak 190 MiB at redis 2 GiB. A
# multiple of the page size: a followed file is mapped a frame at a time.
FRAME_BYTES = 8 << 20


def zstd_params(body_size: int | None) -> tuple[zstandard.ZstdCompressionParameters, int]:
    """Parameters and frame size for a body of `body_size` bytes (None: unknown, large)."""
    if body_size is not None and body_size <= SMALL_BODY:
        level = TINY_ZSTD_LEVEL if body_size <= TINY_BODY else SMALL_ZSTD_LEVEL
        return zstandard.ZstdCompressionParameters.from_level(
            level, source_size=body_size, window_log=SMALL_ZSTD_WINDOW_LOG, write_checksum=1), SMALL_BODY
    return zstandard.ZstdCompressionParameters(**PAGES_ZSTD, write_checksum=1), FRAME_BYTES


class _FrameEnd(NamedTuple):
    offset: int                # in the data just fed, where the frame ends
    content_size: int | None   # as its header declares it
    skippable: bool


class ZstdFrameWalker:
    """Follows zstd frame and block headers in the compressed bytes, so each
    frame can be handed to a decoder whole, and a frame cut short is seen
    (zstandard's stream reader ends quietly there)."""

    def __init__(self):
        self._state = "magic"
        self._need = 4          # header bytes the state wants
        self._pending = b""     # of those, what has arrived
        self._skip = 0          # block content still to pass over
        self._checksum = False
        self._skippable = False
        self._layout = (0, 0, 0)   # frame header: window descriptor, dict id, content size bytes
        self._content_size: int | None = None
        self._end_after_skip = False

    def feed(self, data: bytes) -> list[_FrameEnd]:
        """Walk `data`; the frames that end in it."""
        ends = []
        view, pos, end = memoryview(data), 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                if not self._skip and self._end_after_skip:
                    self._end_after_skip = False
                    ends.append(_FrameEnd(pos, self._content_size, self._skippable))
                continue
            take = min(self._need - len(self._pending), end - pos)
            self._pending += bytes(view[pos:pos + take])
            pos += take
            if len(self._pending) == self._need:
                header, self._pending = self._pending, b""
                if self._advance(header):
                    ends.append(_FrameEnd(pos, self._content_size, self._skippable))
        return ends

    def _advance(self, header: bytes) -> bool:
        """Take one complete header field; True when it ends a frame."""
        value = int.from_bytes(header, "little")
        state = self._state
        if state == "magic":
            self._skippable = False
            if header == ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif value & 0xFFFFFFF0 == 0x184D2A50:
                self._skippable = True
                self._state, self._need = "skippable_size", 4
            else:
                raise trailing()
        elif state == "descriptor":
            if value & 0x08:
                raise BadArchive("archive is corrupt: bad zstd frame header", hint=HINT_DAMAGED)
            single_segment = value >> 5 & 1
            self._checksum = bool(value & 0x04)
            self._layout = (0 if single_segment else 1, (0, 1, 2, 4)[value & 3],
                            ((1 if single_segment else 0), 2, 4, 8)[value >> 6])
            self._content_size = None
            rest = sum(self._layout)
            self._state, self._need = ("frame_header", rest) if rest else ("block", 3)
        elif state == "frame_header":
            size_bytes = header[sum(self._layout[:2]):]
            if size_bytes:
                self._content_size = int.from_bytes(size_bytes, "little") + (256 if len(size_bytes) == 2 else 0)
            self._state, self._need = "block", 3
        elif state == "block":
            block_type, block_size = value >> 1 & 3, value >> 3
            if block_type == 3:
                raise BadArchive("archive is corrupt: bad zstd block", hint=HINT_DAMAGED)
            self._skip = 1 if block_type == 1 else block_size
            if value & 1:  # last block of the frame
                if self._checksum:
                    self._state, self._need = "checksum", 4
                else:
                    self._state, self._need = "magic", 4
                    return self._ends_after(self._skip)
        elif state == "checksum":
            self._state, self._need = "magic", 4
            return True
        elif state == "skippable_size":
            self._skip = value
            self._content_size = None
            self._state, self._need = "magic", 4
            return self._ends_after(value)
        return False

    def _ends_after(self, skip: int) -> bool:
        """The frame ends once `skip` more bytes have passed: now if none."""
        self._end_after_skip = bool(skip)
        return not skip

    def finish(self) -> None:
        if self._state != "magic" or self._pending or self._skip:
            raise truncated()


class ZstdSource(ChunkSource):
    """Decompresses whole frames in a pool of threads and hands them out in
    order: ferry writes memory pages as independent frames, so every core
    decompresses. A frame must declare (or stay within) MAX_FRAME_CONTENT.
    Frames that declare their size are decompressed into reused buffers, as
    fresh memory costs a page fault per 4 KiB."""

    def __init__(self, raw: RawInput, ahead: int):
        self._raw = raw
        self._ahead = ahead     # frames in flight before the oldest is waited for
        self._walker = ZstdFrameWalker()
        self._workers = os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="ferry-unzstd")
        self._local = threading.local()
        self._frame: list[bytes] = []     # compressed bytes of the frame being read
        self._frame_bytes = 0
        self._outputs: collections.deque[Future] = collections.deque()
        self._raw_done = False
        self._lock = threading.Lock()
        self._free: list[bytearray] = []
        self._lent: collections.deque = collections.deque()   # buffers of the chunks handed out

    def read(self):
        while True:
            if self._outputs and (self._raw_done or len(self._outputs) >= self._ahead):
                data, buffer = self._outputs.popleft().result()
                self._lent.append(buffer)
                if data:
                    return data
                self.release(data)
            elif self._raw_done:
                return b""
            else:
                self._read_raw()

    def release(self, chunk) -> None:
        buffer = self._lent.popleft()
        if buffer is not None:
            with self._lock:
                self._free.append(buffer)

    def _read_raw(self) -> None:
        data = self._raw.read(CHUNK)
        if not data:
            self._walker.finish()
            self._raw_done = True
            return
        start = 0
        for end in self._walker.feed(data):
            self._frame.append(data[start:end.offset])
            start = end.offset
            frame, self._frame, self._frame_bytes = b"".join(self._frame), [], 0
            if not end.skippable:
                if end.content_size is not None and end.content_size > MAX_FRAME_CONTENT:
                    raise _frame_too_large()
                self._outputs.append(self._pool.submit(self._decompress, frame, end.content_size))
        if start < len(data):
            self._frame.append(data[start:])
            self._frame_bytes += len(data) - start
            if self._frame_bytes > MAX_FRAME_CONTENT + (1 << 20):   # never that much larger than its content
                raise _frame_too_large()

    def _decompress(self, frame: bytes, size: int | None):
        """(content, the buffer holding it or None)."""
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = self._local.decompressor = zstandard.ZstdDecompressor()
        if size is None:
            return decompressor.decompress(frame, max_output_size=MAX_FRAME_CONTENT), None
        with self._lock:
            fits = [b for b in self._free if len(b) >= size]
            buffer = min(fits, key=len) if fits else bytearray(size)
            if fits:
                self._free.remove(buffer)
        view = memoryview(buffer)[:size]
        reader = decompressor.stream_reader(frame)
        filled = 0
        while filled < size and (count := reader.readinto(view[filled:])):
            filled += count
        if filled != size or reader.read(1):   # reading on checks the frame's checksum
            raise BadArchive("archive is corrupt: a zstd frame holds other than it declares", hint=HINT_DAMAGED)
        return view, buffer

    def close(self) -> None:
        for output in self._outputs:
            output.cancel()
        self._pool.shutdown(wait=True)


def _frame_too_large() -> BadArchive:
    return BadArchive(f"archive has a zstd frame of more than {MAX_FRAME_CONTENT >> 20} MiB", hint=HINT_FOREIGN)


class ZstdSink(Sink):
    """zstd frames of at most frame_size bytes each, compressed in a pool of
    threads (python-zstandard releases the GIL) and written in order. Frame
    buffers are reused: fresh ones cost a page fault per 4 KiB."""

    def __init__(self, fd: int, body_size: int | None):
        self._fd = fd
        self._params, self._frame_size = zstd_params(body_size)
        if body_size is not None:
            self._frame_size = max(1, min(self._frame_size, body_size))
        self._workers = os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="ferry-zstd")
        self._local = threading.local()
        self._free: list[bytearray] = []
        self._buffer: bytearray | None = None
        self._filled = 0
        # (compressed frame, its buffer to reuse, or its mapping to close)
        self._frames: collections.deque[tuple[Future, bytearray | mmap.mmap]] = collections.deque()

    def _compress(self, data: memoryview) -> bytes:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = zstandard.ZstdCompressor(compression_params=self._params)
        return compressor.compress(data)

    def _current(self) -> bytearray:
        if self._buffer is None:
            self._buffer = self._free.pop() if self._free else bytearray(self._frame_size)
            self._filled = 0
        return self._buffer

    def write(self, data) -> None:
        view = memoryview(data)
        while view:
            buffer = self._current()
            count = min(len(view), self._frame_size - self._filled)
            buffer[self._filled:self._filled + count] = view[:count]
            self._filled += count
            view = view[count:]
            if self._filled == self._frame_size:
                self._submit()

    def read_from(self, fd: int, limit: int) -> memoryview:
        # Straight into the frame buffer: no copy of the pages in between.
        start = self._filled
        room = memoryview(self._current())[start:start + min(limit, self._frame_size - start)]
        count = os.readv(fd, [room])
        self._filled += count
        if self._filled == self._frame_size:
            self._submit()   # the view stays valid: only older buffers are reused
        return room[:count]

    def _submit(self) -> None:
        buffer = self._buffer if self._buffer is not None else bytearray()
        self._queue(memoryview(buffer)[:self._filled], buffer)
        self._buffer, self._filled = None, 0

    def _queue(self, data: memoryview, owner: bytearray | mmap.mmap) -> None:
        self._frames.append((self._pool.submit(self._compress, data), owner))
        while len(self._frames) > self._workers:   # bounds the memory held in flight
            self._write_oldest()

    def write_mapped(self, fd: int, offset: int, length: int, digest) -> None:
        # Page cache straight to the compressor: no copy of the pages at all.
        if self._buffer is not None:
            self._submit()
        mapping = mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=offset)
        data = memoryview(mapping)
        digest.update(data)
        self._queue(data, mapping)

    def _write_oldest(self) -> None:
        frame, owner = self._frames.popleft()
        write_all(self._fd, frame.result())
        start_writeback(self._fd)
        if isinstance(owner, mmap.mmap):
            # The pool's worker holds its view of the pages for an instant after
            # the result is set (until its work item goes): then the last view
            # to go unmaps them. (A checkpoint failed with BufferError here.)
            with contextlib.suppress(BufferError):
                owner.close()
        else:
            self._free.append(owner)

    def finish(self) -> None:
        if self._buffer is not None or not self._frames:
            self._submit()
        while self._frames:
            self._write_oldest()
        self._pool.shutdown()

    def abort(self) -> None:
        for frame, _ in self._frames:
            frame.cancel()
        self._pool.shutdown(wait=True)
        for _, owner in self._frames:
            if isinstance(owner, mmap.mmap):
                with contextlib.suppress(BufferError):
                    owner.close()


def raw_zstd_frame(data: bytes) -> bytes:
    """`data` as one zstd frame of raw (uncompressed) blocks."""
    parts = [ZSTD_MAGIC + b"\xe0" + struct.pack("<Q", len(data))]   # single segment, 8-byte size
    starts = range(0, len(data), ZSTD_BLOCK_MAX) or [0]
    for start in starts:
        chunk = data[start:start + ZSTD_BLOCK_MAX]
        last = start + ZSTD_BLOCK_MAX >= len(data)
        parts.append((len(chunk) << 3 | last).to_bytes(3, "little") + chunk)
    return b"".join(parts)


# ---- gzip: pigz, or zlib without it ---------------------------------------------

# gzip level 1 is 3-5x faster than the default and costs a few percent of
# size on memory pages; the archive must not be what a checkpoint waits on.
GZIP_LEVEL = 1
STORED_BLOCK_MAX = 0xFFFF      # deflate stored block


class ZlibGzipSource(ChunkSource):
    """gzip members one after another, each checked to its end by zlib."""

    def __init__(self, raw: RawInput):
        self._raw = raw
        self._inflater = zlib.decompressobj(31)

    def read(self) -> bytes:
        while True:
            if self._inflater.eof:
                leftover = self._inflater.unused_data or self._raw.read(CHUNK)
                if not leftover:
                    return b""
                if len(leftover) < len(GZIP_MAGIC):
                    leftover += self._raw.read(CHUNK)
                if not leftover.startswith(GZIP_MAGIC):
                    raise trailing()
                self._inflater = zlib.decompressobj(31)
                pending = leftover
            else:
                pending = self._inflater.unconsumed_tail or self._raw.read(CHUNK)
                if not pending:
                    data = self._inflater.flush()
                    if not self._inflater.eof:
                        raise truncated()
                    if data:
                        return data
                    continue
            data = self._inflater.decompress(pending, CHUNK)
            if data:
                return data


class ZlibGzipSink(Sink):
    def __init__(self, fd: int):
        self._fd = fd
        self._deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def write(self, data: bytes) -> None:
        write_all(self._fd, self._deflate.compress(data))

    def finish(self) -> None:
        write_all(self._fd, self._deflate.flush())


class PigzSource(ChunkSource):
    """pigz -d in its own process: about twice zlib's speed here, and it runs
    beside the hashing and writing. -v makes it fail on trailing junk."""

    def __init__(self, fd: int, pigz: str):
        self._process = proc.spawn([pigz, "-d", "-c", "-v"], desc="pigz decompression",
                                   stdin=fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._pipe = self._process.stdout.fileno()
        grow_pipe(self._pipe)

    def read(self) -> bytes:
        data = os.read(self._pipe, CHUNK)
        if not data:
            code = self._process.wait()
            said = self._process.stderr.read().decode(errors="replace")
            if code != 0:
                raise _pigz_failure(said)
        return data

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()

    def close(self) -> None:
        end_process(self._process)


def _pigz_failure(said: str) -> BadArchive:
    if "trailing junk" in said:
        return trailing()
    if any(sign in said for sign in ("missing trailer", "incomplete", "unexpected end", "premature end")):
        return truncated()
    lines = [line for line in said.splitlines() if "pigz:" in line] or said.splitlines() or ["no output"]
    return BadArchive(f"archive is corrupt: {lines[-1].split('pigz:', 1)[-1].strip()}", hint=HINT_DAMAGED)


class PigzSink(Sink):
    """-n: no time in the header, so one input always makes one blob (a push reuses it)."""

    def __init__(self, fd: int, pigz: str):
        self._process = proc.spawn([pigz, f"-{GZIP_LEVEL}", "-n", "-c"], desc="pigz compression",
                                   stdin=subprocess.PIPE, stdout=fd, stderr=subprocess.PIPE)
        self._pipe = self._process.stdin.fileno()
        grow_pipe(self._pipe)

    def write(self, data: bytes) -> None:
        try:
            write_all(self._pipe, data)
        except BrokenPipeError:
            raise self._failure() from None

    def finish(self) -> None:
        self._process.stdin.close()
        if self._process.wait() != 0:
            raise self._failure()
        self._process.stderr.close()

    def _failure(self) -> ToolError:
        self._process.kill()
        code = self._process.wait()
        said = self._process.stderr.read().decode(errors="replace")
        return ToolError("pigz compression", code, proc.tail(said))

    def abort(self) -> None:
        end_process(self._process)


def stored_gzip_member(data: bytes) -> bytes:
    """`data` as one gzip member of stored (uncompressed) deflate blocks."""
    parts = [GZIP_MAGIC + b"\x08\x00\x00\x00\x00\x00\x00\xff"]   # deflate, no flags, no mtime, OS unknown
    starts = range(0, len(data), STORED_BLOCK_MAX) or [0]
    for start in starts:
        chunk = data[start:start + STORED_BLOCK_MAX]
        last = start + STORED_BLOCK_MAX >= len(data)
        parts.append(struct.pack("<BHH", last, len(chunk), len(chunk) ^ 0xFFFF) + chunk)
    parts.append(struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF))
    return b"".join(parts)


# ---- choosing a codec -----------------------------------------------------------

class Prefetcher(ChunkSource):
    """Runs a source in a thread so decompression overlaps hashing and writing
    (zstandard, zlib and os.read release the GIL)."""

    def __init__(self, source):
        self._source = source
        self._queue: queue.Queue = queue.Queue(PIPELINE_DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ferry-archive-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._source.read()
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reading thread
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=STOP_POLL)
                return
            except queue.Full:
                continue

    def read(self) -> bytes:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._source.stop()
        self._thread.join()    # before close: the thread may still hold the source's fds
        self._source.close()


def open_source(raw: RawInput, *, threaded: bool, use_pigz: bool) -> ChunkSource:
    """The decompressed bytes of the archive, by its magic bytes."""
    magic = raw.peek(len(ZSTD_MAGIC))
    if magic.startswith(ZSTD_MAGIC):
        # Twice as many frames as workers in flight keep the pool busy
        # while the caller writes a chunk out; the manifest needs one.
        return ZstdSource(raw, ahead=2 * (os.cpu_count() or 1) if threaded else 1)
    if magic.startswith(GZIP_MAGIC):
        pigz = find_pigz() if use_pigz and raw.untouched else None
        source = PigzSource(raw.fd, pigz) if pigz else ZlibGzipSource(raw)
    else:
        from ferry.checkpoint.encryption import ENVELOPE_MAGIC, kind_of
        encrypted = kind_of(raw.peek(len(ENVELOPE_MAGIC)))
        if encrypted:
            raise FerryError(f"the archive is encrypted ({encrypted})",
                             hint="give --decrypt-key FILE or --decrypt-passphrase-file FILE")
        source = PlainSource(raw)
    # zstd frames decompress in their own pool already. A pipe's reads
    # stay in the caller's thread: a thread blocked on a stalled writer
    # could not be stopped.
    return Prefetcher(source) if threaded and raw.seekable else source


def sink_for(compression: str, fd: int, body_size: int | None) -> Sink:
    if compression == "zstd":
        return ZstdSink(fd, body_size)
    if compression == "gzip":
        pigz = find_pigz()
        return PigzSink(fd, pigz) if pigz else ZlibGzipSink(fd)
    return PlainSink(fd)


def framed(compression: str, data: bytes) -> bytes:
    if compression == "zstd":
        return raw_zstd_frame(data)
    if compression == "gzip":
        return stored_gzip_member(data)
    return data


DECODER_ERRORS = (zstandard.ZstdError, zlib.error)


def decoder_failure(exc: BaseException) -> BadArchive | None:
    if isinstance(exc, DECODER_ERRORS):
        return BadArchive(f"archive is corrupt: {exc}", hint=HINT_DAMAGED)
    return None
