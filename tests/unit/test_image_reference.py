"""Image references, normalised as podman does."""

from __future__ import annotations

import pytest

from ferry.image import reference
from ferry.util.errors import UsageError


@pytest.mark.parametrize("text,name", [
    ("nginx", "localhost/nginx:latest"),
    ("nginx:1.25", "localhost/nginx:1.25"),
    ("team/app:v2", "localhost/team/app:v2"),
    ("localhost/nginx", "localhost/nginx:latest"),
    ("localhost:5000/a/b:c", "localhost:5000/a/b:c"),
    ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest"),
    ("quay.io/podman/hello:latest", "quay.io/podman/hello:latest"),
    ("my-registry.example/x__y.z-w:T_1.0", "my-registry.example/x__y.z-w:T_1.0"),
])
def test_local_names(text, name):
    assert reference.parse_local(text).name == name


@pytest.mark.parametrize("text,registry,repository", [
    ("nginx", "docker.io", "library/nginx"),
    ("bitnami/redis", "docker.io", "bitnami/redis"),
    ("127.0.0.1:5000/test/busybox", "127.0.0.1:5000", "test/busybox"),
    ("localhost/x", "localhost", "x"),
])
def test_pull_names(text, registry, repository):
    ref = reference.parse_pull(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, "latest")


def test_digest_references_keep_no_default_tag():
    digest = "sha256:" + "ab" * 32
    ref = reference.parse_pull(f"127.0.0.1:5000/app@{digest}")
    assert ref.digest == digest and ref.tag is None
    assert str(ref) == f"127.0.0.1:5000/app@{digest}"
    both = reference.parse_local(f"app:v1@{digest}")
    assert both.tag == "v1" and both.digest == digest


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ("Nginx", "lower-case"),
    ("nginx:", "bad tag"),
    ("nginx:-x", "bad tag"),
    ("a//b", "lower-case"),
    ("nginx@sha256:123", "digest must be sha256"),
    ("nginx@md5:" + "a" * 32, "digest must be sha256"),
    ("-rf", "lower-case"),
    ("x" * 300, "longer than"),
    ("bad_host:99999999x/app", "bad registry"),
])
def test_bad_references_are_one_usage_error_with_a_hint(text, why):
    with pytest.raises(UsageError) as bad:
        reference.parse_local(text)
    assert why in bad.value.message
    assert "\n" not in bad.value.message and bad.value.hint


def test_qualification_and_name_splitting():
    assert reference.is_qualified("127.0.0.1:5000/x")
    assert reference.is_qualified("localhost/x")
    assert not reference.is_qualified("team/x")
    assert not reference.is_qualified("x:latest")
    assert reference.split_name("127.0.0.1:5000/a/b:c") == ("127.0.0.1:5000/a/b", "c")
    assert reference.split_name("localhost:5000/a") == ("localhost:5000/a", "")
