"""Advisory file locks (flock) for work that spans more than one SQLite row:
mounts, netns, nftables. Root-scoped locks live under the root; machine-wide
locks (a bridge or nft table shared by several roots) live under /run/ferry."""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator

MACHINE_LOCK_DIR = "/run/ferry/locks"


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
