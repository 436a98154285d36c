"""The layer unpacker on crafted tars: overlay-form whiteouts, and refusal of
every way a hostile layer could write outside its directory."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile

import pytest
import zstandard

from ferry.image import layers
from ferry.image.digest import of_bytes
from ferry.util.errors import BadArchive
from tests.support.registry import LayerTar

# Without root, trusted.* xattrs cannot be set; user.* shows the same logic.
OPAQUE = layers.OPAQUE_XATTR if os.geteuid() == 0 else "user.overlay.opaque"


def unpack(data: bytes, dest) -> layers.Unpacked:
    os.makedirs(dest, exist_ok=True)
    return layers.unpack_layer(io.BytesIO(data), str(dest), opaque_xattr=OPAQUE)


def test_plain_gzip_and_zstd_give_the_same_diff_id(tmp_path):
    tar = LayerTar().dir("etc").file("etc/motd", b"hi\n").bytes()
    results = [unpack(tar, tmp_path / "plain"),
               unpack(gzip.compress(tar), tmp_path / "gzip"),
               unpack(zstandard.ZstdCompressor().compress(tar), tmp_path / "zstd")]
    assert {r.diff_id for r in results} == {of_bytes(tar)}
    assert results[0].digest == of_bytes(tar)
    assert results[1].digest != results[1].diff_id       # the blob digest is of the gzip stream
    for name in ("plain", "gzip", "zstd"):
        assert (tmp_path / name / "etc" / "motd").read_bytes() == b"hi\n"
    assert results[0].size == len(tar)


def test_metadata_and_links(tmp_path):
    tar = (LayerTar().dir("bin").file("bin/tool", b"#!/bin/sh\n", mode=0o4755)
           .symlink("bin/alias", "/bin/tool").hardlink("bin/same", "bin/tool")
           .dir("locked", mode=0o500).file("locked/inside", b"x").bytes())
    unpack(tar, tmp_path)
    tool = tmp_path / "bin" / "tool"
    if os.geteuid() == 0:
        assert stat.S_IMODE(tool.stat().st_mode) == 0o4755   # set-uid survives the chown
    assert os.readlink(tmp_path / "bin" / "alias") == "/bin/tool"   # absolute targets are kept
    assert os.path.samefile(tool, tmp_path / "bin" / "same")
    assert tool.stat().st_mtime == 1700000000
    assert stat.S_IMODE((tmp_path / "locked").stat().st_mode) == 0o500   # set after its children
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


def test_whiteouts_become_overlay_whiteouts(tmp_path):
    tar = (LayerTar().dir("data").whiteout("data/gone").dir("opq").opaque("opq")
           .file("opq/new", b"n").file(".wh..wh.plnk", b"").bytes())
    unpack(tar, tmp_path)
    gone = os.lstat(tmp_path / "data" / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == os.makedev(0, 0)
    assert not (tmp_path / "data" / ".wh.gone").exists()
    assert os.getxattr(tmp_path / "opq", OPAQUE) == b"y"
    assert sorted(os.listdir(tmp_path / "opq")) == ["new"]
    assert sorted(os.listdir(tmp_path)) == ["data", "opq"]    # aufs bookkeeping is dropped


def test_device_nodes_are_skipped_but_fifos_kept(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, major, minor in (("null", tarfile.CHRTYPE, 1, 3), ("sda", tarfile.BLKTYPE, 8, 0),
                                         ("pipe", tarfile.FIFOTYPE, 0, 0), ("wh", tarfile.CHRTYPE, 0, 0)):
            info = tarfile.TarInfo(name)
            info.type, info.devmajor, info.devminor = kind, major, minor
            tar.addfile(info)
    unpack(buffer.getvalue(), tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["pipe", "wh"]
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)
    assert os.lstat(tmp_path / "wh").st_rdev == os.makedev(0, 0)


def test_later_members_replace_earlier_ones_without_following_links(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    tar = LayerTar().symlink("f", str(outside)).file("f", b"new").bytes()
    unpack(tar, tmp_path / "layer")
    assert outside.read_bytes() == b"keep"
    assert (tmp_path / "layer" / "f").read_bytes() == b"new"
    assert not (tmp_path / "layer" / "f").is_symlink()


@pytest.mark.parametrize("build,needle", [
    (lambda t: t.file("../escape", b"x"), "climbs out"),
    (lambda t: t.file("a/../../escape", b"x"), "climbs out"),
    (lambda t: t.file("/etc/escape", b"x"), "absolute path"),
    (lambda t: t.symlink("evil", "/").file("evil/escape", b"x"), "goes through the symlink"),
    (lambda t: t.symlink("evil", "..").file("evil/escape", b"x"), "goes through the symlink"),
    (lambda t: t.hardlink("h", "../../etc/passwd"), "climbs out"),
    (lambda t: t.hardlink("h", "/etc/passwd"), "absolute path"),
    (lambda t: t.hardlink("h", "missing"), "does not exist in the layer"),
    (lambda t: t.symlink("evil", "/etc").hardlink("h", "evil/passwd"), "goes through the symlink"),
    (lambda t: t.dir("d").hardlink("h", "d"), "points at a directory"),
    (lambda t: t.file("f", b"x").file("f/under", b"y"), "non-directory"),
], ids=["dotdot", "nested-dotdot", "absolute", "abs-symlink-escape", "rel-symlink-escape",
        "hardlink-dotdot", "hardlink-absolute", "hardlink-missing", "hardlink-via-symlink",
        "hardlink-dir", "under-file"])
def test_hostile_members_are_refused(tmp_path, build, needle):
    layer = tmp_path / "layer"
    with pytest.raises(BadArchive) as refused:
        unpack(build(LayerTar()).bytes(), layer)
    assert needle in refused.value.message
    assert refused.value.hint
    assert sorted(os.listdir(tmp_path)) == ["layer"]     # nothing written beside the layer
    assert not os.path.exists("/etc/escape")


@pytest.mark.parametrize("damage", ["truncate", "garbage-gzip", "not-a-tar"])
def test_corrupt_streams_are_bad_archives(tmp_path, damage):
    tar = LayerTar().file("big", os.urandom(100_000)).bytes()
    data = {"truncate": gzip.compress(tar)[:5000],
            "garbage-gzip": b"\x1f\x8b" + os.urandom(3000),
            "not-a-tar": os.urandom(3000)}[damage]
    with pytest.raises(BadArchive) as refused:
        unpack(data, tmp_path / "layer")
    assert "not a readable tar stream" in refused.value.message


def test_safe_relpath():
    assert layers.safe_relpath("./a//b/./c") == "a/b/c"
    assert layers.safe_relpath("./") == ""
    with pytest.raises(BadArchive):
        layers.safe_relpath("a/../../b")
