"""The destination's side of pages pushed to its page server: what it accepts
beside the archive's images, before CRIU restores from the two together."""

import os

import pytest

from ferry.checkpoint.pagepush import merge_images
from ferry.engine.migrations import _bind_address
from ferry.util.errors import BadArchive


@pytest.fixture
def dirs(tmp_path):
    received, archived = tmp_path / "received", tmp_path / "archived"
    received.mkdir()
    archived.mkdir()
    (received / "pagemap-1.img").write_bytes(b"map")
    (received / "pages-65537.img").write_bytes(b"\0" * 4096)
    (received / "pagemap-shmem-9.img").write_bytes(b"map")
    (archived / "core-1.img").write_bytes(b"core")
    (archived / "inventory.img").write_bytes(b"inv")
    return received, archived


def test_the_archive_s_images_join_the_received_pages(dirs):
    received, archived = dirs
    merge_images(str(received), str(archived))
    assert sorted(os.listdir(received)) == ["core-1.img", "inventory.img", "pagemap-1.img",
                                            "pagemap-shmem-9.img", "pages-65537.img"]
    assert os.listdir(archived) == []


@pytest.mark.parametrize("name", ["core-1.img", "pages-1.img.tmp", "pagemap-x.img", "pagemap-.img", "stats-dump"])
def test_a_file_the_page_server_could_not_have_written_is_refused(dirs, name):
    received, archived = dirs
    (received / name).write_bytes(b"x")
    with pytest.raises(BadArchive, match="unexpected file"):
        merge_images(str(received), str(archived))
    assert os.path.exists(archived / "core-1.img")   # nothing moved


def test_a_link_among_the_pages_is_refused(dirs, tmp_path):
    received, archived = dirs
    (tmp_path / "elsewhere").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere", received / "pages-2.img")
    with pytest.raises(BadArchive, match="unexpected file"):
        merge_images(str(received), str(archived))


def test_no_pages_at_all_is_refused(dirs):
    received, archived = dirs
    for name in os.listdir(received):
        os.unlink(received / name)
    with pytest.raises(BadArchive, match="sent no pages"):
        merge_images(str(received), str(archived))


@pytest.mark.parametrize("name", ["pages-65537.img", "pagemap-7.img"])
def test_pages_in_the_archive_as_well_are_refused(dirs, name):
    received, archived = dirs
    (archived / name).write_bytes(b"x")
    with pytest.raises(BadArchive, match="came apart"):
        merge_images(str(received), str(archived))


@pytest.mark.parametrize("given, bound", [("10.0.0.5", "10.0.0.5"), ("127.0.0.1", "127.0.0.1"),
                                          ("testserver", "0.0.0.0"), (None, "0.0.0.0"), ("::1", "0.0.0.0")])
def test_the_page_server_binds_where_the_source_reached_the_agent(given, bound):
    assert _bind_address(given) == bound
