"""ferry reads CRIU's stats images itself; pycriu, which decodes them too,
is the reference."""

from __future__ import annotations

import struct

import pytest

from ferry.checkpoint import criu
from ferry.util.errors import NotFound

stats_pb2 = pytest.importorskip("pycriu.images.stats_pb2", reason="pycriu is built by 'make setup'")


def _image(entry, magic=(criu.IMG_SERVICE_MAGIC, criu.STATS_MAGIC)) -> bytes:
    body = entry.SerializeToString()
    return b"".join(struct.pack("<I", m) for m in magic) + struct.pack("<I", len(body)) + body


def _dump_entry():
    entry = stats_pb2.stats_entry()
    d = entry.dump
    d.freezing_time, d.frozen_time, d.memdump_time, d.memwrite_time = 1940, 70510, 3303, 1523
    d.pages_scanned, d.pages_skipped_parent, d.pages_written, d.pages_lazy = 298981, 3, 2**40 + 5, 7
    d.irmap_resolve, d.page_pipes, d.shpages_written = 9, 11, 13
    return entry


def test_dump_stats_match_pycriu(tmp_path):
    (tmp_path / "stats-dump").write_bytes(_image(_dump_entry()))
    from pycriu import images
    with open(tmp_path / "stats-dump", "rb") as f:
        reference = images.load(f)["entries"][0]["dump"]
    stats = criu.read_dump_stats(str(tmp_path))
    assert stats == criu.DumpStats(*(int(reference[name]) for name in criu.DUMP_FIELDS))
    assert stats.pages_written == 2**40 + 5


def test_restore_stats_match_pycriu(tmp_path):
    entry = stats_pb2.stats_entry()
    r = entry.restore
    r.pages_compared, r.pages_skipped_cow, r.forking_time, r.restore_time, r.pages_restored = 1, 2, 3, 834145, 298848
    (tmp_path / "stats-restore").write_bytes(_image(entry))
    assert criu.read_restore_stats(str(tmp_path)) == criu.RestoreStats(3, 834145, 298848)


@pytest.mark.parametrize("data, match", [
    (b"", "stats-dump"),
    (_image(_dump_entry(), magic=(criu.IMG_SERVICE_MAGIC, 0x12345678)), "not a stats image"),
    (_image(_dump_entry())[:-3], "truncated"),
    (_image(stats_pb2.stats_entry()), "no dump statistics"),
])
def test_unreadable_stats_are_named(tmp_path, data, match):
    (tmp_path / "stats-dump").write_bytes(data)
    with pytest.raises(NotFound, match=match):
        criu.read_dump_stats(str(tmp_path))
