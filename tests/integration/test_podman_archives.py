"""podman's checkpoint archives, written by the real podman that setup installs
(in a private mount namespace with its own storage, as the benchmark runs it)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile

import pytest

from bench.busybox import make_oci_archive
from bench.workloads import debian_rootfs_tar, oci_config, write_oci_archive
from tests.conftest import require
from tests.support.cli import Ferry, free_port, http_get, leftovers, wait_for
from tests.support.podman import podman as _podman
from tests.support.podman import private_podman
from tests.support.redis import REDIS_CMD, Redis

# A rootfs change (a new file and a deleted one), a named volume, and /dev/shm.
WEB = ("echo changed > /etc/motd; rm /etc/group; echo kept > /data/file; echo shared > /dev/shm/note; "
       "httpd -f -p 80 -h /var/www")
REDIS_KEYS = 2000
PODMAN_VOLUMES = "/var/lib/containers/storage/volumes"


@pytest.fixture(scope="module")
def podman():
    for key in ("criu", "runc", "overlayfs"):
        require(key)
    # Where a ferry archive says podman keeps volumes (its default; /var/lib is
    # the namespace's own overlay).
    with private_podman("ferry-pm-", volume_path=PODMAN_VOLUMES) as pair:
        yield pair


@pytest.fixture(scope="module")
def busybox_oci(podman):
    """One busybox archive for both engines: the same image ID."""
    engine, base = podman
    path = make_oci_archive(str(base / "busybox-oci.tar"), str(base))
    _podman(engine, "load", "-i", path)
    return path


@pytest.fixture(scope="module")
def exported(podman, busybox_oci):
    """busybox httpd with a rootfs change, a named volume and /dev/shm, exported
    twice; its image saved by podman, as a user moves it."""
    engine, base = podman
    _podman(engine, "volume", "create", "web-data")
    _podman(engine, "run", "-d", "--name", "web", *engine.run_flags(), "-p", "18081:80", "-v", "web-data:/data",
            "busybox", "sh", "-c", WEB)
    wait_for(lambda: "shared" in _podman(engine, "exec", "web", "cat", "/dev/shm/note"), "web's setup")
    archives = {"image": str(base / "busybox-saved.tar")}
    _podman(engine, "save", "-o", archives["image"], "busybox")
    for suffix, compress in ((".tar.zst", "zstd"), (".tar.gz", "gzip"), (".tar", "none")):
        archives[suffix] = str(base / f"web{suffix}")
        _podman(engine, "container", "checkpoint", "web", "--leave-running", "--export", archives[suffix],
                "--compress", compress)
    return archives


@pytest.fixture
def ferry(tmp_path):
    ferry = Ferry(str(tmp_path / "root"))
    yield ferry
    ids = {c["Id"] for c in ferry.json("ps", "-a", "--format", "json")}
    ferry.remove_everything()
    assert leftovers(ferry.root, ids) == []


def _in(ferry: Ferry, name: str, *argv: str) -> str:
    return ferry("exec", name, *argv).stdout


@pytest.mark.parametrize("suffix", [".tar.zst", ".tar.gz", ".tar"])
def test_podman_s_busybox_archive_restores_in_ferry_with_its_files_volume_and_shm(exported, ferry, suffix):
    """The port podman published comes along, so the restore refuses it while podman's copy holds it."""
    ferry("load", "-i", exported["image"])
    done = ferry("container", "restore", "--import", exported[suffix], "--name", "web2", check=False)
    assert done.returncode != 0 and "port 18081/tcp is already in use" in done.stderr, done.stderr
    assert ferry.names() == set()
    port = free_port()   # podman's copy still holds 18081 on this host
    done = ferry("container", "restore", "--import", exported[suffix], "--name", "web2", "-p", f"{port}:80")
    assert "another engine's checkpoint" in done.stderr and "not verified" in done.stderr, done.stderr
    web = ferry.inspect("web2")
    assert web["State"]["Status"] == "running"
    ip = web["NetworkSettings"]["IPAddress"]
    assert http_get(f"http://{ip}/") == "hello from busybox\n"
    assert _in(ferry, "web2", "cat", "/etc/motd") == "changed\n"
    assert ferry("exec", "web2", "cat", "/etc/group", check=False).returncode != 0   # deleted stays deleted
    assert _in(ferry, "web2", "cat", "/data/file") == "kept\n"
    assert _in(ferry, "web2", "cat", "/dev/shm/note") == "shared\n"
    assert http_get(f"http://127.0.0.1:{port}/") == "hello from busybox\n"
    assert "web-data" in ferry("volume", "ls", "-q").stdout.split()
    # In ferry it is a ferry container like any other: it checkpoints and restores again.
    ferry("container", "checkpoint", "web2")
    ferry("container", "restore", "web2")
    assert http_get(f"http://{ip}/") == "hello from busybox\n"
    assert _in(ferry, "web2", "cat", "/dev/shm/note") == "shared\n"


