"""Advisory file locks (flock) for work that spans more than one SQLite row:
mounts, netns, nftables, and a container's state changes. Root-scoped locks
live under the root; machine-wide locks (a bridge or nft table shared by
several roots) live under /run/ferry.

A flock belongs to an open file, so the kernel drops it when its process dies:
a lock left by a killed command is free at once, never stale."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from ferry.util.errors import Conflict

MACHINE_LOCK_DIR = "/run/ferry/locks"
POLL = 0.05

_held: dict[str, list] = {}   # path -> [fd, depth]: the locks this process holds


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def machine_lock(name: str) -> contextlib.AbstractContextManager[None]:
    return file_lock(os.path.join(MACHINE_LOCK_DIR, f"{name}.lock"))


class Busy(Conflict):
    """Another command holds the lock."""


@contextlib.contextmanager
def owned_lock(path: str, owner: str, *, wait: float, busy_message: str) -> Iterator[None]:
    """An exclusive lock that names its holder (`owner`, with our pid) in its
    file, so that a command that waits `wait` seconds in vain can say who has
    it (Busy). Re-entrant within this process."""
    if path in _held:
        _held[path][1] += 1
        try:
            yield
        finally:
            _held[path][1] -= 1
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    raise Busy(busy_message + (f": {holder} is working on it" if holder else ""),
                               hint="wait for it to finish, then try again") from None
                time.sleep(POLL)
        with contextlib.suppress(OSError):   # only a courtesy to waiters: a full disk must not stop us
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {owner}\n".encode(), 0)
        _held[path] = [fd, 1]
        try:
            yield
        finally:
            del _held[path]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_locked(path: str) -> bool:
    """Whether some process (this one included) holds the lock at `path` now."""
    if path in _held:
        return True
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)   # closing drops a lock we took just now
    return False


def _holder(fd: int) -> str:
    """`ferry COMMAND (pid N)` from a lock file, or "" if it says nothing usable."""
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    pid, _, owner = text.partition(" ")
    if not pid.isdigit() or not owner.isprintable():
        return ""
    return f"{owner} (pid {pid})"
