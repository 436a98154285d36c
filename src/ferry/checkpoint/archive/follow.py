"""Following files that another process is still writing (CRIU's page
images during a dump) into an archive while they grow, so that compression
runs beside the dump rather than after it. This module decides when a
file's bytes go in; the writer how (the `begin` it is given:
ArchiveWriter.begin_followed, whose members are writer.FollowedMember)."""

from __future__ import annotations

import os
import select
import threading
from typing import Callable

import blake3

from ferry.checkpoint.archive import codecs

# A followed file streams once it reaches this size. Smaller ones wait for the
# final frame, where they compress together (and the window spans them).
FOLLOW_MIN = 32 << 20
FOLLOW_POLL = 0.02        # seconds a follower waits for more of a file, or for its close


class FollowAbandoned(Exception):
    """Following cannot be trusted; the archive is written from the files instead."""


class Follower:
    """A thread that streams the selected files of a directory into the
    archive while another process writes them, one file at a time in the
    order they appear. inotify says when a file was closed, and so complete;
    a file that never grows to FOLLOW_MIN is left for commit()."""

    def __init__(self, begin: Callable, directory: str, prefix: str, select: Callable[[str], bool]):
        import inotify_simple
        from inotify_simple import INotify, flags
        if getattr(inotify_simple, "_libc", "absent") is None:
            # It would find libc with ctypes.util.find_library, which runs
            # `ldconfig -p` (about 5 ms a checkpoint); the process has libc.
            import ctypes
            inotify_simple._libc = ctypes.CDLL(None, use_errno=True)
        self._begin = begin     # name -> a member that takes the file's bytes in order
        self._directory = directory
        self._prefix = prefix
        self._select = select
        self._flags = flags
        self._inotify = INotify()
        # Not MODIFY: an event per write of CRIU's could overflow the queue,
        # and reading on a short timeout keeps up as well.
        self._inotify.add_watch(directory, flags.CREATE | flags.CLOSE_WRITE | flags.MOVED_TO)
        self._seen: list[str] = []       # selected names in the order they appeared
        self._closed: set[str] = set()
        self._handled: set[str] = set()  # streamed, or left for commit()
        self._complete = False           # the writing process has ended
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()   # stop() ends a wait at once, not after FOLLOW_POLL
        self._error: BaseException | None = None
        for name in sorted(os.listdir(directory)):   # made before the watch
            self._saw(name)
        self._thread = threading.Thread(target=self._run, name="ferry-archive-follow", daemon=True)
        self._thread.start()

    def stop(self, complete: bool) -> None:
        self._complete = complete
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self._thread.join()
        self._inotify.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._error is not None:
            raise self._error

    def _saw(self, name: str) -> None:
        if name not in self._seen and self._select(name):
            self._seen.append(name)

    def _events(self, timeout: float) -> None:
        if timeout and not select.select([self._inotify, self._wake_r], [], [], timeout)[0]:
            return
        for event in self._inotify.read(timeout=0):
            if event.mask & self._flags.Q_OVERFLOW:
                raise FollowAbandoned("inotify lost events")
            if event.mask & (self._flags.CREATE | self._flags.MOVED_TO):
                self._saw(event.name)
            if event.mask & self._flags.CLOSE_WRITE and event.name in self._seen:
                self._closed.add(event.name)

    def _run(self) -> None:
        try:
            while True:
                stopping = self._stopping.is_set()
                self._events(0)
                if stopping and not self._complete:
                    return
                name = next((n for n in self._seen if n not in self._handled), None)
                if name is None:
                    if stopping:
                        return
                    self._events(FOLLOW_POLL)
                    continue
                if not self._stream(name, stopping) and not stopping:
                    self._events(FOLLOW_POLL)
        except BaseException as exc:  # handed over by stop()
            self._error = exc

    def _stream(self, name: str, stopping: bool) -> bool:
        """Stream `name` if it is large enough; False when it must wait."""
        path = os.path.join(self._directory, name)
        closed = (stopping and self._complete) or name in self._closed
        try:
            size = os.stat(path, follow_symlinks=False).st_size
        except FileNotFoundError:
            raise FollowAbandoned(f"{name} disappeared") from None
        if size < FOLLOW_MIN:
            if closed:
                self._handled.add(name)   # small: commit() adds it
            return closed
        self._handled.add(name)
        self._copy_while_written(name, path)
        return True

    def _copy_while_written(self, name: str, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            member = self._begin(f"{self._prefix}/{name}")
            digest = blake3.blake3()
            try:
                while True:
                    closed = name in self._closed or (self._stopping.is_set() and self._complete)
                    # Whole frames while the file grows, then the rest.
                    end = os.fstat(fd).st_size
                    frames = (end - member.size) // codecs.FRAME_BYTES * codecs.FRAME_BYTES
                    length = end - member.size if closed else frames
                    if length > 0:
                        member.add(fd, length, digest)
                    if closed:
                        break
                    if self._stopping.is_set() and not self._complete:
                        raise FollowAbandoned("the dump failed")
                    self._events(FOLLOW_POLL)
                member.close()
            except BaseException:
                member.abort()
                raise
            info = os.fstat(fd)
            if info.st_size != member.size:
                raise FollowAbandoned(f"{name} is {info.st_size} bytes, {member.size} were read")
            member.commit(path, digest.hexdigest(), (info.st_ino, info.st_size, info.st_mtime_ns))
        finally:
            os.close(fd)
