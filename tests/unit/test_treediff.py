"""The overlay diff format of rootfs-diff.tar and volume tars: an upper dir
round-trips with its files, dirs, links, whiteouts and opaque dirs, and a
hostile diff or deleted list is refused without touching anything outside
the target."""

from __future__ import annotations

import os
import socket
import stat
import tarfile

import pytest

from ferry.checkpoint.archive.treediff import apply_tree_diff, image_names_below, write_tree_diff
from ferry.image import layers
from ferry.util.errors import BadArchive
from tests.support.registry import LayerTar

# Without root, trusted.* xattrs cannot be set; user.* (overlayfs's userxattr) shows the same logic.
OPAQUE = layers.OPAQUE_XATTR if os.geteuid() == 0 else "user.overlay.opaque"
WHITEOUT = os.makedev(0, 0)


def _whiteout(path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, WHITEOUT)


def _is_whiteout(path) -> bool:
    info = os.lstat(path)
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == WHITEOUT


def _listing(directory) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), directory) for d, dirs, files in os.walk(directory)
            for n in dirs + files}


@pytest.fixture
def upper(tmp_path):
    """An overlay upper dir as a container leaves it."""
    root = tmp_path / "upper"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "motd").write_bytes(b"hello\n")
    (root / "etc" / "secret").write_bytes(b"key")
    os.chmod(root / "etc" / "secret", 0o600)
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "bin" / "tool", 0o755)
    os.link(root / "bin" / "tool", root / "bin" / "same")
    os.symlink("/bin/tool", root / "bin" / "alias")
    os.symlink("../etc/motd", root / "bin" / "motd-link")
    (root / "empty").mkdir(mode=0o700)
    _whiteout(root / "etc" / "gone")                  # deleted from the image's layers
    (root / "var" / "cache").mkdir(parents=True)      # replaced whole: lower layers' files stay hidden
    os.setxattr(root / "var" / "cache", OPAQUE, b"y")
    (root / "var" / "cache" / "new").write_bytes(b"n")
    with socket.socket(socket.AF_UNIX) as sock:      # sockets do not travel
        sock.bind(str(root / "var" / "sock"))
    return root


def test_an_upper_dir_round_trips(tmp_path, upper):
    tar_path = tmp_path / "rootfs-diff.tar"
    deleted = write_tree_diff(str(upper), str(tar_path), opaque_xattr=OPAQUE)
    assert deleted == ["etc/gone", "var/cache"]
    assert stat.S_IMODE(os.stat(tar_path).st_mode) == 0o600
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
    assert "etc/gone" not in names and "var/sock" not in names
    assert "var/cache/.wh..wh..opq" in names       # the OCI opaque entry

    target = tmp_path / "restored"
    target.mkdir(mode=0o755)
    apply_tree_diff(str(tar_path), str(target), tuple(deleted), opaque_xattr=OPAQUE)
    assert _listing(target) == _listing(upper) - {"var/sock"}
    assert (target / "etc" / "motd").read_bytes() == b"hello\n"
    assert stat.S_IMODE(os.stat(target / "etc" / "secret").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(target / "bin" / "tool").st_mode) == 0o755
    assert os.path.samefile(target / "bin" / "tool", target / "bin" / "same")
    assert os.readlink(target / "bin" / "alias") == "/bin/tool"
    assert os.readlink(target / "bin" / "motd-link") == "../etc/motd"
    assert (target / "empty").is_dir() and os.listdir(target / "empty") == []
    assert _is_whiteout(target / "etc" / "gone")
    assert os.getxattr(target / "var" / "cache", OPAQUE) == b"y"
    assert os.listdir(target / "var" / "cache") == ["new"]   # the opaque dir is kept, not whited out
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755


def test_for_podman_an_opaque_dir_lists_what_it_hides_of_the_image(tmp_path, upper):
    """podman unpacks, then deletes what deleted.files lists: an opaque dir
    goes as a plain dir, and the image's names below it that it does not hold
    again are listed; ferry makes each a whiteout, which hides the same."""
    lower, top = tmp_path / "layer0", tmp_path / "layer1"
    for layer in (lower, top):
        (layer / "var" / "cache").mkdir(parents=True)
    (lower / "var" / "cache" / "old").write_bytes(b"o")
    (lower / "var" / "cache" / "new").write_bytes(b"shadowed")
    (lower / "var" / "cache" / "removed").write_bytes(b"r")
    _whiteout(top / "var" / "cache" / "removed")         # a higher layer deleted it already
    (top / "var" / "cache" / "top").write_bytes(b"t")
    layers_ = [str(lower), str(top)]
    assert image_names_below(layers_, "var/cache", opaque_xattr=OPAQUE) == {"old", "new", "top"}
    tar_path = tmp_path / "rootfs-diff.tar"
    deleted = write_tree_diff(str(upper), str(tar_path), opaque_xattr=OPAQUE,
                              hidden_below=lambda rel: image_names_below(layers_, rel, opaque_xattr=OPAQUE))
    assert deleted == ["etc/gone", "var/cache/old", "var/cache/top"]
    with tarfile.open(tar_path) as tar:
        assert "var/cache/.wh..wh..opq" not in tar.getnames() and "var/cache/new" in tar.getnames()
    target = tmp_path / "restored"
    target.mkdir()
    apply_tree_diff(str(tar_path), str(target), tuple(deleted), opaque_xattr=OPAQUE)
    assert sorted(os.listdir(target / "var" / "cache")) == ["new", "old", "top"]
    assert _is_whiteout(target / "var" / "cache" / "old") and _is_whiteout(target / "var" / "cache" / "top")
    assert (target / "var" / "cache" / "new").read_bytes() == b"n"


