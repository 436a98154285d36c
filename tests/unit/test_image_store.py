"""The image store without root: import, load of crafted archives, name
resolution, removal with layer sharing, and no half state after failures."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from ferry.image import manifest
from ferry.image.digest import of_bytes
from ferry.image.store import ImageStore
from ferry.store.db import Database
from ferry.store.layout import Layout
from ferry.util.errors import BadArchive, Conflict, NotFound, UsageError
from tests.support.cli import image_store
from tests.support.registry import LayerTar, image_config


@pytest.fixture
def store(tmp_path):
    with image_store(str(tmp_path / "root")) as opened:
        yield opened


def write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def rootfs(marker: bytes) -> bytes:
    return LayerTar().dir("bin").file("bin/sh", b"#!fake\n", 0o755).dir("etc").file("etc/marker", marker).bytes()


def archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def docker_archive(images: list[tuple[list[str], list[bytes]]]) -> bytes:
    """A docker-archive laid out as `podman save --format docker-archive` does."""
    members, entries = {}, []
    for tags, layers in images:
        config = image_config([of_bytes(layer) for layer in layers])
        names = []
        for layer in layers:
            names.append(f"{of_bytes(layer)[7:]}.tar")
            members[names[-1]] = layer
        members[f"{of_bytes(config)[7:]}.json"] = config
        entries.append({"Config": f"{of_bytes(config)[7:]}.json", "RepoTags": tags, "Layers": names})
    members["manifest.json"] = json.dumps(entries).encode()
    return archive(members)


def oci_archive(name: str, layers: list[bytes]) -> bytes:
    config = image_config([of_bytes(layer) for layer in layers], cmd=["from-oci"])
    body = json.dumps({"schemaVersion": 2, "mediaType": manifest.OCI_MANIFEST,
                       "config": {"mediaType": manifest.OCI_CONFIG, "digest": of_bytes(config),
                                  "size": len(config)},
                       "layers": [{"mediaType": manifest.OCI_LAYER, "digest": of_bytes(layer),
                                   "size": len(layer)} for layer in layers]}).encode()
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": manifest.OCI_MANIFEST, "digest": of_bytes(body), "size": len(body),
         "annotations": {"org.opencontainers.image.ref.name": name}}]}
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode(),
               f"blobs/sha256/{of_bytes(body)[7:]}": body, f"blobs/sha256/{of_bytes(config)[7:]}": config}
    for layer in layers:
        members[f"blobs/sha256/{of_bytes(layer)[7:]}"] = layer
    return archive(members)


def state(store: ImageStore) -> dict:
    """Everything the store holds, to compare before and after a failure."""
    conn = store.db.read()
    tables = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
              for t in ("images", "image_names", "image_layers", "image_layer_refs")}
    files = {d: sorted(os.listdir(os.path.join(store.root, d))) if os.path.isdir(os.path.join(store.root, d)) else []
             for d in ("l", "tmp", "blobs/sha256")}
    return {**tables, **files}


def test_import_get_inspect_and_layer_paths(store, tmp_path):
    tar = rootfs(b"one")
    image = store.import_rootfs(write(tmp_path / "r.tar", tar), "busybox")
    assert image.names == ("localhost/busybox:latest",)
    assert image.layers == (of_bytes(tar),)
    assert image.size == len(tar)
    assert image.id == of_bytes(open(store.blobs.path("sha256:" + image.id), "rb").read())[7:]
    [path] = store.layer_paths(image)
    assert path == os.path.join(store.root, "l", of_bytes(tar)[7:23])
    assert open(os.path.join(path, "etc/marker"), "rb").read() == b"one"
    for text in ("busybox", "busybox:latest", "localhost/busybox", image.id, image.id[:12],
                 f"sha256:{image.id}", f"localhost/busybox@{image.digest}"):
        assert store.get(text).id == image.id, text
    data = store.inspect("busybox")
    assert data["Id"] == image.id and data["RepoTags"] == ["localhost/busybox:latest"]
    assert data["RepoDigests"] == [f"localhost/busybox@{image.digest}"]
    assert data["RootFS"] == {"Type": "layers", "Layers": [of_bytes(tar)]}
    assert data["Config"]["Env"][0].startswith("PATH=") and data["Os"] == "linux"


def test_short_names_match_any_registry_once(store, tmp_path):
    a = store.load(write(tmp_path / "a.tar", docker_archive([(["127.0.0.1:5000/team/app:v1"], [rootfs(b"a")])])))[0]
    assert store.get("app:v1").id == a.id
    assert store.get("team/app:v1").id == a.id
    with pytest.raises(NotFound) as missing:
        store.get("app")                      # tag latest does not exist
    assert "hint" not in missing.value.message and missing.value.hint
    store.load(write(tmp_path / "b.tar", docker_archive([(["quay.io/other/app:v1"], [rootfs(b"b")])])))
    with pytest.raises(Conflict) as ambiguous:
        store.get("app:v1")
    assert "ambiguous" in ambiguous.value.message
    local = store.import_rootfs(write(tmp_path / "c.tar", rootfs(b"c")), "app:v1")
    assert store.get("app:v1").id == local.id      # localhost/ wins, as in podman


def test_bad_reference_syntax_is_a_usage_error(store):
    with pytest.raises(UsageError):
        store.get("Not/Valid")
    with pytest.raises(NotFound):
        store.get("abcdef0123")


def test_load_docker_and_oci_archives_share_layers(store, tmp_path):
    base, top = rootfs(b"base"), LayerTar().dir("srv").file("srv/app", b"app").bytes()
    docker = store.load(write(tmp_path / "d.tar", docker_archive([(["localhost/one:latest"], [base]),
                                                                  (["two"], [base, top])])))
    assert [i.names for i in docker] == [("localhost/one:latest",), ("localhost/two:latest",)]
    oci = store.load(write(tmp_path / "o.tar", oci_archive("localhost/three:v3", [base, top])))
    assert oci[0].names == ("localhost/three:v3",) and oci[0].config.cmd == ("from-oci",)
    assert oci[0].digest != docker[1].digest      # its own manifest was kept
    assert len(os.listdir(os.path.join(store.root, "l"))) == 2   # each layer unpacked once
    assert store.layer_paths(docker[1]) == store.layer_paths(oci[0])


def test_remove_untags_shared_names_then_deletes_unused_layers(store, tmp_path):
    base, top = rootfs(b"base"), LayerTar().file("extra", b"x").bytes()
    one, two = store.load(write(tmp_path / "d.tar", docker_archive([(["one"], [base]),
                                                                    (["two", "two:alias"], [base, top])])))
    with pytest.raises(Conflict) as several:
        store.remove(two.id)
    assert "several names" in several.value.message
    assert store.remove("two:alias") == ["Untagged: localhost/two:alias"]
    with pytest.raises(Conflict) as used:
        store.remove("one", in_use=lambda image_id: ["web"] if image_id == one.id else [])
    assert "in use by container(s) web" in used.value.message
    assert store.remove("one") == ["Untagged: localhost/one:latest", f"Deleted: {one.id}"]
    assert len(os.listdir(os.path.join(store.root, "l"))) == 2    # base is still used by two
    store.remove("two")
    assert state(store) == {"images": 0, "image_names": 0, "image_layers": 0, "image_layer_refs": 0,
                            "l": [], "tmp": [], "blobs/sha256": []}


def test_a_name_moves_to_the_newer_image(store, tmp_path):
    old = store.import_rootfs(write(tmp_path / "a.tar", rootfs(b"a")), "app")
    new = store.import_rootfs(write(tmp_path / "b.tar", rootfs(b"b")), "app")
    assert store.get("app").id == new.id
    assert store.get(old.id).names == ()
    assert store.remove(old.id) == [f"Deleted: {old.id}"]


def test_force_removes_by_id_with_several_names(store, tmp_path):
    image = store.load(write(tmp_path / "d.tar", docker_archive([(["a", "b"], [rootfs(b"x")])])))[0]
    assert store.remove(image.id[:8], force=True)[-1] == f"Deleted: {image.id}"
    assert store.list() == []


@pytest.mark.parametrize("damage", ["flip-layer", "truncate", "no-manifest", "bad-json", "missing-layer",
                                    "hostile-layer", "layer-count"])
def test_a_damaged_archive_stores_nothing(store, tmp_path, damage):
    store.import_rootfs(write(tmp_path / "keep.tar", rootfs(b"keep")), "keep")
    before = state(store)
    good_layer = rootfs(b"new")
    data = docker_archive([(["victim"], [good_layer, LayerTar().file("z", b"z" * 3000).bytes()])])
    if damage == "flip-layer":
        at = data.index(b"z" * 3000) + 10
        data = data[:at] + b"Z" + data[at + 1:]
    elif damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "no-manifest":
        data = archive({"other.json": b"{}"})
    elif damage == "bad-json":
        data = archive({"manifest.json": b"[{"})
    elif damage == "missing-layer":
        data = archive({"manifest.json": json.dumps([{"Config": "c.json", "Layers": ["x.tar"]}]).encode(),
                        "c.json": image_config([of_bytes(good_layer)])})
    elif damage == "hostile-layer":
        data = docker_archive([(["victim"], [good_layer, LayerTar().file("../../escape", b"x").bytes()])])
    elif damage == "layer-count":
        data = archive({"manifest.json": json.dumps([{"Config": "c.json", "Layers": []}]).encode(),
                        "c.json": image_config([of_bytes(good_layer)])})
    with pytest.raises(BadArchive) as bad:
        store.load(write(tmp_path / "bad.tar", data))
    assert "\n" not in bad.value.message and bad.value.hint
    assert state(store) == before
    assert [i.names for i in store.list()] == [("localhost/keep:latest",)]


def test_import_of_a_corrupt_tar_stores_nothing(store, tmp_path):
    before = state(store)
    with pytest.raises(BadArchive):
        store.import_rootfs(write(tmp_path / "bad.tar", b"\x1f\x8b" + os.urandom(5000)), "bad")
    with pytest.raises(NotFound):
        store.import_rootfs(str(tmp_path / "missing.tar"), "bad")
    with pytest.raises(UsageError):
        store.import_rootfs(write(tmp_path / "r.tar", rootfs(b"x")), "BAD NAME")
    assert state(store) == {**before, "l": [], "tmp": [], "blobs/sha256": []}


def test_crash_leftovers_are_swept_by_the_next_change(store, tmp_path):
    store.import_rootfs(write(tmp_path / "a.tar", rootfs(b"a")), "a")
    kept = state(store)
    os.makedirs(os.path.join(store.root, "l", "deadbeefdeadbeef", "etc"))     # renamed, never recorded
    os.makedirs(os.path.join(store.root, "tmp", "op-crashed", "layer-1"))
    write(os.path.join(store.root, "blobs", "sha256", ".tmp-half"), b"x")
    write(os.path.join(store.root, "blobs", "sha256", "ab" * 32), b"orphan")
    store.import_rootfs(write(tmp_path / "b.tar", rootfs(b"a")), "b")       # same layer: no new dir
    after = state(store)
    assert after["l"] == kept["l"] and after["tmp"] == []
    assert ".tmp-half" not in after["blobs/sha256"] and "ab" * 32 not in after["blobs/sha256"]


def test_layer_paths_keep_a_repeated_layer_once_at_its_highest_position(store, tmp_path):
    empty, other = LayerTar().bytes(), LayerTar().file("f", b"f").bytes()
    image = store.load(write(tmp_path / "d.tar", docker_archive([(["rep"], [empty, other, empty])])))[0]
    assert len(image.layers) == 3
    paths = store.layer_paths(image)
    assert len(paths) == 2 and paths[-1].endswith(of_bytes(empty)[7:23])


# ---- kept layer tars: what a migration sends another store ---------------------

def _other_store(tmp_path):
    layout = Layout.at(str(tmp_path / "other"))
    return ImageStore(layout, Database(layout.database))


def test_an_image_goes_to_another_store_as_its_kept_layer_tars(store, tmp_path):
    image = store.import_rootfs(write(tmp_path / "a.tar", rootfs(b"a")), "localhost/kept:1")
    [diff_id] = image.layers
    assert os.path.exists(store.layer_tar(diff_id)) and store.has_layer(diff_id)
    other = _other_store(tmp_path)
    store.export_layers(image.id, [diff_id], str(tmp_path / "all.tar"))
    [moved] = other.load(str(tmp_path / "all.tar"))
    assert (moved.id, moved.layers, moved.names) == (image.id, image.layers, image.names)
    with open(os.path.join(other.layer_paths(moved)[0], "etc", "marker"), "rb") as f:
        assert f.read() == b"a"
    store.export_layers(image.id, [], str(tmp_path / "none.tar"))   # the other store has the layer
    assert [i.id for i in other.load(str(tmp_path / "none.tar"))] == [image.id]


def test_a_layer_tar_that_does_not_match_its_diff_id_is_refused(store, tmp_path):
    image = store.import_rootfs(write(tmp_path / "a.tar", rootfs(b"a")), "localhost/kept:1")
    forged = store.import_rootfs(write(tmp_path / "b.tar", rootfs(b"b")), "localhost/other:1")
    os.replace(store.layer_tar(forged.layers[0]), store.layer_tar(image.layers[0]))   # another layer's bytes
    store.export_layers(image.id, list(image.layers), str(tmp_path / "bad.tar"))
    other = _other_store(tmp_path)
    with pytest.raises(BadArchive, match="does not match"):
        other.load(str(tmp_path / "bad.tar"))
    assert other.list() == []


def test_a_removed_image_takes_its_layer_tar_along(store, tmp_path):
    image = store.import_rootfs(write(tmp_path / "a.tar", rootfs(b"a")), "localhost/kept:1")
    tar = store.layer_tar(image.layers[0])
    store.remove("localhost/kept:1")
    store.import_rootfs(write(tmp_path / "b.tar", rootfs(b"b")), "localhost/next:1")   # any change sweeps
    assert not os.path.exists(tar)


def test_the_lean_listing_shows_what_the_store_holds(store, tmp_path):
    from ferry.image.listing import list_images
    store.import_rootfs(write(tmp_path / "a.tar", rootfs(b"a")), "localhost/first:1")
    store.import_rootfs(write(tmp_path / "b.tar", rootfs(b"b")), "localhost/second:1")
    store.tag("localhost/second:1", ["localhost/again:2"])
    listed = list_images(store.db)
    assert [(i.id, i.digest, i.names, i.size, i.created) for i in listed] == \
        [(i.id, i.digest, i.names, i.size, i.created) for i in store.list()]
    assert listed[0].names == ("localhost/second:1", "localhost/again:2")
