"""`ferry system check` against the real host, compared with independent readings."""

from __future__ import annotations

import json
import subprocess

import pytest


def _independent(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})


@pytest.fixture(scope="module")
def report(request):
    import sys
    done = subprocess.run([sys.executable, "-m", "ferry", "system", "check", "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    return done.returncode, json.loads(done.stdout), done.stderr


def test_ready_and_exit_zero(report):
    code, data, stderr = report
    assert data["ready"] is True, data
    assert code == 0, stderr


def test_stable_keys(report):
    _, data, _ = report
    expected = {"root", "criu", "pycriu", "runc", "cgroups", "cgroup_manager", "overlayfs", "netns",
                "nftables", "tcp_repair", "userfaultfd", "soft_dirty", "rlimits", "pipe_max_size"}
    assert set(data["checks"]) == expected
    for check in data["checks"].values():
        assert set(check) == {"status", "value", "detail", "impact", "required"}
        assert check["status"] in {"ok", "missing", "warning"}


def test_criu_version_matches_binary(report):
    _, data, _ = report
    version = _independent(["criu", "--version"]).stdout.split("Version:")[1].split()[0]
    assert data["checks"]["criu"]["value"] == version
    major, minor = (int(p) for p in version.split(".")[:2])
    assert (major, minor) >= (4, 2)
    assert data["checks"]["criu"]["status"] == "ok"


@pytest.mark.parametrize("key,feature", [("soft_dirty", "mem_dirty_track"),
                                         ("userfaultfd", "uffd-noncoop")])
def test_memory_tracking_features_match_criu(report, key, feature):
    _, data, _ = report
    supported = _independent(["criu", "check", "--feature", feature]).returncode == 0
    assert data["checks"][key]["status"] == ("ok" if supported else "missing")


def test_cgroup_mode_matches_filesystem_types(report):
    _, data, _ = report
    def fstype(path):
        return _independent(["stat", "-f", "-c", "%T", path]).stdout.strip()
    top = fstype("/sys/fs/cgroup")
    if top == "cgroup2fs":
        expected = "v2"
    elif fstype("/sys/fs/cgroup/unified") == "cgroup2fs":
        expected = "hybrid"
    else:
        expected = "v1"
    assert data["checks"]["cgroups"]["value"] == expected
    assert data["checks"]["cgroup_manager"]["value"] == "cgroupfs"


def test_runc_version_matches_binary(report):
    _, data, _ = report
    first = _independent(["runc", "--version"]).stdout.splitlines()[0]
    assert first == f"runc version {data['checks']['runc']['value']}"


def test_rlimits_reflect_cap_sys_resource(report):
    _, data, _ = report
    with open("/proc/self/status") as f:
        cap_eff = int(next(l for l in f if l.startswith("CapEff:")).split()[1], 16)
    has_cap = bool(cap_eff >> 24 & 1)
    assert data["checks"]["rlimits"]["value"] == ("yes" if has_cap else "no")


def test_table_output_names_every_check(ferry_cli):
    done = ferry_cli("system", "check")
    assert done.returncode == 0, done.stderr
    for key in ("criu", "soft_dirty", "userfaultfd", "cgroups", "tcp_repair"):
        assert any(line.startswith(key + " ") for line in done.stdout.splitlines()), key
    assert "checkpoint/restore: ready" in done.stdout


def test_not_root_fails_with_one_line(ferry_cli):
    # An unmapped user namespace makes ferry see euid 65534 ("nobody") while
    # files stay readable, wherever CI put the checkout.
    done = ferry_cli("system", "check", prefix=("unshare", "--user", "--"))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "root" in lines[0] and lines[0].startswith("ferry: error:")


def test_missing_criu_fails_with_one_line(ferry_cli):
    done = ferry_cli("system", "check", env={"FERRY_CRIU": "/nonexistent/criu"})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "criu" in lines[0] and "make setup" in lines[0]
