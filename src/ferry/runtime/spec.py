"""OCI runtime spec generation with podman's secure defaults.

The defaults mirror podman 4 (containers.conf): a short capability list, masked
and read-only /proc and /sys paths, no_new_privileges, and the containers-common
seccomp profile. Rlimits are clamped to the host's hard limits, because without
CAP_SYS_RESOURCE runc cannot raise them (HOST-NOTES).
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from ferry.util.errors import NotFound, UsageError

SECCOMP_PROFILE = "/usr/share/containers/seccomp.json"

DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID",
    "CAP_SYS_CHROOT",
)
MASKED_PATHS = (
    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/fs/selinux", "/sys/dev/block",
)
READONLY_PATHS = ("/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                  "/proc/sysrq-trigger")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHM_SIZE = 64 * 1024 * 1024
# podman asks for these; the host may allow less.
WANTED_RLIMITS = {"RLIMIT_NOFILE": 1048576, "RLIMIT_NPROC": 4194304}
# HOST-NOTES reported RLIMIT_NPROC == hard limit failing inside runc; with runc
# 1.1.5 on this host it worked (nofile 20000, nproc 96551), so clamp to the hard limit.


class Mount(NamedTuple):
    destination: str
    source: str
    type: str = "bind"
    options: tuple[str, ...] = ("rbind", "rprivate")


class ProcessSpec(NamedTuple):
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    terminal: bool = False


class ContainerSpec(NamedTuple):
    container_id: str
    hostname: str
    rootfs: str
    process: ProcessSpec
    netns_path: str | None = None
    mounts: tuple[Mount, ...] = ()
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    annotations: Mapping[str, str] = MappingProxyType({})   # read-only: one default shared by all
    cgroup_parent: str = "ferry"   # runc.cgroup_parent of the container's root
    cgroupns: bool = True
    no_new_privileges: bool = True
    shm_source: str | None = None  # a directory bound at /dev/shm instead of a tmpfs (podman's shape)


def clamped_rlimits(wanted: dict[str, int] = WANTED_RLIMITS) -> list[dict]:
    limits = []
    for name, value in wanted.items():
        hard = resource.getrlimit(getattr(resource, name))[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        limits.append({"type": name, "hard": value, "soft": value})
    return limits


def seccomp_profile(capabilities: tuple[str, ...], path: str | None = None,
                    arch: str | None = None, kernel: str | None = None) -> dict:
    """Convert the containers-common profile to the OCI form for this host.

    Rules are kept when their `includes` match (all listed capabilities granted,
    this architecture, kernel new enough) and no `excludes` match.
    """
    path = path or SECCOMP_PROFILE
    try:
        with open(path) as f:
            profile = json.load(f)
    except OSError:
        raise NotFound(f"seccomp profile {path} is missing",
                       hint="run 'make setup' (it installs golang-github-containers-common)") from None
    arch = arch or _scmp_arch(os.uname().machine)   # platform's answers, without loading platform
    kernel = kernel or os.uname().release
    caps = set(capabilities)
    architectures = []
    for entry in profile.get("archMap", []):
        if entry["architecture"] == arch:
            architectures = [arch, *entry.get("subArchitectures", [])]
    syscalls = []
    for rule in profile.get("syscalls", []):
        includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
        if includes.get("caps") and not set(includes["caps"]) <= caps:
            continue
        if includes.get("arches") and _arch_name(arch) not in includes["arches"]:
            continue
        if includes.get("minKernel") and _kernel_tuple(kernel) < _kernel_tuple(includes["minKernel"]):
            continue
        if excludes.get("caps") and set(excludes["caps"]) & caps:
            continue
        if excludes.get("arches") and _arch_name(arch) in excludes["arches"]:
            continue
        oci_rule = {"names": rule["names"], "action": rule["action"], "args": rule.get("args") or []}
        if "errnoRet" in rule:
            oci_rule["errnoRet"] = rule["errnoRet"]
        syscalls.append(oci_rule)
    result = {"defaultAction": profile["defaultAction"], "architectures": architectures,
              "syscalls": syscalls}
    if "defaultErrnoRet" in profile:
        result["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return result


def _scmp_arch(machine: str) -> str:
    return {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}.get(
        machine, f"SCMP_ARCH_{machine.upper()}")


def _arch_name(scmp_arch: str) -> str:
    # containers-common lists arches as Go names in includes/excludes.
    return {"SCMP_ARCH_X86_64": "amd64", "SCMP_ARCH_AARCH64": "arm64"}.get(scmp_arch, scmp_arch)


def _kernel_tuple(release: str) -> tuple[int, ...]:
    parts = []
    for piece in release.split("-")[0].split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def resolve_user(rootfs: str, user: str) -> tuple[int, int, tuple[int, ...]]:
    """uid, gid and supplementary gids for USER[:GROUP] (names or numbers), read from
    the root filesystem's own files. As podman: a numeric uid takes its passwd entry's
    group, and only a user without an explicit group gets the groups listing it."""
    if not user:
        return 0, 0, ()
    name, _, group = user.partition(":")
    passwd = _read_db(os.path.join(rootfs, "etc/passwd"))
    groups = _read_db(os.path.join(rootfs, "etc/group"))
    if name.isdigit():
        uid = int(name)
        gid = next((int(e[3]) for e in passwd if e[2] == name), 0)
    else:
        entry = next((e for e in passwd if e[0] == name), None)
        if entry is None:
            raise UsageError(f"user {name!r} is not in the image's /etc/passwd")
        uid, gid = int(entry[2]), int(entry[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            entry = next((e for e in groups if e[0] == group), None)
            if entry is None:
                raise UsageError(f"group {group!r} is not in the image's /etc/group")
            gid = int(entry[2])
    if group:
        return uid, gid, ()
    username = next((e[0] for e in passwd if e[2] == str(uid)), None)
    extra = tuple(sorted({int(e[2]) for e in groups if username and username in e[3].split(",")}))
    return uid, gid, extra


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            rows = [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []
    return [r for r in rows if len(r) >= 4 and r[2].isdigit()]


def default_mounts() -> list[dict]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={SHM_SIZE}"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]


def build(spec: ContainerSpec) -> dict:
    process = spec.process
    env = list(process.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, f"PATH={DEFAULT_PATH}")
    if process.terminal and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    caps = list(spec.capabilities)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount") + (("cgroup",) if spec.cgroupns else ())]
    namespaces.append({"type": "network", "path": spec.netns_path} if spec.netns_path
                      else {"type": "network"})
    mounts = default_mounts()
    if spec.shm_source:
        mounts = [{"destination": "/dev/shm", "type": "bind", "source": spec.shm_source,
                   "options": ["bind", "rprivate", "nosuid", "noexec", "nodev"]} if m["destination"] == "/dev/shm"
                  else m for m in mounts]
    mounts += [
        {"destination": m.destination, "type": m.type, "source": m.source, "options": list(m.options)}
        for m in spec.mounts]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": process.terminal,
            "user": {"uid": process.uid, "gid": process.gid,
                     **({"additionalGids": list(process.additional_gids)} if process.additional_gids else {})},
            "args": list(process.args),
            "env": env,
            "cwd": process.cwd or "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": clamped_rlimits(),
            "noNewPrivileges": spec.no_new_privileges,
        },
        "root": {"path": spec.rootfs, "readonly": False},
        "hostname": spec.hostname,
        "mounts": mounts,
        "annotations": dict(spec.annotations),
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": f"/{spec.cgroup_parent}/{spec.container_id}",
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "seccomp": seccomp_profile(spec.capabilities),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
