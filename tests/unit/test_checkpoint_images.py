"""Checkpoint images without root: a layer read back as its archive
(layerstream), what marks an image as a checkpoint this host can restore,
the annotations ferry writes, and where `push` may send an image."""

from __future__ import annotations

import json
import os
import random
import tarfile
from types import SimpleNamespace

import pytest

from ferry.checkpoint.archive import ArchiveReader, write_archive
from ferry.checkpoint.archive.layerstream import archive_order, layer_endpoint, layer_files
from ferry.engine import checkpoint_images
from ferry.image import push
from ferry.image.manifest import annotations_of, host_architecture
from ferry.util.errors import BadArchive, Incompatible, UsageError
from tests.support.cli import image_store
from tests.support.registry import LayerTar
from tests.unit.test_archive import CONTAINER, HOST  # noqa: F401
from tests.unit.test_archive_v3 import keypair


def _unpacked(archive_path: str, layer_dir, order=None) -> str:
    """The archive's members as files, as the image store unpacks a layer
    (in `order`, a stand-in for buildah's re-tar, when given)."""
    with tarfile.open(archive_path) as tar:
        members = [m for m in tar.getmembers() if m.isreg()]
        for member in (order(members) if order else members):
            target = layer_dir / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return str(layer_dir)


@pytest.fixture
def signed_layer(tmp_path):
    source = tmp_path / "source"
    files = {"config.dump": b"{}", "checkpoint/inventory.img": b"inv" * 100, "checkpoint/pages-1.img": os.urandom(9000),
             "rootfs-diff.tar": b"\0" * 1024}
    for name, data in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    owner, owner_pub = keypair(str(tmp_path), "owner")
    path = write_archive(str(tmp_path / "a.tar"), str(source), list(files), container=CONTAINER, compression="none",
                         host=HOST, signer=owner).path
    return path, files, owner_pub


def _read(layer: str, dest, verify_key=None):
    with layer_endpoint(layer, "checkpoint image test") as source, ArchiveReader(source.target) as reader:
        return reader.extract(str(dest), verify_key=verify_key)


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_ferry_layer_reads_back_as_its_signed_archive_in_any_order(tmp_path, signed_layer, shuffle):
    path, files, owner_pub = signed_layer
    order = (lambda members: random.Random(7).sample(members, len(members))) if shuffle else None
    layer = _unpacked(path, tmp_path / "layer", order)
    contents = _read(layer, tmp_path / "dest", verify_key=owner_pub)
    assert contents.verified and contents.signed
    for name, data in files.items():
        assert (tmp_path / "dest" / name).read_bytes() == data


