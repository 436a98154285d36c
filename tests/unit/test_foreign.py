"""podman's and CRI-O's checkpoint archives: recognised by their layout, and
named by their config.dump, read within bounds into typed fields."""

import json
import tarfile

import pytest

from ferry.checkpoint.archive import read_archive
from ferry.checkpoint.foreign import MAX_CONFIG, SCAN_MEMBERS, parse_config
from ferry.util.errors import BadArchive

ID = "3" * 64
IMAGE = "f" * 64
PODMAN = {"id": ID, "name": "web", "rootfsImageID": IMAGE, "rootfsImageName": "localhost/busybox:latest",
          "spec": {"process": {"args": ["httpd"]}}, "newPortMappings": [], "shmSize": 65536000}
CRIO = {"id": ID, "name": "k8s_web", "rootfsImage": "quay.io/x/web:1", "rootfsImageRef": IMAGE,
        "rootfsImageName": "quay.io/x/web:1", "runtime": "runc", "createdTime": "2026-11-30T01:30:34Z",
        "checkpointedTime": "2026-11-30T01:40:00Z"}


def test_podman_s_config_names_its_container_and_image():
    found = parse_config(json.dumps(PODMAN).encode())
    assert (found.engine, found.id, found.name, found.image_id, found.image_name) == \
        ("podman", ID, "web", IMAGE, "localhost/busybox:latest")
    assert found.describe() == ("podman's checkpoint of container 'web' (image localhost/busybox:latest, "
                                "ffffffffffff)")


def test_cri_o_s_metadata_names_its_container_and_image():
    found = parse_config(json.dumps(CRIO).encode())
    assert (found.engine, found.name, found.image_id) == ("CRI-O", "k8s_web", IMAGE)


@pytest.mark.parametrize("forged", [
    b"[]", b"not json", b"{}", json.dumps({**PODMAN, "id": "../../etc"}).encode(),
    json.dumps({**PODMAN, "name": 7}).encode(), json.dumps({**PODMAN, "name": "a\nb"}).encode(),
    json.dumps({**PODMAN, "rootfsImageID": "sha256:" + IMAGE}).encode(),
    json.dumps({**CRIO, "rootfsImageRef": ["x"]}).encode(), b"[" * 100000,
    json.dumps({**PODMAN, "pad": "x" * MAX_CONFIG}).encode(),
])
def test_a_config_that_is_neither_or_forged_names_nothing(forged):
    assert parse_config(forged) is None


def _podman_tar(path, members) -> str:
    with tarfile.open(str(path), "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, fileobj=__import__("io").BytesIO(data))
    return str(path)


def test_a_podman_archive_is_refused_naming_its_container(tmp_path):
    path = _podman_tar(tmp_path / "web.tar", [("artifacts/", None), ("devshm-checkpoint.tar", b"\0" * 10240),
                                              ("config.dump", json.dumps(PODMAN).encode()),
                                              ("checkpoint/inventory.img", b"x")])
    with pytest.raises(BadArchive, match=r"^the archive is podman's checkpoint of container 'web' \(image "
                                         r"localhost/busybox:latest, ffffffffffff\): ferry does not restore") as caught:
        read_archive(path, str(tmp_path / "dest"))
    assert "podman container restore --import" in caught.value.hint
    assert not (tmp_path / "dest").exists()


def test_config_dump_beyond_the_scan_is_not_looked_for(tmp_path):
    members = [("artifacts/", None)] + [(f"volumes/v{i}.tar", b"") for i in range(SCAN_MEMBERS)]
    path = _podman_tar(tmp_path / "web.tar", members + [("config.dump", json.dumps(PODMAN).encode())])
    with pytest.raises(BadArchive, match=r"^the archive is a podman or CRI-O checkpoint \(it begins with "
                                         r"'artifacts'"):
        read_archive(path, str(tmp_path / "dest"))
