"""Where an archive goes or comes from: a file, or a stream.

`-` is stdout for a checkpoint and stdin for a restore. A path that names a
FIFO or a character device (/dev/stdout when it is a pipe), or the very file
stdout is, is a stream too: written or read front to back, never replaced by
a rename. Any other path is a file, which the writer replaces atomically.
"""

from __future__ import annotations

import os
import stat

from ferry.util.errors import FerryError, NotFound, UsageError, from_os_error

STDIO = "-"


class Endpoint:
    __slots__ = ("target", "name", "owned_fd")

    def __init__(self, target: str | int, name: str, owned_fd: int = -1):
        self.target = target        # what ArchiveWriter or ArchiveReader takes: a path, or a file descriptor
        self.name = name            # how messages name it
        self.owned_fd = owned_fd    # a descriptor this endpoint opened, closed by close()

    def __repr__(self) -> str:
        return f"Endpoint({self.target!r}, {self.name!r})"

    @property
    def stream(self) -> bool:
        return isinstance(self.target, int)

    def close(self) -> None:
        if self.owned_fd >= 0:
            os.close(self.owned_fd)
            self.owned_fd = -1

    def __enter__(self) -> "Endpoint":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def export_endpoint(path: str) -> Endpoint:
    """Where a checkpoint's archive goes. Opening a FIFO waits for its reader."""
    if is_stdout(path):
        return _not_a_terminal(Endpoint(1, "stdout"), "write", "to")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return Endpoint(path, path)
    except OSError as exc:
        raise from_os_error(exc, f"cannot write {path}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"cannot write {path}: it is a directory", hint="give the archive's file name")
    if stat.S_ISREG(info.st_mode):
        return Endpoint(path, path)
    fd = _open(path, os.O_WRONLY, "write")
    return _not_a_terminal(Endpoint(fd, path, owned_fd=fd), "write", "to")


def import_endpoint(path: str) -> Endpoint:
    """Where a restore's archive comes from."""
    if path == STDIO:
        return _not_a_terminal(Endpoint(0, "stdin"), "read", "from")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"checkpoint archive {path} does not exist") from None
    except OSError as exc:
        raise from_os_error(exc, f"cannot read {path}") from None
    if stat.S_ISREG(info.st_mode):
        return Endpoint(path, path)
    if not (stat.S_ISFIFO(info.st_mode) or stat.S_ISCHR(info.st_mode)):
        raise FerryError(f"{path} is not a file", hint="give the checkpoint archive's path")
    fd = _open(path, os.O_RDONLY, "read")
    return _not_a_terminal(Endpoint(fd, path, owned_fd=fd), "read", "from")


def is_stream(path: str) -> bool:
    """Whether export_endpoint(path) streams rather than writes a file."""
    if is_stdout(path):
        return True
    try:
        info = os.stat(path)
    except OSError:
        return False
    return not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode))


def is_stdout(path: str | None) -> bool:
    """Whether `path` is this process's stdout: `-`, /dev/stdout, /dev/fd/1,
    or the file stdout was redirected to."""
    if path == STDIO:
        return True
    if not path:
        return False
    try:
        target, stdout = os.stat(path), os.fstat(1)
    except OSError:   # no such file yet, or no stdout
        return False
    return (target.st_dev, target.st_ino) == (stdout.st_dev, stdout.st_ino)


def _open(path: str, flags: int, verb: str) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise from_os_error(exc, f"cannot {verb} {path}") from None


def _not_a_terminal(endpoint: Endpoint, verb: str, preposition: str) -> Endpoint:
    if os.isatty(endpoint.target):
        endpoint.close()
        raise FerryError(f"will not {verb} a checkpoint archive {preposition} a terminal ({endpoint.name})",
                         hint="redirect it to a file or a pipe" if verb == "write" else
                         "pipe the archive in, or give its path")
    return endpoint
