"""host_info() with CRIU and runc faked at the subprocess chokepoint."""

from __future__ import annotations

import json
import os

import pytest

from ferry.checkpoint.hostinfo import HostInfo, host_info
from ferry.util import proc
from ferry.util.errors import NotFound
from tests.unit.test_probes import fake_criu  # noqa: F401  (fixture: FERRY_CRIU and faked tools)

pycriu = pytest.importorskip("pycriu", reason="pycriu is built by 'make setup'")

CPU_ENTRY = {"x86_entry": [{"vendor_id": "INTEL", "cpu_family": 6, "model": 207, "stepping": 2,
                            "capability_ver": 2, "capability": [529267711, 739248128],
                            "model_id": "Intel(R) Xeon(R) Processor", "xfeatures_mask": 741,
                            "xsave_size": 11008, "xsave_size_max": 11008}]}
CPUINFO_IMG = pycriu.images.dumps({"magic": "CPUINFO", "entries": [CPU_ENTRY]})


@pytest.fixture(autouse=True)
def unremembered(monkeypatch, tmp_path):
    """Each test probes afresh: host_info() remembers its answer for a minute,
    and the tools' answers for the boot (in a file of the test's own)."""
    from ferry.checkpoint import hostinfo
    monkeypatch.setattr(hostinfo, "_host_info", None)
    monkeypatch.setattr(hostinfo, "HOST_CACHE", str(tmp_path / "host-info.json"))


@pytest.fixture
def fake_tools(fake_criu, monkeypatch):
    fake = fake_criu({("runc", "--version"): (0, "runc version 1.1.5+ds1\ncommit: x\n", ""),
                      ("--version",): (0, "Version: 4.2.1\n", ""),
                      ("cpuinfo", "dump", "-D"): (0, "", "")})

    def execute(argv, **kwargs):
        if tuple(argv[1:4]) == ("cpuinfo", "dump", "-D"):   # CRIU writes the image into -D
            with open(os.path.join(argv[4], "cpuinfo.img"), "wb") as f:
                f.write(CPUINFO_IMG)
        return fake(argv, **kwargs)

    monkeypatch.setattr(proc, "_execute", execute)
    return fake.calls


def test_host_info_reads_criu_runc_and_the_kernel(fake_tools):
    host = host_info()
    assert host.cpu == CPU_ENTRY
    assert host.cpuinfo_image_bytes() == CPUINFO_IMG
    assert (host.criu_version, host.runc_version) == ("4.2.1", "1.1.5+ds1")
    assert (host.arch, host.kernel, host.hostname) == (os.uname().machine, os.uname().release,
                                                       os.uname().nodename)
    assert host.cgroup_mode in ("v1", "hybrid", "v2", "none")
    assert HostInfo.from_dict(json.loads(json.dumps(host.to_dict()))) == host
    dump = next(call for call in fake_tools if "cpuinfo" in call)
    assert not os.path.exists(dump[4]), "the cpuinfo dump dir was left behind"


def test_host_info_without_criu_is_not_found(monkeypatch):
    monkeypatch.setenv("FERRY_CRIU", "/nonexistent/criu")
    with pytest.raises(NotFound, match="criu not found in /nonexistent/criu") as caught:
        host_info()
    assert "make setup" in caught.value.hint


def test_unknown_host_keys_are_named_on_one_bounded_line():
    """Found by the archive fuzzer: a key holding a newline broke the one-line error."""
    with pytest.raises(ValueError) as failure:
        HostInfo.from_dict({"\n": None, **{f"k{i}" * 50: 1 for i in range(100)}})
    message = str(failure.value)
    assert "\n" not in message and "'\\n'" in message and "and 96 more" in message
    assert len(message) < 500


def test_the_tools_answers_are_remembered_for_the_boot_and_these_binaries(fake_tools, tmp_path):
    from ferry.checkpoint import hostinfo
    first = host_info()
    runs = len(fake_tools)
    hostinfo._host_info = None
    assert host_info() == first and len(fake_tools) == runs    # from the cache: no tool ran
    os.utime(os.environ["FERRY_CRIU"], (1, 1))                  # another criu binary
    hostinfo._host_info = None
    assert host_info() == first and len(fake_tools) > runs
    with open(hostinfo.HOST_CACHE, "w") as f:
        f.write('{"key": "forged", "facts": {"criu_version": 7}}')
    hostinfo._host_info = None
    assert host_info() == first                                 # a bad cache is probed over
