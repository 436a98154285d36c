"""bench.workloads: image configs and OCI archives (files only, no engines)."""

import hashlib
import json
import tarfile

from bench import workloads as wl


def test_oci_config_from_ferry_image_config():
    ferry = {"Env": ["PATH=/bin"], "Cmd": ["nginx", "-g", "daemon off;"], "Entrypoint": [],
             "WorkingDir": "", "ExposedPorts": {"80/tcp": {}}, "User": "", "StopSignal": "SIGQUIT"}
    assert wl.oci_config(ferry) == {"Env": ["PATH=/bin"], "Cmd": ["nginx", "-g", "daemon off;"],
                                    "StopSignal": "SIGQUIT", "ExposedPorts": {"80/tcp": {}}}


def test_oci_archive_holds_the_layer_tar_byte_for_byte(tmp_path):
    layer = tmp_path / "rootfs.tar"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hostname").write_text("localhost\n")
    with tarfile.open(layer, "w") as tar:
        tar.add(tmp_path / "etc", arcname="./etc")
    data = layer.read_bytes()
    archive = wl.write_oci_archive(str(tmp_path / "oci.tar"), str(layer), {"Cmd": ["sh"]}, "localhost/x:latest")
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        manifest_digest = index["manifests"][0]["digest"].split(":")[1]
        assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "localhost/x:latest"
        manifest = json.load(tar.extractfile(f"blobs/sha256/{manifest_digest}"))
        layer_digest = manifest["layers"][0]["digest"]
        assert layer_digest == "sha256:" + hashlib.sha256(data).hexdigest()
        assert tar.extractfile("blobs/sha256/" + layer_digest.split(":")[1]).read() == data
        config = json.load(tar.extractfile("blobs/sha256/" + manifest["config"]["digest"].split(":")[1]))
        assert config["rootfs"]["diff_ids"] == [layer_digest]
        assert config["config"] == {"Cmd": ["sh"]}


def test_workload_names_and_sizes():
    assert [w.name for w in wl.FULL] == ["busybox-httpd", "nginx", "redis-256m", "redis-1g", "redis-2g"]
    assert [w.name for w in wl.QUICK] == ["redis-256m"]
    assert wl.BY_NAME["redis-2g"].fill_bytes == 2 << 30
    assert wl.BY_NAME["redis-1g"].timeout() > wl.BY_NAME["redis-256m"].timeout()