def test_image_names_below_stop_at_an_opaque_layer_and_never_leave_it(tmp_path):
    lower, top = tmp_path / "layer0", tmp_path / "layer1"
    (lower / "etc" / "apt").mkdir(parents=True)
    (lower / "etc" / "apt" / "hidden").write_bytes(b"h")
    (top / "etc" / "apt").mkdir(parents=True)
    os.setxattr(top / "etc" / "apt", OPAQUE, b"y")
    (top / "etc" / "apt" / "seen").write_bytes(b"s")
    assert image_names_below([str(lower), str(top)], "etc/apt", opaque_xattr=OPAQUE) == {"seen"}
    os.symlink("/etc", top / "escape")
    assert image_names_below([str(lower), str(top)], "escape", opaque_xattr=OPAQUE) == set()


def test_deleted_paths_become_whiteouts_under_new_parents(tmp_path):
    tar_path = tmp_path / "diff.tar"
    tar_path.write_bytes(LayerTar().file("kept", b"k").bytes())
    target = tmp_path / "upper"
    target.mkdir()
    apply_tree_diff(str(tar_path), str(target), ("usr/share/doc/gone", "kept"), opaque_xattr=OPAQUE)
    assert _is_whiteout(target / "usr" / "share" / "doc" / "gone")
    assert (target / "kept").read_bytes() == b"k"    # what the diff holds is never whited out


def test_a_missing_tree_is_an_empty_diff(tmp_path):
    tar_path = tmp_path / "diff.tar"
    assert write_tree_diff(str(tmp_path / "absent"), str(tar_path)) == []
    with tarfile.open(tar_path) as tar:
        assert tar.getnames() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make device nodes")
def test_device_nodes_do_not_travel(tmp_path):
    tree = tmp_path / "upper"
    tree.mkdir()
    os.mknod(tree / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    tar_path = tmp_path / "diff.tar"
    assert write_tree_diff(str(tree), str(tar_path)) == []
    with tarfile.open(tar_path) as tar:
        assert tar.getnames() == []


# ---- hostile diffs -----------------------------------------------------------

@pytest.mark.parametrize("build, deleted, needle", [
    (lambda t: t.file("../escape", b"x"), (), "climbs out"),
    (lambda t: t.file("a/../../escape", b"x"), (), "climbs out"),
    (lambda t: t.file("/escape", b"x"), (), "absolute path"),
    (lambda t: t.symlink("evil", "..").file("evil/escape", b"x"), (), "goes through the symlink"),
    (lambda t: t.symlink("evil", "/").file("evil/escape", b"x"), (), "goes through the symlink"),
    (lambda t: t.hardlink("h", "../../escape"), (), "climbs out"),
    (lambda t: t.file("ok", b"x"), ("../escape",), "climbs out"),
    (lambda t: t.file("ok", b"x"), ("/escape",), "absolute path"),
])
def test_hostile_diffs_are_refused(tmp_path, build, deleted, needle):
    base = tmp_path / "base"
    target = base / "upper"
    target.mkdir(parents=True)
    tar_path = tmp_path / "diff.tar"
    tar_path.write_bytes(build(LayerTar()).bytes())
    with pytest.raises(BadArchive, match=needle) as caught:
        apply_tree_diff(str(tar_path), str(target), deleted, opaque_xattr=OPAQUE)
    assert "\n" not in caught.value.message and caught.value.hint
    assert os.listdir(base) == ["upper"] and not os.path.lexists(tmp_path / "escape")


def test_a_deleted_path_through_a_symlink_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "upper"
    target.mkdir()
    tar_path = tmp_path / "diff.tar"
    tar_path.write_bytes(LayerTar().symlink("lnk", str(outside)).bytes())
    apply_tree_diff(str(os.path.realpath(tar_path)), os.path.realpath(target), ("lnk/victim",), opaque_xattr=OPAQUE)
    assert os.listdir(outside) == []
    assert os.readlink(target / "lnk") == str(outside)


# Cut in the first header or in the data. tarfile takes a cut inside a later
# header for the end of the tar; the archive's digests cover the member whole.
@pytest.mark.parametrize("cut", [10, 1100, 2500])
def test_a_truncated_diff_is_refused(tmp_path, cut):
    data = LayerTar().dir("d").file("d/f", b"x" * 2000).bytes()
    tar_path = tmp_path / "diff.tar"
    tar_path.write_bytes(data[:cut])
    target = tmp_path / "upper"
    target.mkdir()
    with pytest.raises(BadArchive, match="not a readable tar stream") as caught:
        apply_tree_diff(str(tar_path), str(target), (), opaque_xattr=OPAQUE)
    assert "\n" not in caught.value.message
