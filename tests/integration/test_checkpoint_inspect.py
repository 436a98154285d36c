"""`ferry checkpoint inspect|show|verify` on real checkpoints (issue 17): a
redis with a client connected, checkpointed with --tcp-established by ferry
and by the real podman, and a checkpoint image."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess

import pytest

from bench.workloads import debian_rootfs_tar, oci_config, write_oci_archive
from tests.support.cli import Ferry, leftovers, wait_for
from tests.support.forgery import repack_v3
from tests.support.podman import podman as run_podman
from tests.support.podman import podman_for_tests
from tests.support.redis import REDIS_CMD, Redis

pycriu = pytest.importorskip("pycriu", reason="pycriu is installed by 'make setup'")
IMAGE = "localhost/redis-inspect:latest"


@pytest.fixture(scope="module")
def podman():
    with podman_for_tests("ferry-ins-") as pair:
        yield pair


@pytest.fixture(scope="module")
def redis_archive(podman):
    """The redis image as one OCI archive, for both engines (the same ID)."""
    _, base = podman
    builder = Ferry(str(base / "builder"))
    builder("image", "build-debian", IMAGE, "--include", "redis-server", "--cmd", REDIS_CMD, "-q", timeout=1800)
    config = json.loads(builder("image", "inspect", IMAGE).stdout)[0]["Config"]
    path = write_oci_archive(str(base / "redis-oci.tar"), debian_rootfs_tar(["redis-server"]), oci_config(config),
                             IMAGE)
    builder.remove_everything()
    return path


@pytest.fixture
def ferry(tmp_path, redis_archive):
    ferry = Ferry(str(tmp_path / "root"))
    ferry("load", "-i", redis_archive)
    yield ferry
    ids = {c["Id"] for c in ferry.json("ps", "-a", "--format", "json")}
    ferry.remove_everything()
    assert leftovers(ferry.root, ids) == []
    tmp = os.path.join(ferry.root, "tmp")
    assert not os.path.isdir(tmp) or [n for n in os.listdir(tmp) if not n.startswith(".trash")] == []


def _client(ip: str):
    try:
        return Redis(ip, 6379, timeout=30)
    except OSError:
        return None


def _assert_redis_inside(found: dict, client_port: int) -> None:
    [server] = [p for p in found["processes"] if p["comm"] == "redis-server"]
    assert server["cmdline"][0].startswith("redis-server") and server["memory_pages"] > 0
    states = {(s["state"], s["source"].rsplit(":", 1)[1]) for s in found["sockets"]}
    assert ("LISTEN", "6379") in states
    established = [s for s in found["sockets"] if s["state"] == "ESTABLISHED"]
    assert [s["destination"].rsplit(":", 1)[1] for s in established] == [str(client_port)]
    assert found["tcp_established"] is True


def test_inspect_a_ferry_checkpoint_of_redis_with_a_client(ferry, tmp_path):
    ferry("run", "-d", "--name", "kv", IMAGE)
    client = wait_for(lambda: _client(ferry.inspect("kv")["NetworkSettings"]["IPAddress"]), "redis")
    try:
        client.command("SET", "k", "v")
        archive = str(tmp_path / "kv.tar.zst")
        ferry("container", "checkpoint", "kv", "--tcp-established", "--export", archive)
        port = client.sock.getsockname()[1]
    finally:
        client.close()
    found = json.loads(ferry("checkpoint", "inspect", "--all", "--format", "json", archive).stdout)
    _assert_redis_inside(found, port)
    assert found["engine"] == "ferry" and found["container"]["name"] == "kv"
    assert found["host"]["criu_version"] and found["stats"]["pages_written"] > 0
    assert any(f["description"].endswith("LISTEN") for f in found["processes"][0]["files"])
    assert {m["mountpoint"] for m in found["mounts"]} >= {"/", "/proc"}
    tree = ferry("checkpoint", "inspect", "--ps-tree", "--sockets", archive).stdout
    assert tree.startswith(f"kv ({archive})") and "redis-server" in tree and "[tcp LISTEN] 0.0.0.0:6379" in tree
    assert ferry("checkpoint", "verify", archive).stdout.startswith(f"{archive}: OK")
    [shown] = ferry.json("checkpoint", "show", "--format", "json", archive)
    assert shown["TcpEstablished"] is True and shown["Container"] == "kv" and shown["Engine"] == "ferry"


def test_inspect_a_podman_checkpoint_of_redis_with_a_client(podman, redis_archive, ferry, tmp_path):
    engine, base = podman
    run_podman(engine, "load", "-i", redis_archive)
    run_podman(engine, "run", "-d", "--name", "pmkv", *engine.run_flags(), IMAGE)
    ip = run_podman(engine, "inspect", "pmkv", "--format", "{{.NetworkSettings.IPAddress}}").strip()
    client = wait_for(lambda: _client(ip), "podman's redis")
    try:
        archive = str(base / "pmkv.tar.gz")
        run_podman(engine, "container", "checkpoint", "pmkv", "--tcp-established", "--export", archive,
                   "--compress", "gzip")
        port = client.sock.getsockname()[1]
    finally:
        client.close()
        run_podman(engine, "rm", "-f", "pmkv")
    found = json.loads(ferry("checkpoint", "inspect", "--all", "--format", "json", archive).stdout)
    _assert_redis_inside(found, port)
    assert found["engine"] == "podman" and found["container"]["name"] == "pmkv" and found["host"] is None
    assert "podman's archive" in ferry("checkpoint", "verify", archive).stdout


def test_inspect_a_checkpoint_image(ferry):
    ferry("run", "-d", "--name", "kvimg", IMAGE)
    wait_for(lambda: _client(ferry.inspect("kvimg")["NetworkSettings"]["IPAddress"]), "redis").close()
    ferry("container", "checkpoint", "kvimg", "--create-image", "kv-ckpt")
    found = json.loads(ferry("checkpoint", "inspect", "--ps-tree", "--format", "json", "kv-ckpt").stdout)
    assert found["container"]["name"] == "kvimg" and found["processes"][0]["comm"] == "redis-server"
    assert "sockets" not in found and "mounts" not in found
    done = ferry("checkpoint", "inspect", "localhost/no-such-image", check=False)
    assert done.returncode == 125 and "no such archive or checkpoint image" in done.stderr


# ---- compatibility before a restore --------------------------------------------------

def _claims_every_cpu_feature(head: dict) -> None:
    """The recorded host's CPU gets every x86 capability bit, as a host with
    features this one lacks would record it."""
    image = pycriu.images.load(io.BytesIO(base64.b64decode(head["host"]["cpuinfo_image"])))
    entry = image["entries"][0]["x86_entry"][0]
    entry["capability"] = [0xffffffff] * len(entry["capability"])
    out = io.BytesIO()
    pycriu.images.dump(image, out)
    head["host"]["cpuinfo_image"] = base64.b64encode(out.getvalue()).decode()
    head["host"]["cpu"] = {"x86_entry": [entry]}


def test_a_checkpoint_from_a_cpu_with_more_features_is_refused_and_restores_with_force(ferry, tmp_path):
    private, public = str(tmp_path / "key.pem"), str(tmp_path / "key.pub.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private], check=True)
    subprocess.run(["openssl", "pkey", "-in", private, "-pubout", "-out", public], check=True)
    ferry("run", "-d", "--name", "kvcpu", IMAGE)
    client = wait_for(lambda: _client(ferry.inspect("kvcpu")["NetworkSettings"]["IPAddress"]), "redis")
    client.command("SET", "moved", "yes")
    client.close()
    archive = str(tmp_path / "kvcpu.tar")
    ferry("container", "checkpoint", "kvcpu", "--export", archive, "--sign-key", private)
    ferry("rm", "kvcpu")
    assert ferry("system", "compat", archive).returncode == 0
    forged = repack_v3(archive, str(tmp_path / "forged.tar"), edit_head=_claims_every_cpu_feature, signer=private)

    done = ferry("container", "restore", "--import", forged, "--verify-key", public, check=False)
    assert done.returncode == 125, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "the source's CPU has" in line and "which this host's lacks" in line, line
    assert "SIGILL" in line and "--force" in line, line
    assert ferry.names() == set()
    compat = ferry("system", "compat", forged, check=False)
    assert compat.returncode == 1 and "refused" in compat.stdout and "SIGILL" in compat.stdout, compat.stdout
    report = json.loads(ferry("system", "compat", "--format", "json", forged, check=False).stdout)
    assert report["compatible"] is False
    assert [r["verdict"] for r in report["checks"] if r["key"] == "cpu"] == ["refused"]

    done = ferry("container", "restore", "--import", forged, "--verify-key", public, "--force")
    assert "restored with --force although the source's CPU has" in done.stderr, done.stderr
    client = wait_for(lambda: _client(ferry.inspect("kvcpu")["NetworkSettings"]["IPAddress"]), "redis")
    assert client.command("GET", "moved") == "yes"
    client.close()
