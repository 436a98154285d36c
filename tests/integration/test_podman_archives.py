"""podman's checkpoint archives, written by the real podman that setup installs
(in a private mount namespace with its own storage, as the benchmark runs it)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from bench.busybox import make_oci_archive
from bench.engines import Podman, PodmanNamespace
from tests.conftest import require
from tests.support.cli import Ferry, leftovers

WEB = "mkdir -p /var/www; echo hello > /var/www/index.html; echo kept > /data/file; httpd -f -p 80 -h /var/www"


@pytest.fixture(scope="module")
def podman():
    for key in ("criu", "runc", "overlayfs"):
        require(key)
    # podman refuses a runroot path longer than 50 characters: pytest's are.
    base = pathlib.Path(tempfile.mkdtemp(prefix="ferry-pm-", dir="/tmp"))
    namespace = PodmanNamespace(str(base / "ns"))
    os.makedirs(namespace.base)
    namespace.start()
    engine = Podman(str(base / "engine"), namespace)
    try:
        yield engine, base
    finally:
        subprocess.run(engine.argv("rm", "-a", "-f", "-t", "0"), capture_output=True, timeout=120)
        subprocess.run(engine.argv("volume", "rm", "-a", "-f"), capture_output=True, timeout=120)
        namespace.stop()
        shutil.rmtree(base, ignore_errors=True)


def _podman(engine: Podman, *args: str) -> str:
    done = subprocess.run(engine.argv(*args), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def exported(podman):
    """busybox httpd with a rootfs change and a named volume, exported twice."""
    engine, base = podman
    _podman(engine, "load", "-i", make_oci_archive(str(base / "busybox-oci.tar"), str(base)))
    _podman(engine, "volume", "create", "web-data")
    _podman(engine, "run", "-d", "--name", "web", *engine.run_flags(), "-v", "web-data:/data", "busybox",
            "sh", "-c", WEB)
    archives = {}
    for suffix, compress in ((".tar.zst", "zstd"), (".tar.gz", "gzip")):
        archives[suffix] = str(base / f"web{suffix}")
        _podman(engine, "container", "checkpoint", "web", "--leave-running", "--export", archives[suffix],
                "--compress", compress)
    return archives


@pytest.mark.parametrize("suffix", [".tar.zst", ".tar.gz"])
def test_a_podman_archive_is_named_and_refused_in_one_line_leaving_nothing(exported, tmp_path, suffix):
    ferry = Ferry(str(tmp_path / "root"))
    done = ferry("container", "restore", "--import", exported[suffix], "--name", "web2", check=False)
    assert done.returncode == 125, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is podman's checkpoint of container 'web' (image localhost/busybox:latest" in \
        lines[0], done.stderr
    assert "podman container restore --import" in lines[0]
    assert ferry.names() == set()
    assert leftovers(ferry.root, set()) == []
    assert not os.listdir(os.path.join(ferry.root, "tmp")) if os.path.isdir(os.path.join(ferry.root, "tmp")) else True
