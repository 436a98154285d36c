"""The attach protocol between the monitor and a client (ferry run, ferry attach).

Frames both ways: 1 byte kind, 4 bytes big-endian length, payload.
Monitor to client: STDOUT, STDERR, EXIT (payload: the exit code as text).
Client to monitor: STDIN, STDIN_EOF, RESIZE (payload: "rows cols").
"""

from __future__ import annotations

import os
import struct

STDIN, STDIN_EOF, RESIZE = 0, 4, 5
STDOUT, STDERR, EXIT = 1, 2, 3
HEADER = struct.Struct(">BI")


def frame(kind: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class FrameReader:
    """Reassembles frames from a byte stream that arrives in arbitrary pieces."""

    def __init__(self):
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < HEADER.size + length:
                break
            frames.append((kind, self.buffer[HEADER.size:HEADER.size + length]))
            self.buffer = self.buffer[HEADER.size + length:]
        return frames


# sun_path holds 108 bytes, and state roots can be deep (pytest's tmp dirs are).
MAX_SOCKET_PATH = 100


class SocketPath:
    """A unix socket path short enough for bind/connect, however deep its directory.

    Long paths go through /proc/<pid>/fd/<dirfd>/NAME, which the kernel resolves
    to the directory; the fd stays open while this object lives.
    """

    def __init__(self, path: str):
        self.dir_fd = None
        if len(path.encode()) < MAX_SOCKET_PATH:
            self.path = path
            return
        directory, name = os.path.split(path)
        self.dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.path = f"/proc/{os.getpid()}/fd/{self.dir_fd}/{name}"

    def close(self) -> None:
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    def __enter__(self) -> "SocketPath":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
