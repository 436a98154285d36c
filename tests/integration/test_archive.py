"""The checkpoint archive against the real CRIU: host info, and a round trip
of a real image directory that CRIU then restores from."""

from __future__ import annotations

import os
import subprocess

import pytest

from ferry.checkpoint.archive import Head, read_archive, read_manifest, write_archive
from ferry.checkpoint.criu import Criu
from ferry.checkpoint.hostinfo import host_info
from ferry.host import probes
from ferry.util import proc
from tests.conftest import require
# counter: a process that counts in memory, killed with anything restored from it afterwards;
# subreaper (autouse) reaps the restored tasks.
from tests.integration.test_criu_rpc import counter, subreaper  # noqa: F401
from tests.support.cli import wait_for


def _read_count(path: str) -> int:
    with open(path) as f:
        return int(f.read() or 0)


def _run(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout


@pytest.fixture
def tools():
    for key in ("criu", "pycriu", "runc"):
        require(key)
    return proc.criu_binary()


def test_host_info_matches_the_host(tools, tmp_path):
    host = host_info()
    assert host.criu_version == probes.version_text(probes.parse_criu_version(_run(tools, "--version")))
    assert host.runc_version == probes.parse_runc_version(_run("runc", "--version"))
    assert host.cpu and all(isinstance(key, str) for key in host.cpu)
    assert (host.arch, host.kernel) == (os.uname().machine, os.uname().release)
    assert host.cgroup_mode == probes.cached("cgroups").value
    # The raw image is CRIU's own: CRIU accepts it as this host's cpuinfo.
    images = tmp_path / "cpu"
    images.mkdir()
    (images / "cpuinfo.img").write_bytes(host.cpuinfo_image_bytes())
    check = subprocess.run([tools, "cpuinfo", "check", "-D", str(images)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_real_checkpoint_round_trip_restores(tools, counter, tmp_path, compression):
    process, state, pids = counter
    images = tmp_path / "ctr" / "checkpoint"
    counted_before_dump = _read_count(state)
    # A plain dump stops the counter: left running, it would replace the file
    # it may have had open at the dump, and CRIU could not reopen it.
    Criu().dump(process.pid, str(images))
    process.wait()
    stopped_at = _read_count(state)
    names = sorted(f"checkpoint/{n}" for n in os.listdir(images))
    assert any(n.startswith("checkpoint/pages-") for n in names)
    container = {"id": "d" * 64, "name": "counter", "image": "localhost/busybox:latest",
                 "image_id": "e" * 64, "image_digest": "sha256:" + "f" * 64}
    path = str(tmp_path / "counter.tar")
    result = write_archive(path, str(tmp_path / "ctr"), names, container=container, compression=compression)
    assert result.size > 0 and os.stat(path).st_mode & 0o777 == 0o600
    head = read_manifest(path)
    assert head.host.criu_version == host_info().criu_version
    assert Head.from_json(head.to_json()) == head

    dest = tmp_path / "restored"
    contents = read_archive(path, str(dest))
    assert contents.head == head and [m.name for m in contents.members] == names
    assert head.max_size == contents.total_size
    for name in names:
        assert (dest / name).read_bytes() == (tmp_path / "ctr" / name).read_bytes()

    # CRIU restores from what came out of the archive, and the counter goes on
    # from the memory the archive carried.
    pid = Criu().restore(str(dest / "checkpoint"))
    pids.append(pid)
    assert pid == process.pid
    wait_for(lambda: _read_count(state) != stopped_at, "restored counter to write", 20.0)
    assert _read_count(state) > counted_before_dump  # a restart would count from 1
