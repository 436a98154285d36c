"""OCI spec generation: podman's defaults, seccomp conversion, rlimit clamping."""

from __future__ import annotations

import json
import resource

import pytest

from ferry.runtime import spec
from ferry.util.errors import NotFound, UsageError

PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {}, "excludes": {}},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
        {"names": ["arm_only"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
        {"names": ["new_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "9.1"}},
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "excludes": {"caps": ["CAP_NET_ADMIN"]}},
    ],
}


@pytest.fixture
def profile(tmp_path):
    path = tmp_path / "seccomp.json"
    path.write_text(json.dumps(PROFILE))
    return str(path)


def names(result):
    return [n for rule in result["syscalls"] for n in rule["names"]]


def test_seccomp_keeps_rules_that_apply_here(profile):
    result = spec.seccomp_profile(spec.DEFAULT_CAPABILITIES, profile, "SCMP_ARCH_X86_64", "6.18.4-x")
    assert result["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert result["defaultErrnoRet"] == 38
    assert names(result) == ["read", "write", "arch_prctl", "socket"]
    assert result["syscalls"][-1]["errnoRet"] == 1


def test_seccomp_follows_capabilities_and_kernel(profile):
    caps = spec.DEFAULT_CAPABILITIES + ("CAP_SYS_ADMIN", "CAP_NET_ADMIN")
    result = spec.seccomp_profile(caps, profile, "SCMP_ARCH_X86_64", "9.2.0")
    assert names(result) == ["read", "write", "bpf", "arch_prctl", "new_call"]


def test_seccomp_profile_missing(tmp_path):
    with pytest.raises(NotFound):
        spec.seccomp_profile((), str(tmp_path / "absent.json"))


def test_rlimits_clamped_to_hard_limits():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    (nofile,) = [r for r in spec.clamped_rlimits() if r["type"] == "RLIMIT_NOFILE"]
    expected = 1048576 if hard == resource.RLIM_INFINITY else min(1048576, hard)
    assert nofile["hard"] == nofile["soft"] == expected


def test_resolve_user_from_image_files(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n")
    (etc / "group").write_text("root:x:0:\nwww:x:33:\nlogs:x:4:www,other\n")
    assert spec.resolve_user(str(tmp_path), "") == (0, 0, ())
    assert spec.resolve_user(str(tmp_path), "www") == (33, 33, (4,))
    assert spec.resolve_user(str(tmp_path), "1000:4") == (1000, 4, ())
    # podman 4.3.1: an explicit group gives no supplementary groups (exec -u www:web: groups=)
    assert spec.resolve_user(str(tmp_path), "www:root") == (33, 0, ())
    assert spec.resolve_user(str(tmp_path), "33") == (33, 33, (4,))   # a uid takes its entry's group
    (etc / "group").write_text("root:x:0:\nwww:x:33:www\nlogs:x:4:www,other\n")
    assert spec.resolve_user(str(tmp_path), "www") == (33, 33, (4, 33))   # listed in its own group too, as podman
    with pytest.raises(UsageError, match="group 'ghosts'"):
        spec.resolve_user(str(tmp_path), "www:ghosts")
    with pytest.raises(UsageError):
        spec.resolve_user(str(tmp_path), "ghost")


def test_build_has_secure_defaults(profile, monkeypatch):
    monkeypatch.setattr(spec, "SECCOMP_PROFILE", profile)
    oci = spec.build(spec.ContainerSpec(
        container_id="a" * 64, hostname="h", rootfs="/r", netns_path="/run/netns/ferry-aaaa",
        process=spec.ProcessSpec(args=("sh",), env=("A=1",)),
        mounts=(spec.Mount("/data", "/srv/data", options=("rbind", "ro")),)))
    process = oci["process"]
    assert process["noNewPrivileges"] is True
    assert "CAP_SYS_ADMIN" not in process["capabilities"]["bounding"]
    assert process["env"][0].startswith("PATH=") and "A=1" in process["env"]
    assert {"type": "network", "path": "/run/netns/ferry-aaaa"} in oci["linux"]["namespaces"]
    assert "/proc/kcore" in oci["linux"]["maskedPaths"]
    assert "/proc/sys" in oci["linux"]["readonlyPaths"]
    assert oci["linux"]["cgroupsPath"] == "/ferry/" + "a" * 64
    assert oci["mounts"][-1] == {"destination": "/data", "type": "bind", "source": "/srv/data",
                                 "options": ["rbind", "ro"]}
    assert any(m["destination"] == "/dev/shm" for m in oci["mounts"])


def test_build_in_podman_s_shape(profile, monkeypatch):
    """What a container restored from podman keeps: no cgroup namespace, no
    no_new_privileges, and /dev/shm a bind of a directory instead of a tmpfs."""
    monkeypatch.setattr(spec, "SECCOMP_PROFILE", profile)
    oci = spec.build(spec.ContainerSpec(
        container_id="a" * 64, hostname="h", rootfs="/r", process=spec.ProcessSpec(args=("sh",)),
        cgroupns=False, no_new_privileges=False, shm_source="/state/c/shm"))
    assert oci["process"]["noNewPrivileges"] is False
    assert "cgroup" not in {n["type"] for n in oci["linux"]["namespaces"]}
    shm = [m for m in oci["mounts"] if m["destination"] == "/dev/shm"]
    assert shm == [{"destination": "/dev/shm", "type": "bind", "source": "/state/c/shm",
                    "options": ["bind", "rprivate", "nosuid", "noexec", "nodev"]}]
    ferry_s = spec.build(spec.ContainerSpec(container_id="a" * 64, hostname="h", rootfs="/r",
                                            process=spec.ProcessSpec(args=("sh",))))
    assert "cgroup" in {n["type"] for n in ferry_s["linux"]["namespaces"]}
    assert [m["type"] for m in ferry_s["mounts"] if m["destination"] == "/dev/shm"] == ["tmpfs"]


def test_each_state_root_has_its_own_parent_cgroup():
    import re
    from ferry.runtime.runc import Runc, cgroup_parent
    assert cgroup_parent("/var/lib/ferry") == "ferry"   # where running containers have always been
    a, b = cgroup_parent("/tmp/a"), cgroup_parent("/tmp/b")
    assert a != b and re.fullmatch(r"ferry-[0-9a-f]{12}", a)
    assert cgroup_parent("/tmp/a/") == a
    assert Runc("/tmp/a/runc").cgroup_parent == a
