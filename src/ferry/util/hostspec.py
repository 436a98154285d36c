"""What a container may be granted on this host, shared by the runtime spec
(runtime/spec.py), the typed host config (engine/hostconfig.py) and inspect,
which must stay light: no typing, no records, plain tuples and dicts.
"""

from __future__ import annotations

import resource

# Linux capability names, numbered as include/uapi/linux/capability.h (41 on kernel 6.x).
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
SHM_SIZE = 64 * 1024 * 1024   # each container's /dev/shm, as podman's

# podman 4's default set (containers.conf), and ferry's.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID",
    "CAP_SYS_CHROOT",
)
ALL = "ALL"
CPU_PERIOD = 100_000           # podman's CFS period (µs) for --cpus
# podman asks for these; the host may allow less.
WANTED_RLIMITS = {"RLIMIT_NOFILE": 1048576, "RLIMIT_NPROC": 4194304}
# HOST-NOTES reported RLIMIT_NPROC == hard limit failing inside runc; with runc
# 1.1.5 on this host it worked (nofile 20000, nproc 96551), so clamp to the hard limit.
# What podman adds to every tmpfs it mounts, unless an option given says otherwise.
TMPFS_DEFAULTS = (("rw", "ro"), ("rprivate", None), ("nosuid", "suid"), ("nodev", "dev"),
                  ("tmpcopyup", "notmpcopyup"))
# podman keeps these writable under --read-only (its --read-only-tmpfs, on by default).
READ_ONLY_TMPFS = ("/run", "/tmp", "/var/tmp")


def bounding_set() -> frozenset:
    """The capabilities this process may grant: its bounding set (this host
    lacks CAP_SYS_RESOURCE, so podman's ALL lacks it too)."""
    with open("/proc/self/status") as f:
        bits = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    return frozenset(name for number, name in enumerate(CAPABILITIES) if bits >> number & 1)


def capabilities(privileged: bool, cap_add, cap_drop, available=None) -> tuple:
    """The bounding (and effective) set, as podman computes it: ALL and
    --privileged mean every capability `available` has (all when None);
    --cap-drop ALL starts from none, then --cap-add adds."""
    everything = tuple(sorted(c for c in CAPABILITIES if available is None or c in available))   # podman's order
    if privileged:
        return everything
    if ALL in cap_drop:
        caps = set()
    elif ALL in cap_add:
        caps = set(everything)
    else:
        caps = set(DEFAULT_CAPABILITIES)
    caps |= {c for c in cap_add if c != ALL}
    caps -= set(cap_drop)
    return tuple(sorted(caps))


def tmpfs_options(options) -> list:
    """A tmpfs's mount options as podman gives them: these, then its defaults that none overrides."""
    given = set(options)
    return list(options) + [default for default, other in TMPFS_DEFAULTS
                            if default not in given and other not in given]


def host_hard_limit(name: str):
    """This process's hard limit of RLIMIT_* `name`; None when unlimited or unknown here."""
    number = getattr(resource, name, None)
    if number is None:
        return None
    hard = resource.getrlimit(number)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def clamped_rlimits(wanted: dict = WANTED_RLIMITS, asked=()) -> list:
    """ferry's default rlimits, each replaced by the one `asked` of its type
    (RLIMIT_*, soft, hard), all clamped to this host's hard limits: runc cannot
    raise one above it. `run` refuses a value above it; a restore on a host
    that allows less gets what this host allows."""
    chosen = {name: (value, value) for name, value in wanted.items()}
    chosen.update({name: (soft, hard) for name, soft, hard in asked})
    limits = []
    for name, (soft, hard) in chosen.items():
        host_hard = host_hard_limit(name)
        if host_hard is not None:
            soft, hard = min(soft, host_hard), min(hard, host_hard)
        limits.append({"type": name, "hard": hard, "soft": soft})
    return limits
