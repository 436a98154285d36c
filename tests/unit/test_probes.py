"""Probe parsing and decisions, with tools faked at the subprocess chokepoint."""

from __future__ import annotations

import pytest

from ferry.engine.system import SystemReport
from ferry.host import probes
from ferry.util import proc

HYBRID = """\
tmpfs /sys/fs/cgroup tmpfs ro,nosuid 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0
"""
V1 = HYBRID.replace("cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid 0 0\n", "")
V2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n"


@pytest.mark.parametrize("mounts,mode", [(HYBRID, "hybrid"), (V1, "v1"), (V2, "v2"),
                                         ("proc /proc proc rw 0 0\n", "none")])
def test_cgroup_mode(mounts, mode):
    assert probes.cgroup_mode(mounts) == mode


def test_parse_versions():
    assert probes.parse_criu_version("Version: 4.2.1\nGitID: v4.2.1\n") == (4, 2, 1)
    assert probes.parse_criu_version("Version: 3.17\n") == (3, 17)
    assert probes.parse_criu_version("garbage") is None
    assert probes.parse_runc_version("runc version 1.1.5+ds1\ncommit: x\n") == "1.1.5+ds1"
    assert probes.parse_runc_version("") is None


def test_capability_bit():
    status = "Name:\tx\nCapEff:\t000001fffeffffff\n"
    assert not probes.has_capability(status, probes.CAP_SYS_RESOURCE)
    assert probes.has_capability(status, 21)  # CAP_SYS_ADMIN
    assert not probes.has_capability("no caps line", 0)


def test_criu_messages_drop_noise_and_prefixes():
    lines = ["(00.02) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: x",
             "(00.02) Error (criu/cr-restore.c:1237): Can't fork for 10884: File exists",
             "Warn  (criu/cr-check.c:824): Dirty tracking is OFF.", ""]
    assert probes.criu_messages(lines) == ["Can't fork for 10884: File exists",
                                           "Dirty tracking is OFF."]
    assert probes.criu_said("") == "no output"


class FakeTools:
    """Answers argv prefixes with canned results, at the chokepoint."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]):
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv, **_kwargs):
        argv = tuple(argv)
        self.calls.append(argv)
        for prefix, (code, out, err) in self.answers.items():
            if argv[1:1 + len(prefix)] == prefix or argv[:len(prefix)] == prefix:
                return proc.Result(argv, code, out, err)
        raise FileNotFoundError(argv[0])


@pytest.fixture
def fake_criu(monkeypatch, tmp_path):
    binary = tmp_path / "criu"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("FERRY_CRIU", str(binary))

    def install(answers):
        fake = FakeTools(answers)
        monkeypatch.setattr(proc, "_execute", fake)
        return fake
    return install


def test_old_criu_is_refused_by_version(fake_criu):
    fake = fake_criu({("--version",): (0, "Version: 3.17.1\n", "")})
    check = probes.probe_criu()
    assert check.status == probes.MISSING and check.value == "3.17.1"
    assert "older than 4.2" in check.detail and check.blocking
    assert not any("check" in call for call in fake.calls)  # no point running it


def test_new_criu_whose_check_fails_is_missing(fake_criu):
    fake_criu({("--version",): (0, "Version: 4.2.1\n", ""),
               ("check",): (1, "", "(00.01) Error (criu/vdso.c:3): vdso: Unexpected rt vDSO area bounds\n")})
    check = probes.probe_criu()
    assert check.status == probes.MISSING
    assert "vdso: Unexpected rt vDSO area bounds" in check.detail


def test_working_criu(fake_criu):
    fake_criu({("--version",): (0, "Version: 4.2.1\n", ""), ("check",): (0, "Looks good.\n", "")})
    check = probes.probe_criu()
    assert (check.status, check.value) == (probes.OK, "4.2.1")


def test_absent_criu(monkeypatch):
    monkeypatch.setenv("FERRY_CRIU", "/nonexistent/criu")
    check = probes.probe_criu()
    assert check.status == probes.MISSING and "make setup" in check.detail


def test_criu_feature_probe(fake_criu):
    fake_criu({("check", "--feature", "mem_dirty_track"):
               (1, "", "Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work.\n"),
               ("check", "--feature", "uffd-noncoop"): (0, "uffd-noncoop is supported\n", "")})
    soft_dirty, uffd = probes.probe_soft_dirty(), probes.probe_userfaultfd()
    assert soft_dirty.status == probes.MISSING and "Dirty tracking is OFF" in soft_dirty.detail
    assert not soft_dirty.blocking  # optional: only pre-copy needs it
    assert uffd.status == probes.OK


def test_probe_turns_tool_absence_into_a_finding(monkeypatch):
    monkeypatch.setattr(proc, "_execute", FakeTools({}))
    check = probes.probe_runc()
    assert check.status == probes.MISSING and "not installed" in check.detail


def test_report_ready_only_when_required_checks_pass():
    ok = probes.Check("criu", probes.OK, "4.2.1", "", "", True)
    optional = probes.Check("soft_dirty", probes.MISSING, "no", "", "", False)
    broken = probes.Check("runc", probes.MISSING, "no", "", "", True)
    assert SystemReport((ok, optional)).ready
    report = SystemReport((ok, optional, broken))
    assert not report.ready and report.blocking == (broken,)
    data = report.to_dict()
    assert data["ready"] is False and data["checks"]["runc"]["status"] == "missing"
    assert "key" not in data["checks"]["runc"]