def test_a_changed_byte_in_a_layer_is_caught_by_the_trailer(tmp_path, signed_layer):
    path, _, owner_pub = signed_layer
    layer = _unpacked(path, tmp_path / "layer")
    pages = tmp_path / "layer" / "checkpoint" / "pages-1.img"
    data = bytearray(pages.read_bytes())
    data[100] ^= 1
    pages.write_bytes(bytes(data))
    with pytest.raises(BadArchive, match="pages-1.img: checksum mismatch"):
        _read(layer, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_an_extra_file_in_a_ferry_layer_is_refused(tmp_path, signed_layer):
    path, _, _ = signed_layer
    layer = _unpacked(path, tmp_path / "layer")
    (tmp_path / "layer" / "checkpoint" / "extra.img").write_bytes(b"smuggled")
    with pytest.raises(BadArchive, match="member checkpoint/extra.img: "):
        _read(layer, tmp_path / "dest")


def test_podman_s_layout_goes_config_dump_first(tmp_path):
    for name in ("artifacts/x", "checkpoint/core-1.img", "config.dump", "spec.dump"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    files = layer_files(str(tmp_path), "image")
    assert archive_order(str(tmp_path), files, "image")[0] == "config.dump"
    assert sorted(archive_order(str(tmp_path), files, "image")) == sorted(files)


def test_a_layer_without_a_checkpoint_is_named_so(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hostname").write_bytes(b"x")
    with pytest.raises(BadArchive, match="holds no checkpoint"):
        archive_order(str(tmp_path), layer_files(str(tmp_path), "image X"), "image X")


@pytest.mark.parametrize("kind", ["symlink", "fifo", "whiteout", "deep"])
def test_only_regular_files_travel(tmp_path, kind):
    (tmp_path / "config.dump").write_bytes(b"{}")
    target = tmp_path / "checkpoint" / "pages-1.img"
    target.parent.mkdir()
    if kind == "symlink":
        target.symlink_to("/etc/shadow")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "whiteout":
        os.mknod(target, 0o600 | 0o020000, os.makedev(0, 0)) if os.geteuid() == 0 else target.symlink_to("x")
    else:
        deep = tmp_path / "/".join(["d"] * 12)
        deep.mkdir(parents=True)
        (deep / "f").write_bytes(b"x")
    with pytest.raises(BadArchive, match="its layer holds"):
        layer_files(str(tmp_path), "image X")


# ---- what marks a checkpoint image ------------------------------------------------------

class FakeImages:
    def __init__(self, annotations, architecture="", layers=1, layer_dir="/"):
        self.image = SimpleNamespace(architecture=architecture or host_architecture(), layers=("l",) * layers)
        self._annotations = annotations
        self._layer_dir = layer_dir
        self.pulled = []

    def annotations(self, image):
        return self._annotations

    def layer_paths(self, image):
        return [self._layer_dir]

    def get(self, text):
        from ferry.util.errors import NotFound
        raise NotFound(f"image {text!r} not found")

    def pull(self, text, **options):
        self.pulled.append((text, options))
        return self.image


@pytest.mark.parametrize("key", checkpoint_images.NAME_KEYS)
def test_any_engine_s_name_annotation_marks_a_checkpoint(tmp_path, key):
    images = FakeImages({key: "web"}, layer_dir=str(tmp_path))
    assert checkpoint_images.checkpoint_layer(images, images.image, "x") == str(tmp_path)


def test_unmarked_foreign_and_layered_images_are_refused():
    with pytest.raises(BadArchive, match="image is not a checkpoint"):
        checkpoint_images.checkpoint_layer(FakeImages({"other": "x"}), FakeImages({}).image, "x")
    other_arch = "arm64" if host_architecture() != "arm64" else "amd64"
    images = FakeImages({checkpoint_images.NAME_KEYS[0]: "web"}, architecture=other_arch)
    with pytest.raises(Incompatible, match=f"made on {other_arch}"):
        checkpoint_images.checkpoint_layer(images, images.image, "x")
    # The annotation of the host it was made on counts too, whatever the config says.
    images = FakeImages({checkpoint_images.NAME_KEYS[1]: "web", "org.criu.checkpoint.host.arch": other_arch})
    with pytest.raises(Incompatible, match=f"made on {other_arch}"):
        checkpoint_images.checkpoint_layer(images, images.image, "x")
    images = FakeImages({checkpoint_images.NAME_KEYS[0]: "web"}, layers=2)
    with pytest.raises(BadArchive, match="has 2 layers"):
        checkpoint_images.checkpoint_layer(images, images.image, "x")


def test_only_names_with_a_registry_are_pulled():
    images = FakeImages({})
    assert checkpoint_images.find(images, "web") is None                     # a short name: never pulled
    assert checkpoint_images.find(images, "localhost/web:1") is None         # the local registry
    assert checkpoint_images.find(images, "Not A Reference") is None
    assert checkpoint_images.find(images, "127.0.0.1:5000/ckpt/web:v1", tls_verify=False) is images.image
    assert images.pulled == [("127.0.0.1:5000/ckpt/web:v1", {"tls_verify": False, "creds": None})]


def test_annotations_are_podman_s_and_checkpointctl_s():
    head = SimpleNamespace(host=SimpleNamespace(arch="x86_64", kernel="6.1.0", criu_version="4.2.1",
                                                runc_version="1.1.5", cgroup_mode="hybrid"),
                           container={"name": "web", "image": "localhost/busybox:latest", "image_id": "a" * 64})
    found = checkpoint_images.annotations_for(head)
    assert found["io.podman.annotations.checkpoint.name"] == found["org.criu.checkpoint.container.name"] == "web"
    assert found["io.podman.annotations.checkpoint.rootfsImageID"] == "a" * 64
    assert found["org.criu.checkpoint.rootfsImageName"] == "localhost/busybox:latest"
    assert found["io.podman.annotations.checkpoint.criu.version"] == "40201"
    assert found["io.podman.annotations.checkpoint.host.arch"] == "amd64"
    assert found["io.podman.annotations.checkpoint.cgroups.version"] == "v1"
    assert found["org.criu.checkpoint.engine.name"] == "ferry"
    assert all(isinstance(v, str) for v in found.values())


def test_manifest_annotations_are_strings_and_bounded():
    assert annotations_of(b"not json") == {}
    assert annotations_of(b'{"annotations": ["x"]}') == {}
    assert annotations_of(json.dumps({"annotations": {"a": "1", "b": 2, "c": "x" * (70 << 10)}}).encode()) == \
        {"a": "1"}
    many = {f"k{i:04}": "v" for i in range(1000)}
    assert len(annotations_of(json.dumps({"annotations": many}).encode())) == 256


# ---- the store: tag, save, commit, push's destination --------------------------------

@pytest.fixture
def store(tmp_path):
    with image_store(str(tmp_path / "root")) as opened:
        yield opened


@pytest.fixture
def other_store(tmp_path):
    with image_store(str(tmp_path / "other")) as opened:
        yield opened


def _checkpoint_image(store, tmp_path):
    layer = LayerTar().file("config.dump", b"{}").file("checkpoint/inventory.img", b"inv").bytes()
    path = tmp_path / "ckpt.tar"
    path.write_bytes(layer)
    return store.commit_checkpoint(str(path), "ckpt", {"io.podman.annotations.checkpoint.name": "web"})


def test_a_committed_checkpoint_image_has_one_layer_and_its_annotations(store, tmp_path):
    image = _checkpoint_image(store, tmp_path)
    assert image.names == ("localhost/ckpt:latest",) and len(image.layers) == 1
    assert store.inspect("ckpt")["Annotations"] == {"io.podman.annotations.checkpoint.name": "web"}
    assert image.architecture == host_architecture()


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_then_load_keeps_the_id_and_oci_keeps_the_annotations(store, other_store, tmp_path, fmt):
    image = _checkpoint_image(store, tmp_path)
    saved = str(tmp_path / "saved.tar")
    store.save(["ckpt"], saved, fmt)
    loaded = other_store.load(saved)
    assert [i.id for i in loaded] == [image.id]
    assert loaded[0].names == ("localhost/ckpt:latest",)
    expected = {"io.podman.annotations.checkpoint.name": "web"} if fmt == "oci-archive" else {}
    assert other_store.annotations(loaded[0]) == expected


def test_save_refuses_what_it_cannot_write_and_leaves_nothing(store, tmp_path):
    _checkpoint_image(store, tmp_path)
    with pytest.raises(UsageError, match="unsupported format"):
        store.save(["ckpt"], str(tmp_path / "x.tar"), "oci-dir")
    with pytest.raises(UsageError, match="holds one image"):
        store.save(["ckpt", "ckpt"], str(tmp_path / "x.tar"), "oci-archive")
    os.remove(store.layer_tar(store.get("ckpt").layers[0]))   # as a store of an older ferry has it
    with pytest.raises(Exception, match="no kept tar"):
        store.save(["ckpt"], str(tmp_path / "x.tar"), "docker-archive")
    assert "x.tar" not in os.listdir(tmp_path)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".x.tar")]


def test_tag_adds_names_and_moves_a_name_from_another_image(store, tmp_path):
    image = _checkpoint_image(store, tmp_path)
    store.tag("ckpt", ["reg.example:5000/ckpt/web:v1", "again"])
    assert set(store.get("ckpt").names) == {"localhost/ckpt:latest", "reg.example:5000/ckpt/web:v1",
                                            "localhost/again:latest"}
    assert store.get("reg.example:5000/ckpt/web:v1").id == image.id
    with pytest.raises(UsageError):
        store.tag("ckpt", ["Bad Name"])


def test_push_needs_a_registry_in_the_destination(store, tmp_path):
    image = _checkpoint_image(store, tmp_path)
    store.tag("ckpt", ["reg.example:5000/ckpt/web:v1"])
    assert push.destination(store, "reg.example:5000/ckpt/web:v1", None)[1].registry == "reg.example:5000"
    assert str(push.destination(store, "ckpt", "docker://reg.example/a/b:c")[1]) == "reg.example/a/b:c"
    with pytest.raises(UsageError, match="names no registry"):
        push.destination(store, "ckpt", "a/b:c")
    with pytest.raises(UsageError, match="given by ID"):
        push.destination(store, image.id, None)
    with pytest.raises(UsageError, match="cannot push to a digest"):
        push.destination(store, "ckpt", f"reg.example/a@sha256:{'0' * 64}")
