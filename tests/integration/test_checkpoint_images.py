"""Checkpoints as OCI images through a real registry (Debian's docker-registry
on loopback), traded with the real podman and built with the real buildah as
CRI-O's end-to-end tests build them (issue 16).

The service is a busybox shell whose state lives only in its memory: a
random number drawn at start and a counter, written to a file httpd serves.
A restored copy goes on with the same number and a counter that never went
back; a fresh start would draw another number.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile

import pytest

from bench.busybox import make_oci_archive
from tests.support.cli import Ferry, http_get, leftovers, wait_for
from tests.support.podman import in_namespace, podman_for_tests
from tests.support.podman import podman as run_podman
from tests.support.registry import LayerTar, Registry

SERVICE = ("echo changed > /etc/motd; httpd -p 80 -h /var/www; n=$RANDOM$RANDOM; i=0; "
           "while :; do i=$((i+1)); echo \"$n $i\" > /var/www/count.tmp; mv /var/www/count.tmp /var/www/count; "
           "sleep 0.1; done")
PODMAN_NAME = "io.podman.annotations.checkpoint.name"
CRIU_NAME = "org.criu.checkpoint.container.name"
BUSYBOX = "localhost/busybox:latest"


@pytest.fixture(scope="module")
def podman():
    with podman_for_tests("ferry-ci-") as pair:
        yield pair


@pytest.fixture(scope="module")
def busybox(podman):
    """One busybox archive, loaded into podman here and into each ferry root
    by the test: the same image ID on both sides, which a restore needs."""
    engine, base = podman
    path = make_oci_archive(str(base / "busybox-oci.tar"), str(base))
    run_podman(engine, "load", "-i", path)
    return path


@pytest.fixture(scope="module")
def registry(podman):
    _, base = podman
    registry = Registry(str(base / "registry")).start()
    yield registry
    registry.stop()


@pytest.fixture
def ferry(tmp_path, busybox):
    ferry = Ferry(str(tmp_path / "root"))
    ferry("load", "-i", busybox)
    yield ferry
    ids = {c["Id"] for c in ferry.json("ps", "-a", "--format", "json")}
    ferry.remove_everything()
    assert leftovers(ferry.root, ids) == []


def _count(text: str) -> tuple[str, int]:
    nonce, count = text.split()
    return nonce, int(count)


def _ferry_count(ferry: Ferry, name: str) -> tuple[str, int] | None:
    done = ferry("exec", name, "cat", "/var/www/count", check=False)
    return _count(done.stdout) if done.returncode == 0 and len(done.stdout.split()) == 2 else None


def _podman_count(engine, name: str) -> tuple[str, int] | None:
    done = subprocess.run(engine.argv("exec", name, "cat", "/var/www/count"), capture_output=True, text=True,
                          timeout=60)
    return _count(done.stdout) if done.returncode == 0 and len(done.stdout.split()) == 2 else None


def _goes_on(read, before: tuple[str, int], what: str) -> None:
    """The restored process is the one that was checkpointed: the same number,
    and its counter moves on from where it was."""
    wait_for(lambda: (now := read()) is not None and now[1] > before[1], f"{what}'s counter to move on")
    nonce, _ = read()
    assert nonce == before[0], f"{what} started afresh: {nonce} is not {before[0]}"


def _one_line(done: subprocess.CompletedProcess, code: int = 125) -> str:
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


# ---- podman -> registry -> ferry ------------------------------------------------

def test_podman_checkpoint_image_from_a_registry_restores_in_ferry(podman, registry, ferry):
    engine, _ = podman
    run_podman(engine, "run", "-d", "--name", "pmweb", *engine.run_flags(), "busybox", "sh", "-c", SERVICE)
    before = wait_for(lambda: _podman_count(engine, "pmweb"), "podman's service")
    run_podman(engine, "container", "checkpoint", "pmweb", "--create-image", "pm-ckpt")
    ref = f"{registry.host}/ckpt/podman-web:v1"
    run_podman(engine, "push", "--tls-verify=false", "pm-ckpt", ref)
    run_podman(engine, "rm", "-f", "pmweb")

    done = ferry("container", "restore", "--tls-verify=false", ref)
    assert "another engine's checkpoint" in done.stderr, done.stderr
    assert done.stdout.strip() == ferry.inspect("pmweb")["Id"]
    _goes_on(lambda: _ferry_count(ferry, "pmweb"), before, "podman's service in ferry")
    ip = ferry.inspect("pmweb")["NetworkSettings"]["IPAddress"]
    assert http_get(f"http://{ip}/") == "hello from busybox\n"
    assert ferry("exec", "pmweb", "cat", "/etc/motd").stdout == "changed\n"
    image = ferry.json("image", "inspect", ref)[0]
    assert image["Annotations"][PODMAN_NAME] == "pmweb"
    assert image["Annotations"]["io.podman.annotations.checkpoint.rootfsImageName"] == BUSYBOX
    # Pulled once: a second restore under another name takes the local image.
    ferry("container", "restore", "--name", "pmweb2", ref)
    _goes_on(lambda: _ferry_count(ferry, "pmweb2"), before, "the second copy")


def test_podman_checkpoint_image_saved_as_oci_archive_restores_in_ferry(podman, ferry, tmp_path):
    engine, _ = podman
    run_podman(engine, "run", "-d", "--name", "pmsaved", *engine.run_flags(), "busybox", "sh", "-c", SERVICE)
    before = wait_for(lambda: _podman_count(engine, "pmsaved"), "podman's service")
    run_podman(engine, "container", "checkpoint", "pmsaved", "--create-image", "pm-saved-ckpt")
    saved = str(tmp_path / "ckpt-oci.tar")
    run_podman(engine, "save", "--format", "oci-archive", "-o", saved, "pm-saved-ckpt")
    run_podman(engine, "rm", "-f", "pmsaved")
    ferry("load", "-i", saved)
    ferry("container", "restore", "--name", "restored", "pm-saved-ckpt")
    _goes_on(lambda: _ferry_count(ferry, "restored"), before, "podman's saved checkpoint in ferry")


# ---- ferry -> registry -> podman ----------------------------------------------------

def test_ferry_checkpoint_image_from_a_registry_restores_in_podman(podman, registry, ferry):
    engine, _ = podman
    ferry("run", "-d", "--name", "fweb", "busybox", "sh", "-c", SERVICE)
    before = wait_for(lambda: _ferry_count(ferry, "fweb"), "ferry's service")
    done = ferry("container", "checkpoint", "fweb", "--create-image", "ferry-ckpt")
    assert done.stdout.strip() == "fweb"
    assert ferry.inspect("fweb")["State"]["Status"] == "exited"
    image = ferry.json("image", "inspect", "ferry-ckpt")[0]
    assert len(image["RootFS"]["Layers"]) == 1
    assert image["Annotations"][PODMAN_NAME] == "fweb" and image["Annotations"][CRIU_NAME] == "fweb"
    assert image["Annotations"]["org.criu.checkpoint.rootfsImageName"] == BUSYBOX
    ref = f"{registry.host}/ckpt/ferry-web:v1"
    ferry("push", "--tls-verify=false", "ferry-ckpt", ref)
    ferry("rm", "fweb")

    run_podman(engine, "pull", "--tls-verify=false", ref)
    inspected = json.loads(run_podman(engine, "image", "inspect", ref))[0]
    assert inspected["Annotations"][PODMAN_NAME] == "fweb"
    run_podman(engine, "container", "restore", ref)
    _goes_on(lambda: _podman_count(engine, "fweb"), before, "ferry's service in podman")
    assert run_podman(engine, "exec", "fweb", "cat", "/etc/motd") == "changed\n"
    run_podman(engine, "rm", "-f", "fweb")


def test_a_checkpoint_image_pushed_by_ferry_restores_on_another_ferry_root(registry, ferry, tmp_path, busybox):
    ferry("run", "-d", "--name", "moved", "busybox", "sh", "-c", SERVICE)
    before = wait_for(lambda: _ferry_count(ferry, "moved"), "the service")
    ferry("container", "checkpoint", "moved", "--create-image", "moved-ckpt")
    ref = f"{registry.host}/ckpt/moved:v1"
    ferry("push", "--tls-verify=false", "--compression-format", "zstd", "moved-ckpt", ref)
    other = Ferry(str(tmp_path / "other"))
    other("load", "-i", busybox)
    try:
        done = other("container", "restore", "--tls-verify=false", ref)
        assert "another engine" not in done.stderr
        _goes_on(lambda: _ferry_count(other, "moved"), before, "the service on the other root")
        # It kept its ID, as a restore from an archive does.
        assert other.inspect("moved")["Id"] == ferry.inspect("moved")["Id"]
    finally:
        ids = {c["Id"] for c in other.json("ps", "-a", "--format", "json")}
        other.remove_everything()
        assert leftovers(other.root, ids) == []


# ---- buildah, as CRI-O's end-to-end tests build a checkpoint image --------------------

def _buildah(engine, base, *args: str) -> str:
    store = ["--root", str(base / "buildah-root"), "--runroot", str(base / "buildah-run"), "--storage-driver",
             "overlay"]
    return in_namespace(engine, "buildah", *store, *args)


def _build_and_push(engine, base, archive: str, name: str, ref: str) -> None:
    container = _buildah(engine, base, "from", "scratch").strip()
    try:
        _buildah(engine, base, "add", container, archive, "/")
        _buildah(engine, base, "config", f"--annotation={CRIU_NAME}={name}", container)
        _buildah(engine, base, "config", f"--annotation=org.criu.checkpoint.rootfsImageName={BUSYBOX}", container)
        _buildah(engine, base, "commit", container, f"localhost/{name}-built")
        _buildah(engine, base, "push", "--tls-verify=false", f"localhost/{name}-built", f"docker://{ref}")
    finally:
        _buildah(engine, base, "rm", container)


def test_buildah_image_of_a_signed_ferry_archive_restores_with_its_signature_checked(podman, registry, ferry,
                                                                                    tmp_path):
    engine, base = podman
    private, public, other = (str(tmp_path / n) for n in ("key.pem", "key.pub.pem", "other.pub.pem"))
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private], check=True)
    subprocess.run(["openssl", "pkey", "-in", private, "-pubout", "-out", public], check=True)
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(tmp_path / "other.pem")], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(tmp_path / "other.pem"), "-pubout", "-out", other], check=True)
    ferry("run", "-d", "--name", "bweb", "busybox", "sh", "-c", SERVICE)
    before = wait_for(lambda: _ferry_count(ferry, "bweb"), "ferry's service")
    archive = str(base / "bweb.tar")
    ferry("container", "checkpoint", "bweb", "--export", archive, "--sign-key", private)
    ferry("rm", "bweb")
    ref = f"{registry.host}/ckpt/buildah-ferry:v1"
    _build_and_push(engine, base, archive, "bweb", ref)

    line = _one_line(ferry("container", "restore", "--tls-verify=false", "--verify-key", other, ref, check=False))
    assert "signed by key" in line, line
    assert ferry.names() == set()
    ferry("container", "restore", "--verify-key", public, ref)   # pulled by the refused attempt
    _goes_on(lambda: _ferry_count(ferry, "bweb"), before, "the service from buildah's image")


def test_buildah_image_of_a_podman_archive_restores_in_ferry(podman, registry, ferry):
    engine, base = podman
    run_podman(engine, "run", "-d", "--name", "pmb", *engine.run_flags(), "busybox", "sh", "-c", SERVICE)
    before = wait_for(lambda: _podman_count(engine, "pmb"), "podman's service")
    archive = str(base / "pmb.tar")
    run_podman(engine, "container", "checkpoint", "pmb", "--export", archive, "--compress", "none")
    run_podman(engine, "rm", "-f", "pmb")
    ref = f"{registry.host}/ckpt/buildah-podman:v1"
    _build_and_push(engine, base, archive, "pmb", ref)
    ferry("container", "restore", "--tls-verify=false", "--name", "from-buildah", ref)
    _goes_on(lambda: _ferry_count(ferry, "from-buildah"), before, "podman's service via buildah")


# ---- images between the engines -------------------------------------------------------

def _rootfs_tar(path: str) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in (("etc/hostname", b"ferry-made\n"), ("data/blob", os.urandom(4096))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_and_load_cross_between_ferry_and_podman_with_the_same_id(podman, ferry, tmp_path, fmt):
    engine, _ = podman
    ours = ferry("image", "import", _rootfs_tar(str(tmp_path / "root.tar")), f"ferry-made-{fmt}").stdout.strip()
    saved = str(tmp_path / "ferry-saved.tar")
    ferry("save", "--format", fmt, "-o", saved, f"ferry-made-{fmt}")
    run_podman(engine, "load", "-i", saved)
    theirs = json.loads(run_podman(engine, "image", "inspect", f"localhost/ferry-made-{fmt}:latest"))[0]
    assert theirs["Id"] == ours

    run_podman(engine, "import", str(tmp_path / "root.tar"), f"podman-made-{fmt}")
    podman_id = json.loads(run_podman(engine, "image", "inspect", f"podman-made-{fmt}"))[0]["Id"]
    from_podman = str(tmp_path / "podman-saved.tar")
    run_podman(engine, "save", "--format", fmt, "-o", from_podman, f"podman-made-{fmt}")
    loaded = ferry("load", "-i", from_podman)
    assert f"localhost/podman-made-{fmt}:latest" in loaded.stdout
    assert ferry.json("image", "inspect", f"podman-made-{fmt}")[0]["Id"] == podman_id
    run_podman(engine, "rmi", "-f", f"localhost/ferry-made-{fmt}:latest", f"podman-made-{fmt}")


# ---- what is refused ------------------------------------------------------------------

def _refused_with_nothing_made(ferry: Ferry, *args: str) -> str:
    before = {i["Id"] for i in ferry.json("images", "--format", "json")}
    line = _one_line(ferry("container", "restore", *args, check=False))
    assert ferry.names() == set()
    tmp = os.path.join(ferry.root, "tmp")
    assert not os.path.isdir(tmp) or [n for n in os.listdir(tmp) if not n.startswith(".trash")] == []
    assert {i["Id"] for i in ferry.json("images", "--format", "json")} >= before
    return line


def test_images_that_are_not_checkpoints_here_are_refused_in_one_line(registry, ferry):
    assert "image is not a checkpoint" in _refused_with_nothing_made(ferry, BUSYBOX)
    assert "no such container or image: somewhere" in _refused_with_nothing_made(ferry, "somewhere")

    rootfs = LayerTar().dir("etc").file("etc/hostname", b"x\n").bytes()
    registry.push_image("forged/plain", "v1", [rootfs], oci=True, annotations={PODMAN_NAME: "web"})
    line = _refused_with_nothing_made(ferry, "--tls-verify=false", f"{registry.host}/forged/plain:v1")
    assert "holds no checkpoint" in line, line

    registry.push_image("forged/arm", "v1", [rootfs], oci=True, architecture="arm64", annotations={CRIU_NAME: "web"})
    line = _refused_with_nothing_made(ferry, "--tls-verify=false", f"{registry.host}/forged/arm:v1")
    assert "made on arm64" in line and "this host is amd64" in line, line

    linked = LayerTar().file("config.dump", b"{}").dir("checkpoint").symlink("checkpoint/pages-1.img",
                                                                            "/etc/shadow").bytes()
    registry.push_image("forged/link", "v1", [linked], oci=True, annotations={PODMAN_NAME: "web"})
    line = _refused_with_nothing_made(ferry, "--tls-verify=false", f"{registry.host}/forged/link:v1")
    assert "a symlink" in line, line


def test_a_tampered_ferry_checkpoint_image_is_refused(registry, ferry, tmp_path):
    """Its layer re-tarred with one byte of a CRIU image changed: the digests
    in its trailer no longer match, whoever recomputed the layer's."""
    ferry("run", "-d", "--name", "victim", "busybox", "sh", "-c", SERVICE)
    wait_for(lambda: _ferry_count(ferry, "victim"), "the service")
    archive = str(tmp_path / "victim.tar")
    ferry("container", "checkpoint", "victim", "--export", archive)
    ferry("rm", "victim")
    forged = LayerTar()
    with tarfile.open(archive) as tar:
        for member in tar:
            data = tar.extractfile(member).read()
            if member.name == "checkpoint/pstree.img":
                data = data[:-1] + bytes([data[-1] ^ 1])
            forged.file(member.name, data, mode=0o600)
    registry.push_image("forged/tampered", "v1", [forged.bytes()], oci=True, annotations={PODMAN_NAME: "victim"})
    line = _refused_with_nothing_made(ferry, "--tls-verify=false", f"{registry.host}/forged/tampered:v1")
    assert "checkpoint/pstree.img" in line and "checksum mismatch" in line, line
