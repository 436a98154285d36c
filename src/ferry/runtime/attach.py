"""The attach protocol between the monitor and a client (ferry run, ferry attach).

Frames both ways: 1 byte kind, 4 bytes big-endian length, payload.
Monitor to client: STDOUT, STDERR, EXIT (payload: the exit code as text).
Client to monitor: STDIN, STDIN_EOF, RESIZE (payload: "rows cols").
"""

from __future__ import annotations

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
