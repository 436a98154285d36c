"""Helpers for the pipes and helper processes that stream bytes: whole
writes, bigger pipe buffers, early writeback and reaping a helper."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess

PIPE_SIZE = 1 << 20   # the archive codecs' CHUNK: one pipe transfer per chunk


def write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def end_process(process: subprocess.Popen) -> None:
    """Kill `process` if it still runs, reap it, and close our ends of its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def grow_pipe(fd: int) -> None:
    # Fewer, larger pipe transfers; fs.pipe-max-size may not allow it, which is fine.
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = None


def start_writeback(fd: int) -> None:
    """Have the kernel start writing the file out now, so that the fsync at
    the end waits for the last frames only, not the whole archive."""
    global _sync_file_range
    if _sync_file_range is None:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        _sync_file_range = libc.sync_file_range
        _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    _sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)   # a hint: its failure changes nothing