def test_a_ferry_archive_of_a_container_podman_made_keeps_its_shape(exported, ferry, tmp_path):
    ferry("load", "-i", exported["image"])
    ferry("container", "restore", "--import", exported[".tar.zst"], "--name", "web2", "-p", f"{free_port()}:80")
    moved = str(tmp_path / "web2.tar.zst")
    ferry("container", "checkpoint", "web2", "--export", moved)
    ferry("rm", "-f", "web2")
    ferry("volume", "rm", "web-data")
    done = ferry("container", "restore", "--import", moved, "--name", "web3")
    assert "another engine" not in done.stderr
    assert _in(ferry, "web3", "cat", "/dev/shm/note") == "shared\n"
    assert _in(ferry, "web3", "cat", "/data/file") == "kept\n"
    assert _in(ferry, "web3", "cat", "/etc/motd") == "changed\n"


def test_the_missing_image_is_named_with_how_to_get_it_and_nothing_is_made(exported, ferry):
    done = ferry("container", "restore", "--import", exported[".tar.zst"], "--name", "web2", check=False)
    assert done.returncode == 125, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "which podman's checkpoint of container 'web' (image localhost/busybox:latest" in lines[0], lines
    assert "is not in this root" in lines[0] and "ferry load -i" in lines[0] and "--image-archive" in lines[0]
    assert ferry.names() == set()
    assert ferry("volume", "ls", "-q").stdout.split() == []


def test_image_archive_brings_the_image_with_the_restore(exported, ferry):
    ferry("container", "restore", "--import", exported[".tar.gz"], "--name", "web2", "--image-archive",
          exported["image"], "-p", f"{free_port()}:80")
    assert _in(ferry, "web2", "cat", "/etc/motd") == "changed\n"


