"""The disk margin ferry leaves free, and writes bounded by it."""

from __future__ import annotations

import io
import os
from collections import namedtuple

import pytest

from ferry.util import space
from ferry.util.errors import DiskFull

StatVfs = namedtuple("StatVfs", "f_bsize f_frsize f_blocks f_bfree f_bavail f_files f_ffree")
MiB = 1 << 20


def vfs(total: int, free: int) -> StatVfs:
    return StatVfs(4096, 4096, total // 4096, free // 4096, free // 4096, 1000, 500)


@pytest.mark.parametrize("total, expected", [
    (100 << 30, space.DISK_MARGIN),   # a large disk keeps the whole margin free
    (64 * MiB, 64 * MiB // 20),       # a small one a twentieth of itself
])
def test_margin(monkeypatch, total, expected):
    monkeypatch.setattr(os, "statvfs", lambda path: vfs(total, total // 2))
    assert space.margin("/anywhere") == expected


def test_a_bounded_write_stops_before_the_margin_and_writes_nothing_more(monkeypatch):
    monkeypatch.setattr(os, "statvfs", lambda path: vfs(64 * MiB, 5 * MiB))   # margin 3.2 MiB: 1.8 MiB may go
    sink = io.BytesIO()
    bounded = space.BoundedWriter(sink, "/state/tmp", "cannot copy stdin")
    bounded.write(b"x" * MiB)
    with pytest.raises(DiskFull) as stopped:
        bounded.write(b"x" * MiB)
    assert stopped.value.message == ("cannot copy stdin: stopped after 1.0 MiB, as more would leave less than "
                                     "3.2 MiB free under /state/tmp")
    assert "/state/tmp" in stopped.value.hint
    assert sink.getbuffer().nbytes == MiB


def test_a_bounded_write_looks_at_free_space_again_as_it_goes(monkeypatch):
    """Another writer on the same filesystem takes room meanwhile: the bound
    follows what statvfs says every RECHECK_EVERY bytes, not what it said first."""
    free = [100 * MiB]
    monkeypatch.setattr(os, "statvfs", lambda path: vfs(1 << 30, free[0]))   # margin 51.2 MiB
    bounded = space.BoundedWriter(io.BytesIO(), "/state/tmp", "cannot copy stdin")
    for _ in range(space.RECHECK_EVERY // MiB):
        bounded.write(b"x" * MiB)
    # what ferry wrote is gone from the free count, and a neighbour took 40 MiB more
    free[0] -= space.RECHECK_EVERY + 40 * MiB
    with pytest.raises(DiskFull):
        bounded.write(b"x" * MiB)
    assert bounded.written == space.RECHECK_EVERY
