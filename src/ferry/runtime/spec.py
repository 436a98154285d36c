"""OCI runtime spec generation with podman's secure defaults.

The defaults mirror podman 4 (containers.conf): a short capability list, masked
and read-only /proc and /sys paths, no_new_privileges, and the containers-common
seccomp profile. Rlimits are clamped to the host's hard limits, because without
CAP_SYS_RESOURCE runc cannot raise them (HOST-NOTES).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from ferry.util.errors import NotFound, UsageError
# The capability and rlimit defaults live with what inspect reads too (no typing there).
from ferry.util.hostspec import DEFAULT_CAPABILITIES, SHM_SIZE, clamped_rlimits

SECCOMP_PROFILE = "/usr/share/containers/seccomp.json"

MASKED_PATHS = (
    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/fs/selinux", "/sys/dev/block",
)
READONLY_PATHS = ("/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                  "/proc/sysrq-trigger")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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
    # What `run` asked of the host (engine/hostconfig.py), resolved by the engine:
    rlimits: tuple[tuple[str, int, int], ...] = ()   # (RLIMIT_*, soft, hard) in place of the default of that type
    readonly_root: bool = False
    memory: int = 0               # bytes; 0: no limit
    memory_swap: int = 0          # memory + swap; podman asks for twice the memory
    cpu_quota: int = 0            # µs per cpu_period; 0: none
    cpu_period: int = 0
    ipc_host: bool = False        # no IPC namespace of its own
    privileged: bool = False      # no seccomp, no masked or read-only paths, /sys writable, every device allowed
    host_network: bool = False     # no network namespace of its own: the host's (netns_path must be None)


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
    kinds = ("pid",) + (() if spec.ipc_host else ("ipc",)) + ("uts", "mount")
    namespaces = [{"type": t} for t in kinds + (("cgroup",) if spec.cgroupns else ())]
    if spec.host_network:
        if spec.netns_path:
            raise ValueError("a container on the host's network joins no other network namespace")
    else:
        namespaces.append({"type": "network", "path": spec.netns_path} if spec.netns_path
                          else {"type": "network"})
    given = {m.destination for m in spec.mounts}   # a tmpfs at /dev/shm replaces ferry's, as in podman
    mounts = [m for m in default_mounts() if m["destination"] not in given]
    if spec.shm_source:
        mounts = [{"destination": "/dev/shm", "type": "bind", "source": spec.shm_source,
                   "options": ["bind", "rprivate", "nosuid", "noexec", "nodev"]} if m["destination"] == "/dev/shm"
                  else m for m in mounts]
    if spec.privileged:   # podman's: /sys and its cgroups writable
        mounts = [{**m, "options": [o for o in m["options"] if o != "ro"] + ["rw"]}
                  if m["destination"] in ("/sys", "/sys/fs/cgroup") else m for m in mounts]
    mounts += [
        {"destination": m.destination, "type": m.type, "source": m.source, "options": list(m.options)}
        for m in spec.mounts]
    resources: dict = {"devices": [{"allow": spec.privileged, "access": "rwm"}]}
    if spec.memory:
        resources["memory"] = {"limit": spec.memory, **({"swap": spec.memory_swap} if spec.memory_swap else {})}
    if spec.cpu_quota:
        resources["cpu"] = {"quota": spec.cpu_quota, "period": spec.cpu_period}
    linux = {
        "namespaces": namespaces,
        "cgroupsPath": f"/{spec.cgroup_parent}/{spec.container_id}",
        "resources": resources,
    }
    if not spec.privileged:
        linux.update(seccomp=seccomp_profile(spec.capabilities), maskedPaths=list(MASKED_PATHS),
                     readonlyPaths=list(READONLY_PATHS))
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
            "rlimits": clamped_rlimits(asked=spec.rlimits),
            "noNewPrivileges": spec.no_new_privileges,
        },
        "root": {"path": spec.rootfs, "readonly": spec.readonly_root},
        "hostname": spec.hostname,
        "mounts": mounts,
        "annotations": dict(spec.annotations),
        "linux": linux,
    }