def test_verify_key_refuses_an_archive_that_cannot_be_signed(exported, ferry, tmp_path):
    private, public = str(tmp_path / "key.pem"), str(tmp_path / "key.pub.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private], check=True)
    subprocess.run(["openssl", "pkey", "-in", private, "-pubout", "-out", public], check=True)
    ferry("load", "-i", exported["image"])
    done = ferry("container", "restore", "--import", exported[".tar.zst"], "--verify-key", public, check=False)
    assert done.returncode == 125 and "carry no signature" in done.stderr, done.stderr
    assert ferry.names() == set()


@pytest.fixture(scope="module")
def redis_exported(podman):
    """redis with keys, run and exported by podman; the image goes to both
    engines as one OCI archive (the same ID)."""
    engine, base = podman
    builder = Ferry(str(base / "builder"))
    builder("image", "build-debian", "localhost/redis-pm:latest", "--include", "redis-server", "--cmd",
            REDIS_CMD, "-q", timeout=1800)
    config = json.loads(builder("image", "inspect", "localhost/redis-pm:latest").stdout)[0]["Config"]
    image = write_oci_archive(str(base / "redis-oci.tar"), debian_rootfs_tar(["redis-server"]), oci_config(config),
                              "localhost/redis-pm:latest")
    builder.remove_everything()
    builder("rmi", "-f", "localhost/redis-pm:latest", check=False)
    _podman(engine, "load", "-i", image)
    saved = str(base / "redis-saved.tar")   # and to ferry as a podman user moves it
    _podman(engine, "save", "-o", saved, "localhost/redis-pm:latest")
    _podman(engine, "run", "-d", "--name", "kv", *engine.run_flags(), "localhost/redis-pm:latest")
    ip = _podman(engine, "inspect", "kv", "--format", "{{.NetworkSettings.IPAddress}}").strip()
    client = wait_for(lambda: _connect(ip), "podman's redis to answer")
    client.command("DEBUG", "POPULATE", str(REDIS_KEYS), "key", "64")
    client.command("SET", "marker", "from-podman")
    client.close()
    archive = str(base / "kv.tar.zst")
    _podman(engine, "container", "checkpoint", "kv", "--export", archive, "--compress", "zstd")
    return {"image": saved, "archive": archive}


def _connect(ip: str):
    try:
        return Redis(ip, 6379, timeout=30)
    except OSError:
        return None


def test_podman_s_redis_restores_in_ferry_with_its_keys(redis_exported, ferry):
    ferry("container", "restore", "--import", redis_exported["archive"], "--name", "kv2", "--image-archive",
          redis_exported["image"])
    _assert_keys(ferry.inspect("kv2")["NetworkSettings"]["IPAddress"], "from-podman")


def _assert_keys(ip: str, marker: str) -> None:
    client = wait_for(lambda: _connect(ip), f"the redis at {ip} to answer")
    try:
        assert client.command("GET", "marker") == marker
        assert client.command("DBSIZE") == REDIS_KEYS + 1
    finally:
        client.close()


def _rewritten(source: str, dest: str, change) -> str:
    """The podman archive with its members passed through change(name, data) -> [(name, data, kind)]."""
    with tarfile.open(source) as tar_in, tarfile.open(dest, "w:gz") as tar_out:
        for info in tar_in:
            data = tar_in.extractfile(info).read() if info.isfile() else None
            for name, new_data, kind in change(info.name, data):
                out = tarfile.TarInfo(name)
                out.type, out.mode = kind, info.mode
                if kind == tarfile.CHRTYPE:
                    out.devmajor, out.devminor = 1, 3
                if new_data is not None:
                    out.size = len(new_data)
                tar_out.addfile(out, io.BytesIO(new_data) if new_data is not None else None)
    return dest


def _with_spec_mount(name, data):
    if name == "spec.dump":
        spec = json.loads(data)
        spec["mounts"].append({"destination": "/host", "type": "bind", "source": "/etc", "options": ["rbind"]})
        data = json.dumps(spec).encode()
    return [(name, data, tarfile.REGTYPE if data is not None else tarfile.DIRTYPE)]


def _with_config(name, data):
    if name == "config.dump":
        config = json.loads(data)
        config["newPortMappings"] = [{"container_port": 80, "host_port": "8080; nft flush ruleset",
                                      "protocol": "tcp"}]
        data = json.dumps(config).encode()
    return [(name, data, tarfile.REGTYPE if data is not None else tarfile.DIRTYPE)]


def _plus(extra):
    def change(name, data):
        kept = [(name, data, tarfile.REGTYPE if data is not None else tarfile.DIRTYPE)]
        return kept + ([extra] if name == "config.dump" else [])
    return change


@pytest.mark.parametrize("change, needle", [
    (_plus(("checkpoint/../../../../tmp/ferry-escape", b"x", tarfile.REGTYPE)), "unsafe path"),
    (_plus(("checkpoint/null", None, tarfile.CHRTYPE)), "device"),
    (_plus(("checkpoint/cgroup.img", b"again", tarfile.REGTYPE)), "appears twice"),
    (_with_spec_mount, "mounts host paths, which only this host's user may grant: /etc at /host"),
    (_with_config, "config.dump in the archive is invalid: newPortMappings.0.host_port"),
])
def test_bad_input_in_a_podman_archive_is_refused_in_one_line_and_nothing_is_made(exported, ferry, tmp_path,
                                                                                     change, needle):
    ferry("load", "-i", exported["image"])
    forged = _rewritten(exported[".tar.gz"], str(tmp_path / "forged.tar.gz"), change)
    done = ferry("container", "restore", "--import", forged, "--name", "web2", "-p", f"{free_port()}:80",
                 check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 125 and len(lines) == 1 and needle in lines[0], done.stderr
    assert ferry.names() == set()
    assert ferry("volume", "ls", "-q").stdout.split() == []
    assert not os.path.exists("/tmp/ferry-escape")
    assert not os.listdir(os.path.join(ferry.root, "tmp")) if os.path.isdir(os.path.join(ferry.root, "tmp")) else True


# ---- ferry's archives in podman -----------------------------------------------------------

@pytest.fixture(scope="module")
def ferry_exported(podman, busybox_oci, redis_exported):
    """busybox httpd (a port, a rootfs change, a named volume) and redis with
    keys, run and exported by ferry; podman has their images."""
    engine, base = podman
    source = Ferry(str(base / "source"))
    source("load", "-i", busybox_oci)
    source("load", "-i", redis_exported["image"])
    port = free_port()
    source("run", "-d", "--name", "fweb", "-p", f"{port}:80", "-v", "fdata:/data", "busybox", "sh", "-c", WEB)
    wait_for(lambda: source("exec", "fweb", "cat", "/dev/shm/note", check=False).stdout == "shared\n", "fweb's setup")
    source("run", "-d", "--name", "fkv", "localhost/redis-pm:latest")
    client = wait_for(lambda: _connect(source.inspect("fkv")["NetworkSettings"]["IPAddress"]), "ferry's redis")
    client.command("DEBUG", "POPULATE", str(REDIS_KEYS), "key", "64")
    client.command("SET", "marker", "from-ferry")
    client.close()
    archives = {"port": port}
    for suffix in (".tar.zst", ".tar.gz"):
        archives[suffix] = str(base / f"fweb{suffix}")
        source("container", "checkpoint", "fweb", "--leave-running", "--export", archives[suffix])
    archives["redis"] = str(base / "fkv.tar.gz")
    source("container", "checkpoint", "fkv", "--export", archives["redis"])
    source.remove_everything()   # the port and the names are podman's now
    assert leftovers(source.root, set()) == []
    return archives


def _podman_restores(engine, archive: str, *args: str) -> str:
    done = subprocess.run(engine.argv("container", "restore", "--import", archive, *args), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"podman container restore --import {archive} {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def _podman_forget(engine, name: str, volume: str | None = None) -> None:
    _podman(engine, "rm", "-f", "-t", "0", name)
    if volume:
        _podman(engine, "volume", "rm", volume)


@pytest.mark.parametrize("suffix", [".tar.zst", ".tar.gz"])
def test_podman_restores_ferry_s_busybox_under_its_name_and_a_new_one(podman, ferry_exported, suffix):
    engine, _ = podman
    for name in ("fweb", "fweb2"):
        _podman_restores(engine, ferry_exported[suffix], *(("--name", name) if name != "fweb" else ()))
        try:
            ip = _podman(engine, "inspect", name, "--format", "{{.NetworkSettings.IPAddress}}").strip()
            assert http_get(f"http://{ip}/") == "hello from busybox\n"
            if name == "fweb":   # a new name drops the published ports, as podman's own restore does
                assert http_get(f"http://127.0.0.1:{ferry_exported['port']}/") == "hello from busybox\n"
            assert _podman(engine, "exec", name, "cat", "/etc/motd") == "changed\n"
            assert _podman(engine, "exec", name, "cat", "/data/file") == "kept\n"
            assert _podman(engine, "exec", name, "cat", "/dev/shm/note") == "shared\n"
            gone = subprocess.run(engine.argv("exec", name, "cat", "/etc/group"), capture_output=True, timeout=60)
            assert gone.returncode != 0
        finally:
            _podman_forget(engine, name, "fdata")


def test_podman_restores_ferry_s_redis_with_its_keys(podman, ferry_exported):
    engine, _ = podman
    for name in ("fkv", "fkv2"):
        _podman_restores(engine, ferry_exported["redis"], *(("--name", name) if name != "fkv" else ()))
        try:
            _assert_keys(_podman(engine, "inspect", name, "--format", "{{.NetworkSettings.IPAddress}}").strip(),
                         "from-ferry")
        finally:
            _podman_forget(engine, name)
