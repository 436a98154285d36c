"""Manifests, indexes with platform selection, image configs and digests."""

from __future__ import annotations

import io
import json

import pytest

from ferry.image import digest, manifest
from ferry.util.errors import BadArchive, Incompatible, NotFound

HEX = "0123456789abcdef" * 4


def d(n: int) -> str:
    return "sha256:" + f"{n:02x}" * 32


def entry(n: int, arch: str, os_name: str = "linux", variant: str | None = None) -> dict:
    platform = {"os": os_name, "architecture": arch}
    if variant:
        platform["variant"] = variant
    return {"mediaType": manifest.DOCKER_MANIFEST, "digest": d(n), "size": 500, "platform": platform}


def index(*entries) -> manifest.Index:
    body = json.dumps({"schemaVersion": 2, "mediaType": manifest.DOCKER_LIST, "manifests": list(entries)})
    doc = manifest.parse_document(body.encode())
    assert isinstance(doc, manifest.Index)
    return doc


def test_amd64_is_picked_from_a_manifest_list():
    doc = index(entry(1, "arm64", variant="v8"), entry(2, "amd64"), entry(3, "arm", variant="v7"))
    assert manifest.select_platform(doc, "x", architecture="amd64").digest == d(2)
    assert manifest.select_platform(doc, "x", architecture="arm64").digest == d(1)


def test_plain_variant_preferred_and_attestations_ignored():
    doc = index(entry(1, "unknown", "unknown"), entry(2, "amd64", variant="v3"), entry(3, "amd64"))
    assert manifest.select_platform(doc, "x", architecture="amd64").digest == d(3)


def test_missing_platform_names_what_is_offered():
    doc = index(entry(1, "arm64"), entry(2, "s390x"), entry(3, "unknown", "unknown"))
    with pytest.raises(NotFound) as missing:
        manifest.select_platform(doc, "reg/app:1", architecture="amd64")
    assert "has no linux/amd64 image (it offers: linux/arm64, linux/s390x)" in missing.value.message


def test_host_architecture_uses_oci_names():
    assert manifest.host_architecture() in ("amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64")


def test_manifest_media_type_from_header_or_body():
    body = {"schemaVersion": 2, "config": {"mediaType": manifest.OCI_CONFIG, "digest": d(1), "size": 3},
            "layers": [{"mediaType": manifest.OCI_LAYER_ZSTD, "digest": d(2), "size": 9}]}
    doc = manifest.parse_document(json.dumps(body).encode(), "application/vnd.oci.image.manifest.v1+json")
    assert isinstance(doc, manifest.Manifest)
    assert doc.config.digest == d(1) and [layer.digest for layer in doc.layers] == [d(2)]
    # OCI makes mediaType optional: a body with layers is a manifest
    assert isinstance(manifest.parse_document(json.dumps(body).encode()), manifest.Manifest)


@pytest.mark.parametrize("body,error,needle", [
    (b"not json", BadArchive, "not JSON"),
    (b"[]", BadArchive, "not a JSON object"),
    (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), Incompatible, "schema 1"),
    (json.dumps({"mediaType": "application/x-weird"}).encode(), Incompatible, "unsupported media type"),
    (json.dumps({"mediaType": manifest.OCI_MANIFEST, "config": {"digest": "sha256:zz", "size": 1},
                 "layers": []}).encode(), BadArchive, "bad digest"),
    (json.dumps({"mediaType": manifest.OCI_MANIFEST, "config": {"digest": d(1), "size": 1},
                 "layers": [{"mediaType": "application/x-foo", "digest": d(2), "size": 1}]}).encode(),
     Incompatible, "unsupported type"),
])
def test_bad_documents(body, error, needle):
    with pytest.raises(error) as bad:
        manifest.parse_document(body)
    assert needle in bad.value.message and bad.value.hint


def test_config_parsing():
    raw = {"created": "2024-01-02T03:04:05Z", "architecture": "amd64", "os": "linux",
           "config": {"Env": ["A=1"], "Cmd": ["nginx", "-g", "daemon off;"], "Entrypoint": None,
                      "WorkingDir": "/srv", "User": "www-data", "StopSignal": "SIGQUIT",
                      "ExposedPorts": {"80/tcp": {}, "53": {}}},
           "rootfs": {"type": "layers", "diff_ids": [d(1), d(2)]}}
    parsed = manifest.parse_config(json.dumps(raw).encode())
    assert parsed.config == manifest.ImageConfig(
        entrypoint=(), cmd=("nginx", "-g", "daemon off;"), env=("A=1",), working_dir="/srv",
        user="www-data", exposed_ports=("53/tcp", "80/tcp"), stop_signal="SIGQUIT")
    assert parsed.diff_ids == (d(1), d(2)) and parsed.created == "2024-01-02T03:04:05Z"


def test_config_round_trip_of_what_ferry_writes():
    config = manifest.ImageConfig(cmd=("sh",), env=("PATH=/bin",), exposed_ports=("80/tcp",),
                                  stop_signal="SIGTERM")
    data = manifest.config_document(config, [d(7)], "2024-01-01T00:00:00Z", "test")
    parsed = manifest.parse_config(data)
    assert parsed.config == config and parsed.diff_ids == (d(7),) and parsed.os == "linux"
    body = manifest.manifest_document(digest.of_bytes(data), len(data), [(d(7), 10)])
    doc = manifest.parse_document(body)
    assert doc.config.digest == digest.of_bytes(data) and doc.layers[0].digest == d(7)


@pytest.mark.parametrize("raw,needle", [
    ({"config": {}}, "rootfs.diff_ids is missing"),
    ({"rootfs": {"diff_ids": ["md5:abc"]}}, "bad layer diff_id"),
    ({"rootfs": {"diff_ids": []}, "config": {"Cmd": [1, 2]}}, "Cmd is not a list of strings"),
])
def test_bad_configs(raw, needle):
    with pytest.raises(BadArchive) as bad:
        manifest.parse_config(json.dumps(raw).encode())
    assert needle in bad.value.message


def test_digest_verification():
    data = b"hello"
    good = digest.of_bytes(data)
    digest.verify(good, digest.of_bytes(data), "blob")
    with pytest.raises(BadArchive) as bad:
        digest.verify(good, digest.of_bytes(b"hellO"), "layer x")
    assert "layer x is corrupted" in bad.value.message
    with pytest.raises(BadArchive):
        digest.hex_of("sha256:../../etc/passwd")
    assert digest.hex_of("sha256:" + HEX) == HEX


def test_hashing_reader_covers_the_whole_stream():
    reader = digest.HashingReader(io.BytesIO(b"a" * 5000))
    assert reader.read(10) == b"a" * 10
    reader.drain()
    assert reader.size == 5000 and reader.digest == digest.of_bytes(b"a" * 5000)
