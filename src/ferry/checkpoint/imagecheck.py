"""CRIU's images checked against the restored container's OCI spec, before CRIU reads them.

CRIU restores what its images say, as root: credentials and capabilities,
seccomp, namespaces, mounts, cgroups, rlimits, scheduling, sockets. An archive
from another host may be forged, so `check_images` refuses every image field
that would give the restored container more than the spec generated on this
host grants, in one line naming the image, the task and the field. Each rule is
derived from the spec (or, where the spec leaves a value to the host, from this
host), and follows how CRIU 4.2 reads the field; the CRIU source it relies on
is cited as criu/FILE.c:function.

What these rules cannot see is listed at the end of this docstring.

Rules, in the order they are checked:
- files: every file of the directory is a regular file with one link (CRIU
  follows links: pages-1.img linked to /etc/shadow would become the task's
  memory); each image read is under a size bound and decoded with pycriu's
  protobuf classes; a message missing a required field is refused, as
  CRIU's protobuf-c refuses it. Legacy per-type images (inetsk.img,
  packetsk.img, creds-N.img...) are refused: CRIU 4 writes every open file to
  files.img and credentials into core-N.img, yet still reads those files.
- namespaces (inventory.img root_ids, ids-PID.img): CRIU creates a namespace
  for the root task exactly where its ids differ from root_ids, the dumping
  CRIU's own (criu/pstree.c:get_clone_mask); a root task whose id equals
  root_ids' is restored in the restoring CRIU's namespace, the host's (seen
  here: a forged uts_ns_id gave a restored container the host's hostname).
  So for every namespace type the spec creates or joins, the root task's id
  must be present and differ from root_ids'; for every other type but time it
  must equal it (CRIU makes a time namespace on every restore anyway); every
  task shares the root task's namespaces. A network namespace the spec joins
  by path must be marked external (netns-ID.img ext_key), else CRIU would
  build one from the images instead of joining it.
- tasks (pstree.img, core-TID.img): every live task has its mm-PID.img and
  fs-PID.img (CRIU dereferences the entry a missing one lacks). Every live
  thread has creds in its thread_core (without them CRIU keeps its own root
  credentials for the task, criu/cr-restore.c:rst_prep_creds). For each:
  cap_inh, cap_prm, cap_eff, cap_bnd and cap_amb within the spec's bounding
  set; no_new_privs=1 when the spec sets noNewPrivileges; uids/gids equal to
  the spec's user unless the spec grants CAP_SETUID/CAP_SETGID; secbits
  beyond KEEP_CAPS only with CAP_SETPCAP; an LSM label only the spec's (or
  "unconfined" when it sets none), no AppArmor policy blobs; real-time
  policies, negative nice, lowered oom_score_adj, raised rlimits and
  alarm-clock timers only as the spec's capabilities and rlimits (or, for
  what it leaves out, this host's) allow: CRIU sets them all before it drops
  its own privileges (criu/pie/restorer.c).
- seccomp (when the spec has linux.seccomp): every live thread in mode filter
  with a valid filter chain, or strict, or covered by its leader's TSYNC
  filter (CRIU records seccomp on the leader of a multi-threaded task only:
  a real redis dump). The filters' content: for every ABI this machine runs
  (x86_64, x32 and 32-bit x86 here), no syscall that the spec's profile
  denies whatever its arguments (by name, numbered by libseccomp as in runc's
  filter) may reach an allowing action in every filter of the chain, for any
  arguments; an ABI the spec does not list must allow nothing. The BPF runs
  on an abstract seccomp_data (see _allowed_syscalls).
- mounts (mountpoints-ID.img of the root task's mount namespace), an
  allow-list built from the spec: the root at "/" (CRIU binds the spec's root
  there, whatever the image says it was); a fresh mount of the spec's type at
  each spec destination (a cgroup mount may be runc's tmpfs plus one cgroup
  hierarchy of this host per subdirectory); a read-only tmpfs at a masked
  directory; runc's external binds: "/dev/null" at masked files and each spec
  bind destination at itself (runc maps both keys to host paths from the spec,
  criu/mount.c:get_mp_root); read-only binds of /proc or /sys onto their own
  paths for the spec's readonlyPaths; the pty bind at /dev/console for a
  terminal. Each keeps the spec's ro/nosuid/nodev/noexec and mount options
  (a tmpfs no larger than the spec's size, cgroup options of a hierarchy this
  host has, no release_agent). No '..' and no NUL in paths, one mount per
  mountpoint, parents that enclose their children, no propagation, plugins,
  "deleted" roots or fsname. No mount may be a bind of the container's root
  filesystem, of an external mount, or of anything but /proc, /sys or devpts:
  CRIU resolves a bind's root as a path below its source, following the
  symlinks that the archive's rootfs or volumes contain. Every masked and
  read-only path below a restored /proc or /sys that exists on this host must
  be covered, as runc would cover it.
- tmpfs contents (tmpfs-dev-*.tar.gz.img): GNU tar extracts them as root;
  no member name or link with '..', no absolute hard link, no device but
  runc's default devices and the spec's, within the tmpfs's size.
- cgroups (cgroup.img): one top-level directory per controller, of this host's
  hierarchies only (runc maps each to the new container's cgroup, and CRIU
  rewrites the sets under it, criu/cgroup.c:rewrite_cgroup_roots); every set's
  paths below it with the matching cgroup namespace prefix; no '..', '/', '.'
  or NUL in child directory or property names, no release_agent; root-owned,
  not group/other-writable permissions; with a cgroup namespace in the spec,
  the root task in a set with a namespace prefix (else CRIU leaves it in the
  host's cgroup namespace, criu/cgroup.c:prepare_cgroup_namespace).
- files (files.img): a packet or raw socket needs CAP_NET_RAW; a tun file,
  SO_MARK, SO_PRIORITY > 6 or a socket buffer beyond what this host gives an
  unprivileged socket (2 x [rw]mem_max, or TCP's autotuned tcp_[rw]mem
  maximum) needs CAP_NET_ADMIN; fanotify CAP_SYS_ADMIN, a BPF map CAP_BPF or
  CAP_SYS_ADMIN, an alarm timerfd CAP_WAKE_ALARM; sockets live in the
  container's network namespace. apparmor.img holds no policy.
- memory pages (every pagemap-PID.img and pagemap-shmem-ID.img): the pages
  image its head names (pages_id) exists, is named by no other pagemap, and
  is exactly as long as the pages of its PE_PRESENT runs: CRIU's restorer
  reads them with preadv, takes 0 at the end of the file for a short read and
  retries forever, two log lines a time (criu/pie/restorer.c, the Preadv
  loop; criu/pagemap.c:process_async_reads does the same), so a truncated
  pages image hung the restore and filled the disk with its log. No
  PE_PARENT run (no pre-dump images exist), no PE_LAZY run without
  PE_PRESENT (a plain restore has no page server), no unknown flag; runs of
  at least one page, page-aligned, sorted and not overlapping, below the top
  of a task's address space (47 bits, 56 with 5-level paging). CRIU itself
  refuses a page outside the task's private VMAs
  (criu/mem.c:restore_priv_vma_content), and nothing else of this.

Not checked (what a forged image can still do):
- seccomp, partly: syscalls the spec allows only for some arguments
  (personality, socket in ferry's profile) are not compared, nor the errno or
  kill a denial returns; a filter that allows them for other arguments passes;
- process memory, registers, open files' paths and flags (CRIU opens them as
  root, inside the container's mount namespace: a non-root process can get an
  fd on a root-only file of its own container), the rootfs and volume contents;
- mountpoints are resolved by CRIU through the container's rootfs, which the
  archive also supplies: a symlinked directory in it can misplace an allowed
  mount (a rootfs check before the restore is needed, as runc does at create);
- network namespace contents when the spec creates a new one (ferry's specs
  join one, so CRIU ignores them), SysV IPC and UTS contents (namespaced);
- loginuid, personality, signal and timer state, rseq, pdeath_sig;
  descriptors.json (runc maps only its own stdio by it), TCP stream, pipe and
  page contents; whether a shared memory pagemap fits its segment (CRIU
  stops at a run past the end, criu/shmem.c:do_restore_shmem_content).
"""

from __future__ import annotations

import errno
import gzip
import os
import posixpath
import re
import resource
import stat
import struct
import tarfile
import zlib
from typing import Callable, Iterable, Iterator, NamedTuple

from ferry.util.errors import BadArchive, from_os_error
from ferry.util.hostspec import CAPABILITIES

HINT = ("its CRIU images ask for more than this restore grants: they were altered, or come from a "
        "container with other privileges; do not restore this archive")

# Images CRIU would hang or crash on are damage or forgery, not privileges.
DAMAGE_HINT = ("its CRIU images are damaged or were altered, and CRIU would hang or crash on them; do not "
               "restore this archive")

KIB, MIB = 1 << 10, 1 << 20
# The largest size read of each image. Measured on ferry dumps of nginx, redis
# and busybox: core-N.img 17 KiB (x86 xsave state), mountpoints 7 KiB, cgroup
# 11 KiB, seccomp 12.5 KiB a filter, files.img 8 KiB; the bounds leave room for
# large containers (many threads, filters, mounts and open files).
MAX_BYTES = {
    "INVENTORY": 64 * KIB, "PSTREE": 16 * MIB, "IDS": 64 * KIB, "CORE": 1 * MIB,
    "SECCOMP": 16 * MIB, "MNTS": 4 * MIB, "CGROUP": 16 * MIB, "NETNS": 4 * MIB,
    "FILES": 64 * MIB, "FDINFO": 16 * MIB, "APPARMOR": 1 * MIB, "FS": 4 * KIB,
    # pagemap: about 18 bytes a run (1.2 GB of redis: 381 runs, 7 KiB); 16 MiB
    # holds a million one-page runs, checked in 2 s here.
    "PAGEMAP": 16 * MIB,
    "MM": 4 * MIB,   # read by `ferry checkpoint inspect`: one entry, its VMAs
    "FILE_LOCKS": 4 * MIB,   # read by `ferry checkpoint inspect`: about 20 bytes a lock
}
MAX_THREADS = 65536
PATH_MAX = 4096   # CRIU builds every path in a PATH_MAX buffer
# tmpfs contents are gzip'd tars; one without a size option in the spec (masked
# directories, runc's cgroup tmpfs: a few hundred bytes in real dumps) may hold this much.
UNSIZED_TMPFS_BYTES = 1 * MIB
MAX_TMPFS_FILES = 65536

CAP_NUMBER = {name: number for number, name in enumerate(CAPABILITIES)}
CAP_SETSETS = ("cap_inh", "cap_prm", "cap_eff", "cap_bnd", "cap_amb")

# OCI namespace type -> task_kobj_ids_entry field (images/core.proto).
NAMESPACES = {"mount": "mnt_ns_id", "pid": "pid_ns_id", "network": "net_ns_id", "ipc": "ipc_ns_id",
              "uts": "uts_ns_id", "user": "user_ns_id", "cgroup": "cgroup_ns_id", "time": "time_ns_id"}

# CRIU puts every restored tree in a new time namespace of its own (it keeps
# CLOCK_MONOTONIC going, criu/cr-restore.c: prepare_timens(0)), so a container
# restored once is dumped with a time_ns_id of its own: seen here on the second
# checkpoint of every restored container. Its offsets only shift the
# container's own monotonic and boot-time clocks.
NAMESPACES_CRIU_MAKES = ("time",)

TASK_ALIVE, TASK_DEAD, TASK_STOPPED = 1, 2, 3
SECCOMP_DISABLED, SECCOMP_STRICT, SECCOMP_FILTER = 0, 1, 2
SECCOMP_FILTER_FLAG_TSYNC = 1
BPF_MAXINSNS = 4096
SECBIT_KEEP_CAPS = 1 << 4
SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE = 0, 1, 2, 3, 5
SCHED_RESET_ON_FORK = 0x40000000
RLIM_INFINITY = (1 << 64) - 1
RLIMIT_NAMES = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS",
                "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS",
                "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME")
RLIMIT_NICE, RLIMIT_RTPRIO = 13, 14
CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM = 8, 9

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
FLAG_OPTIONS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
# images/mnt.proto enum fstype.
FSTYPES = {0: "unsupported", 1: "proc", 2: "sysfs", 3: "devtmpfs", 4: "binfmt_misc", 5: "tmpfs",
           6: "devpts", 7: "simfs", 8: "pstore", 9: "securityfs", 10: "fusectl", 11: "debugfs",
           12: "cgroup", 13: "aufs", 14: "mqueue", 15: "fuse", 16: "auto", 17: "overlay",
           18: "autofs", 19: "tracefs", 23: "cgroup2"}
FSTYPE_CODE = {name: code for code, name in FSTYPES.items()}
PROC, SYSFS, TMPFS, DEVPTS, CGROUP, CGROUP2 = 1, 2, 5, 6, 12, 23
# Mount options the kernel shows for each fresh mount ferry's specs ask for;
# others (release_agent for cgroup, context= ...) are refused.
FS_OPTIONS = {
    "proc": {"hidepid", "gid", "subset"},
    "sysfs": set(),
    "tmpfs": {"size", "nr_blocks", "nr_inodes", "mode", "uid", "gid", "inode64", "inode32", "huge", "noswap"},
    "devpts": {"gid", "mode", "ptmxmode", "newinstance", "uid", "max"},
    "mqueue": set(),
}
# runc creates these device nodes in every container (libcontainer/specconv
# AllowedDevices); the spec's linux.devices add to them.
RUNC_DEVICES = frozenset({("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9), ("c", 5, 0)})
# Pagemap entry flags (criu/include/pagemap.h).
PE_PARENT, PE_LAZY, PE_PRESENT = 1 << 0, 1 << 1, 1 << 2
PAGEMAP_IMAGE = re.compile(r"pagemap-(shmem-)?(\d+)\.img")
PAGE_SIZE = resource.getpagesize()
# The top of a task's address space (compel/arch/x86/src/lib/infect.c:
# compel_task_size): 47 bits, or 56 with 5-level paging; a page less.
TASK_SIZE_47, TASK_SIZE_56 = (1 << 47) - PAGE_SIZE, (1 << 56) - PAGE_SIZE

# runc's key for an external network namespace (libcontainer criuNsToKey).
NETNS_EXT_KEY = "extRootNetNS"

# images/fdinfo.proto enum fd_types.
FD_REG, FD_INETSK, FD_PACKETSK, FD_FANOTIFY, FD_NETLINKSK, FD_TUNF, FD_TIMERFD, FD_BPFMAP, FD_UNIXSK = \
    1, 4, 10, 12, 13, 15, 17, 19, 5
SOCK_RAW = 3
# Per-type file images that CRIU 4 no longer writes but still reads
# (criu/*.c collect_image_info .fd_type = CR_FD_...), and per-task images
# replaced by fields in core-N.img.
LEGACY_IMAGES = ("reg-files", "ext-files", "ns-files", "eventfd", "eventpoll", "eventpoll-tfd", "signalfd",
                 "inotify", "inotify-wd", "fanotify", "fanotify-mark", "pipes", "fifo", "unixsk", "inetsk",
                 "packetsk", "netlinksk", "tty", "tunfile", "timerfd", "bpfmap-file", "binfmt-misc")
LEGACY_TASK_IMAGES = re.compile(r"(creds|rlimit|itimers|posix-timers|vmas|sigacts|binfmt-misc)-\d+\.img")


# ---- what this host contributes --------------------------------------------------------------

# NamedTuples rather than frozen dataclasses: a dataclass compiles its methods
# with exec at import, which every restore pays.
class HostFacts(NamedTuple):
    """What the spec leaves to the host, read from the restoring process's own view."""
    cgroup_hierarchies: frozenset       # frozensets of controller names; {""} is the cgroup2 hierarchy
    cgroup2_options: frozenset          # super options of this host's cgroup2 mount
    rlimit_hard: dict                   # resource number -> hard limit a container inherits
    oom_score_adj: int                  # what a container inherits
    socket_buffer_max: tuple            # largest (send, receive) buffer an unprivileged socket gets
    exists: Callable[[str], bool] = os.path.lexists
    task_size: int = TASK_SIZE_47       # the top of a task's address space

    @classmethod
    def probe(cls) -> "HostFacts":
        hierarchies = set()
        for line in _read_text("/proc/self/cgroup").splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3:
                hierarchies.add(frozenset(parts[1].split(",")))
        cgroup2_options: set[str] = set()
        for line in _read_text("/proc/self/mountinfo").splitlines():
            before, _, after = line.partition(" - ")
            fields_after = after.split()
            if len(fields_after) >= 3 and fields_after[0] == "cgroup2":
                cgroup2_options.update(fields_after[2].split(","))
        hard = {}
        for number, name in enumerate(RLIMIT_NAMES):
            if hasattr(resource, name):
                value = resource.getrlimit(getattr(resource, name))[1]
                hard[number] = RLIM_INFINITY if value == resource.RLIM_INFINITY else value
        # setsockopt doubles what it is asked for, up to [rw]mem_max; TCP's
        # autotuning grows buffers up to tcp_[rw]mem's third value (4 MiB send
        # buffer on an established redis connection here).
        buffers = tuple(max(2 * _read_int(f"/proc/sys/net/core/{k}mem_max", 212992),
                            _read_third(f"/proc/sys/net/ipv4/tcp_{k}mem")) for k in ("w", "r"))
        return cls(frozenset(hierarchies), frozenset(cgroup2_options), hard,
                   _read_int("/proc/self/oom_score_adj", 0), buffers, task_size=_task_size())


def _task_size() -> int:
    """As CRIU finds it: 56-bit addresses when the kernel runs 5-level page tables."""
    if os.uname().machine != "x86_64":
        return TASK_SIZE_56   # a bound against wrapping around, not this machine's exact limit
    # The kernel clears la57 from the CPU's flags unless it uses 5-level paging
    # (arch/x86/kernel/cpu/common.c).
    for line in _read_text("/proc/cpuinfo").splitlines():
        if line.startswith("flags"):
            return TASK_SIZE_56 if "la57" in line.split() else TASK_SIZE_47
    return TASK_SIZE_47


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _read_third(path: str) -> int:
    fields_read = _read_text(path).split()
    return int(fields_read[2]) if len(fields_read) == 3 and fields_read[2].isdigit() else 0


def _read_int(path: str, default: int) -> int:
    try:
        return int(_read_text(path).strip())
    except ValueError:
        return default


# ---- what the spec grants ----------------------------------------------------------------------

class _SpecMount(NamedTuple):
    destination: str
    type: str
    flags: int              # MS_* the spec asks for
    size: int | None        # tmpfs size= in bytes
    bind: bool


class _Grant(NamedTuple):
    bounding: frozenset
    seccomp: bool
    seccomp_profile: dict
    no_new_privs: bool
    uid: int
    gid: int
    groups: frozenset
    namespaces: dict        # OCI type -> joined path, or "" when created
    mounts: dict            # destination -> _SpecMount
    masked: frozenset
    readonly: frozenset
    terminal: bool
    root_readonly: bool
    rlimits: dict           # resource number -> hard
    oom_score_adj: int | None
    lsm_label: str
    devices: frozenset


def _grant(spec: dict) -> _Grant:
    process = spec.get("process") or {}
    linux = spec.get("linux") or {}
    caps = process.get("capabilities") or {}
    user = process.get("user") or {}
    mounts = {}
    for m in spec.get("mounts") or []:
        options = list(m.get("options") or [])
        destination = posixpath.normpath(m["destination"])
        bind = m.get("type") == "bind" or "bind" in options or "rbind" in options
        flags = 0
        for option in options:
            flags |= FLAG_OPTIONS.get(option, 0)
        size = next((_size(o[5:]) for o in options if o.startswith("size=")), None)
        mounts[destination] = _SpecMount(destination, "bind" if bind else m.get("type", ""), flags, size, bind)
    rlimits = {}
    for limit in process.get("rlimits") or []:
        if limit.get("type") in RLIMIT_NAMES:
            rlimits[RLIMIT_NAMES.index(limit["type"])] = int(limit["hard"])
    devices = set(RUNC_DEVICES)
    for device in linux.get("devices") or []:
        devices.add((device.get("type", "c"), int(device.get("major", -1)), int(device.get("minor", -1))))
    return _Grant(
        bounding=frozenset(CAP_NUMBER[c] for c in caps.get("bounding") or [] if c in CAP_NUMBER),
        seccomp=bool(linux.get("seccomp")),
        seccomp_profile=linux.get("seccomp") or {},
        no_new_privs=bool(process.get("noNewPrivileges")),
        uid=int(user.get("uid", 0)), gid=int(user.get("gid", 0)),
        groups=frozenset([int(user.get("gid", 0)), *map(int, user.get("additionalGids") or [])]),
        namespaces={n["type"]: n.get("path") or "" for n in linux.get("namespaces") or []},
        mounts=mounts,
        masked=frozenset(posixpath.normpath(p) for p in linux.get("maskedPaths") or []),
        readonly=frozenset(posixpath.normpath(p) for p in linux.get("readonlyPaths") or []),
        terminal=bool(process.get("terminal")),
        root_readonly=bool((spec.get("root") or {}).get("readonly")),
        rlimits=rlimits,
        oom_score_adj=process.get("oomScoreAdj"),
        lsm_label=process.get("apparmorProfile") or process.get("selinuxLabel") or "",
        devices=frozenset(devices),
    )


_SIZE_RE = re.compile(r"(\d+)([kmgtpe]?)", re.IGNORECASE)


def _size(text: str) -> int | None:
    """A tmpfs size= value in bytes; None for a percentage or anything else."""
    match = _SIZE_RE.fullmatch(text)
    if not match:
        return None
    return int(match.group(1)) << (10 * " kmgtpe".index(match.group(2).lower() or " "))


# ---- reading images ----------------------------------------------------------------------------

def _pb():
    # pycriu loads every one of its ~70 message modules at import (about 40 ms
    # here), so it is imported only when a restore checks images.
    from pycriu.images import magic, pb
    return magic, pb


def preload() -> None:
    """Load pycriu's messages on a thread of their own, while a restore waits
    on its archive and tools: the check that needs them then starts at once."""
    import threading
    threading.Thread(target=_pb, name="preload pycriu", daemon=True).start()


class CriuImages:
    def __init__(self, path: str):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.names = frozenset(os.listdir(self.fd))
        except OSError as exc:
            raise from_os_error(exc, f"CRIU images in {path} cannot be read", BadArchive) from None
        self.magic, self.pb = _pb()

    def close(self) -> None:
        os.close(self.fd)

    def open(self, name: str, limit: int) -> int | None:
        """A descriptor of regular file `name` of at most `limit` bytes, or None when there is none."""
        if name not in self.names:
            return None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BadArchive(f"CRIU image {name} is a symlink", hint=HINT) from None
            raise from_os_error(exc, f"CRIU image {name} cannot be opened", BadArchive, hint=HINT) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise BadArchive(f"CRIU image {name} is not a regular file", hint=HINT)
            if info.st_size > limit:
                raise BadArchive(f"CRIU image {name} is {info.st_size} bytes, more than the {limit} "
                                 f"such an image may take", hint=HINT)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def raw(self, name: str, limit: int) -> bytes | None:
        fd = self.open(name, limit)
        if fd is None:
            return None
        try:
            chunks, left = [], limit + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            data = b"".join(chunks)
            if len(data) > limit:
                raise BadArchive(f"CRIU image {name} grew past {limit} bytes while it was read", hint=HINT)
            return data
        except OSError as exc:
            raise from_os_error(exc, f"CRIU image {name} cannot be read", BadArchive, hint=HINT) from None
        finally:
            os.close(fd)

    def entries(self, name: str, kind: str, message: str) -> list | None:
        """The messages of image `name`, or None when there is no such file."""
        data = self.raw(name, MAX_BYTES[kind])
        if data is None:
            return None
        cls = getattr(self.pb, message)
        return [entry for entry in self.decode(name, data, kind, cls, cls, reuse=False)]

    def decode(self, name: str, data: bytes, kind: str, first_cls, cls, *, reuse: bool) -> Iterator:
        """The messages in `data`, the first of `first_cls`, the others of `cls`; with `reuse`, one
        object for all of them (a pagemap may hold a million: the caller keeps none)."""
        if len(data) < 4:
            raise BadArchive(f"CRIU image {name} is truncated", hint=HINT)
        first, = struct.unpack_from("<I", data)
        offset = 4
        if first in (self.magic.by_name["IMG_COMMON"], self.magic.by_name["IMG_SERVICE"]):
            if len(data) < 8:
                raise BadArchive(f"CRIU image {name} is truncated", hint=HINT)
            first, = struct.unpack_from("<I", data, 4)
            offset = 8
        if first != self.magic.by_name[kind] & 0xffffffff:
            raise BadArchive(f"CRIU image {name} is not a {kind} image", hint=HINT)
        view, length, entry, count = memoryview(data), len(data), None, 0
        while offset < length:
            if offset + 4 > length:
                raise BadArchive(f"CRIU image {name} is truncated", hint=HINT)
            size, = struct.unpack_from("<I", data, offset)
            offset += 4
            if offset + size > length:
                raise BadArchive(f"CRIU image {name} is truncated", hint=HINT)
            if not count:
                entry = first_cls()
            elif count == 1 or not reuse:
                entry = cls()
            try:
                entry.ParseFromString(view[offset:offset + size])   # clears the message first
                complete = entry.IsInitialized()
            except Exception as exc:  # upb raises DecodeError, and RecursionError or others on odd input
                raise BadArchive(f"CRIU image {name} cannot be decoded ({type(exc).__name__})",
                                 hint=HINT) from None
            if not complete:
                raise BadArchive(f"CRIU image {name} lacks required fields", hint=HINT)
            yield entry
            count += 1
            offset += size

    def one(self, name: str, kind: str, message: str, *, required: bool = True):
        found = self.entries(name, kind, message)
        if found is None:
            if required:
                raise BadArchive(f"CRIU image {name} is missing", hint=HINT)
            return None
        if len(found) != 1:
            raise BadArchive(f"CRIU image {name} holds {len(found)} entries, not one", hint=HINT)
        return found[0]


# ---- the checks --------------------------------------------------------------------------------

def check_images(images_dir: str, spec: dict, *, host: HostFacts | None = None, lazy: bool = False) -> None:
    """Refuse CRIU images that would give the restored container more than `spec` grants.

    `spec` is the OCI runtime config generated on this host for the restored
    container. Raises BadArchive, with one line naming the image, the task and
    the field; never anything else on hostile input.
    """
    grant = _grant(spec)
    images = CriuImages(images_dir)
    try:
        _Check(images, grant, host or HostFacts.probe(), lazy).run()
    except RecursionError:
        raise BadArchive("CRIU images nest too deeply to be checked", hint=HINT) from None
    except _NotText:
        raise BadArchive("CRIU images hold a text field that is not UTF-8", hint=HINT) from None
    finally:
        images.close()


def root_mode(images_dir: str) -> int | None:
    """The mode CRIU recorded for the root task's root directory, which its
    restore requires of the new root (criu/files-reg.c); None when the images
    do not say. Read as hostile, like everything check_images reads."""
    images = CriuImages(images_dir)
    try:
        tree = images.entries("pstree.img", "PSTREE", "pstree_entry")
        if not tree:
            return None
        fs = images.one(f"fs-{tree[0].pid}.img", "FS", "fs_entry", required=False)
        if fs is None:
            return None
        for entry in images.entries("files.img", "FILES", "file_entry") or ():
            if entry.id == fs.root_id and entry.type == FD_REG and entry.reg.HasField("mode"):
                return stat.S_IMODE(entry.reg.mode) if stat.S_ISDIR(entry.reg.mode) else None
        return None
    except (RecursionError, _NotText):
        raise BadArchive("CRIU images cannot be read", hint=HINT) from None
    finally:
        images.close()


class _NotText(Exception):
    """A string field holds bytes that are not UTF-8 (upb then returns bytes)."""


def _text(value) -> str:
    if isinstance(value, bytes):
        raise _NotText()
    return value


def _safe(text: str, limit: int = 120) -> str:
    """A value from an image, shown on one line."""
    shown = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def _cap_names(words: Iterable[int]) -> list[tuple[int, str]]:
    found = []
    for index, word in enumerate(words):
        for bit in range(32):
            if word >> bit & 1:
                number = index * 32 + bit
                found.append((number, CAPABILITIES[number] if number < len(CAPABILITIES) else f"capability {number}"))
    return found


def _is_clean_path(path: str) -> bool:
    """Absolute, normalised (no '.', '..' or empty component), no NUL, within PATH_MAX."""
    return (path.startswith("/") and "\0" not in path and len(path) < PATH_MAX
            and (path == "/" or posixpath.normpath(path) == path and not path.startswith("//")))


def _under(path: str, parent: str) -> bool:
    return parent == "/" or path == parent or path.startswith(parent + "/")


class _Thread:
    def __init__(self, pid: int, tid: int, task_comm: str, comm: str, core, leader, alive: bool):
        self.pid, self.tid, self.core, self.leader = pid, tid, core, leader
        self.task_comm, self.comm = _text(task_comm), _text(comm)
        self.alive = alive

    @property
    def image(self) -> str:
        return f"core-{self.tid}.img"

    @property
    def who(self) -> str:
        who = f"task {self.pid} ({_safe(self.task_comm)})"
        return who if self.tid == self.pid else f"{who} thread {self.tid} ({_safe(self.comm)})"


class _Check:
    def __init__(self, images: CriuImages, grant: _Grant, host: HostFacts, lazy: bool = False):
        self.images, self.grant, self.host = images, grant, host
        # A lazy restore's runs marked PE_LAZY alone come from the page server
        # (criu/uffd.c), which the migration named, not from the pages image.
        self.run_flags = (PE_PRESENT, PE_PRESENT | PE_LAZY) + ((PE_LAZY,) if lazy else ())
        self.filters = None
        self.denied = None
        self.bpf_cache: dict = {}

    def refuse(self, image: str, what: str, hint: str = HINT):
        """Refuse for what a task, mount or set in `image` asks."""
        raise BadArchive(f"CRIU image {image}: {what}", hint=hint)

    def refuse_image(self, image: str, what: str, hint: str = HINT):
        """Refuse for what `image` as a whole is or lacks."""
        raise BadArchive(f"CRIU image {image} {what}", hint=hint)

    def needs(self, cap: str, image: str, who, what: str) -> None:
        """Refuse unless the spec grants `cap`; `who` may be a function that names the holder."""
        if CAP_NUMBER[cap] not in self.grant.bounding:
            who = who() if callable(who) else who
            self.refuse(image, f"{who} {what}, which needs {cap}, which the container's spec does not grant")

    def run(self) -> None:
        self.image_files()
        inventory = self.images.one("inventory.img", "INVENTORY", "inventory_entry")
        if inventory.img_version != 2:
            self.refuse_image("inventory.img", f"has image version {inventory.img_version}, not CRIU's 2")
        if not inventory.HasField("root_ids"):
            self.refuse_image("inventory.img", "has no root_ids (the dumping CRIU's namespaces)")
        self.inventory = inventory
        tasks = self.tasks()
        self.task_list = tasks
        self.namespaces(tasks)
        for thread in (t for task in tasks for t in task["threads"]):
            self.thread(thread)
        for task in tasks:
            if task["alive"]:
                self.task_core(task["threads"][0])
        self.seccomp(tasks)
        if "mount" in self.grant.namespaces:
            self.mounts(tasks[0]["ids"].mnt_ns_id)
        self.cgroups(tasks)
        self.files(tasks[0]["ids"].net_ns_id)
        self.apparmor()
        self.pages()

    # -- image files ----------------------------------------------------------------------------
    def image_files(self) -> None:
        """Every file is a regular one of its own: CRIU follows a symlink or a hard link in its images
        directory, so pages-1.img linked to /etc/shadow would become the restored task's memory."""
        for name in sorted(self.images.names):
            try:
                info = os.lstat(name, dir_fd=self.images.fd)
            except OSError as exc:
                raise from_os_error(exc, f"CRIU image {_safe(name)} cannot be read", BadArchive,
                                    hint=HINT) from None
            if not stat.S_ISREG(info.st_mode):
                self.refuse_image(_safe(name), "is not a regular file")
            if info.st_nlink != 1:
                self.refuse_image(_safe(name), f"has {info.st_nlink} hard links; CRIU would read another file")
            if (name.endswith(".img") and name[:-4] in LEGACY_IMAGES) or LEGACY_TASK_IMAGES.fullmatch(name):
                self.refuse_image(name, "is a legacy image that CRIU 4 never writes but would still read; "
                                  "ferry does not check it")

    # -- tasks, threads and credentials ---------------------------------------------------------
    def tasks(self) -> list[dict]:
        entries = self.images.entries("pstree.img", "PSTREE", "pstree_entry")
        if not entries:
            self.refuse_image("pstree.img", "is missing or lists no task")
        roots = [e for e in entries if e.ppid == 0]
        if len(roots) != 1 or entries[0].ppid != 0:
            self.refuse_image("pstree.img", "must list exactly one root task (ppid 0), first")
        seen: set[int] = set()
        tasks = []
        for entry in entries:
            if len(seen) > MAX_THREADS:
                self.refuse_image("pstree.img", f"lists more than {MAX_THREADS} threads")
            leader_core = self.images.one(f"core-{entry.pid}.img", "CORE", "core_entry")
            if not leader_core.HasField("tc"):
                self.refuse(f"core-{entry.pid}.img", f"task {entry.pid} has no task_core")
            tc = leader_core.tc
            if tc.task_state not in (TASK_ALIVE, TASK_DEAD, TASK_STOPPED):
                self.refuse(f"core-{entry.pid}.img", f"task {entry.pid} has task_state {tc.task_state}")
            alive = tc.task_state != TASK_DEAD
            if entry is entries[0] and not alive:
                self.refuse(f"core-{entry.pid}.img", f"the root task {entry.pid} is dead")
            threads = list(entry.threads)
            if not alive and threads in ([], [0]):
                threads = [entry.pid]   # a zombie lists thread 0 (seen: a child its parent never reaped)
            if not threads or threads[0] != entry.pid:
                self.refuse("pstree.img", f"task {entry.pid} does not list itself as its first thread")
            if seen & set(threads) or len(set(threads)) != len(threads) or entry.pid <= 0:
                self.refuse("pstree.img", f"task {entry.pid} reuses a pid")
            seen.update(threads)
            if alive:
                # CRIU reads a missing image as an empty one and then uses the
                # entry it lacks (criu/mem.c:prepare_mm_pid, criu/files.c:
                # prepare_fs_pid): SIGSEGV in its restoring process, seen here.
                for name in (f"mm-{entry.pid}.img", f"fs-{entry.pid}.img"):
                    if name not in self.images.names:
                        self.refuse_image(name, f"is missing for task {entry.pid} ({_safe(_text(tc.comm))})",
                                          DAMAGE_HINT)
            ids = self.images.one(f"ids-{entry.pid}.img", "IDS", "task_kobj_ids_entry", required=False)
            if ids is None and entry is entries[0]:
                self.refuse_image(f"ids-{entry.pid}.img", f"is missing for the root task {entry.pid}")
            task = {"pid": entry.pid, "ids": ids, "alive": alive, "threads": []}
            for index, tid in enumerate(threads):
                core = leader_core if index == 0 else self.images.one(f"core-{tid}.img", "CORE", "core_entry")
                comm = tc.comm
                if core.HasField("thread_core") and core.thread_core.HasField("comm"):
                    comm = core.thread_core.comm
                task["threads"].append(_Thread(entry.pid, tid, tc.comm, comm, core,
                                               None if index == 0 else task["threads"][0], alive))
            tasks.append(task)
        return tasks

    def thread(self, t: _Thread) -> None:
        if not t.alive:   # a zombie is made by fork and exit; no credentials are restored
            return
        grant = self.grant
        if not t.core.HasField("thread_core") or not t.core.thread_core.HasField("creds"):
            self.refuse(t.image, f"{t.who} has no creds in its thread_core: CRIU would leave it "
                                 f"with CRIU's own root credentials")
        creds = t.core.thread_core.creds
        for name in CAP_SETSETS:
            for number, cap in _cap_names(getattr(creds, name)):
                if number not in grant.bounding:
                    self.refuse(t.image, f"{t.who} asks for capability {cap} ({name}), which the "
                                         f"container's spec does not grant")
        if grant.no_new_privs and not (creds.HasField("no_new_privs") and creds.no_new_privs == 1):
            self.refuse(t.image, f"{t.who} has no_new_privs {creds.no_new_privs}, but the container's "
                                 f"spec sets noNewPrivileges")
        if CAP_NUMBER["CAP_SETUID"] not in grant.bounding:
            for name in ("uid", "euid", "suid", "fsuid"):
                if getattr(creds, name) != grant.uid:
                    self.refuse(t.image, f"{t.who} has {name} {getattr(creds, name)}, not the spec's "
                                         f"{grant.uid}, and the spec does not grant CAP_SETUID")
        if CAP_NUMBER["CAP_SETGID"] not in grant.bounding:
            for name in ("gid", "egid", "sgid", "fsgid"):
                if getattr(creds, name) != grant.gid:
                    self.refuse(t.image, f"{t.who} has {name} {getattr(creds, name)}, not the spec's "
                                         f"{grant.gid}, and the spec does not grant CAP_SETGID")
            extra = set(creds.groups) - grant.groups
            if extra:
                self.refuse(t.image, f"{t.who} has supplementary group {min(extra)} (groups), which the "
                                     f"spec does not give it, and the spec does not grant CAP_SETGID")
        if creds.secbits & ~SECBIT_KEEP_CAPS:
            self.needs("CAP_SETPCAP", t.image, t.who, f"has secbits {creds.secbits:#x}")
        for name in ("lsm_profile", "lsm_sockcreate"):
            label = _text(getattr(creds, name))
            if not _lsm_label_ok(label, grant.lsm_label):
                wanted = f"the spec's {grant.lsm_label!r}" if grant.lsm_label else "no label (the spec sets none)"
                self.refuse(t.image, f"{t.who} asks for LSM label {_safe(label)!r} ({name}), not {wanted}")
        if creds.apparmor_data:
            self.refuse(t.image, f"{t.who} carries AppArmor policy data (apparmor_data), which CRIU "
                                 f"would load into this host's kernel")
        self.scheduling(t)

    def scheduling(self, t: _Thread) -> None:
        tc = t.core.thread_core
        policy = tc.sched_policy & ~SCHED_RESET_ON_FORK
        if policy in (SCHED_FIFO, SCHED_RR):
            if tc.sched_prio > self.rlimit_bound(RLIMIT_RTPRIO):
                self.needs("CAP_SYS_NICE", t.image, t.who, f"asks for real-time policy {policy} priority "
                                                           f"{tc.sched_prio} (sched_policy)")
        elif policy not in (SCHED_OTHER, SCHED_BATCH, SCHED_IDLE):
            self.needs("CAP_SYS_NICE", t.image, t.who, f"asks for scheduling policy {policy} (sched_policy)")
        nice_floor = 20 - min(self.rlimit_bound(RLIMIT_NICE), 40)
        if tc.sched_nice < min(0, nice_floor):
            self.needs("CAP_SYS_NICE", t.image, t.who, f"asks for nice {tc.sched_nice} (sched_nice)")

    def rlimit_bound(self, number: int) -> int:
        if number in self.grant.rlimits:
            return self.grant.rlimits[number]
        return self.host.rlimit_hard.get(number, RLIM_INFINITY)

    def task_core(self, t: _Thread) -> None:
        tc = t.core.tc
        for number, limit in enumerate(tc.rlimits.rlimits if tc.HasField("rlimits") else ()):
            if number >= len(RLIMIT_NAMES):
                break
            bound = self.rlimit_bound(number)
            if limit.max > bound or limit.cur > bound:
                self.needs("CAP_SYS_RESOURCE", t.image, t.who,
                           f"asks for {RLIMIT_NAMES[number]} {limit.cur}/{limit.max} above the "
                           f"{'spec' if number in self.grant.rlimits else 'host'}'s hard limit {bound} (rlimits)")
        floor = self.grant.oom_score_adj if self.grant.oom_score_adj is not None else self.host.oom_score_adj
        if tc.HasField("oom_score_adj") and tc.oom_score_adj < floor:
            self.needs("CAP_SYS_RESOURCE", t.image, t.who,
                       f"asks for oom_score_adj {tc.oom_score_adj}, below the {floor} it would start with")
        if tc.HasField("timers"):
            for timer in tc.timers.posix:
                if timer.clock_id in (CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM):
                    self.needs("CAP_WAKE_ALARM", t.image, t.who,
                               f"has a POSIX timer on alarm clock {timer.clock_id} (timers)")

    # -- namespaces -----------------------------------------------------------------------------
    def namespaces(self, tasks: list[dict]) -> None:
        root_ids = self.inventory.root_ids
        root = tasks[0]
        ids = root["ids"]
        image = f"ids-{root['pid']}.img"
        who = root["threads"][0].who
        for kind, name in NAMESPACES.items():
            value, criu_own = getattr(ids, name), getattr(root_ids, name)
            if kind in self.grant.namespaces:
                if not ids.HasField(name) or value == criu_own:
                    verb = "joins" if self.grant.namespaces[kind] else "creates"
                    self.refuse(image, f"{who} would stay in the host's {kind} namespace ({name} {value} "
                                       f"is the dumping CRIU's own, inventory.img root_ids), but the "
                                       f"container's spec {verb} one")
            elif value != criu_own and kind not in NAMESPACES_CRIU_MAKES:
                self.refuse(image, f"{who} asks for a new {kind} namespace ({name} {value}), which the "
                                   f"container's spec does not create")
        for task in tasks[1:]:
            if task["ids"] is None:
                continue   # CRIU keeps a task without ids in its parent's namespaces
            for kind, name in NAMESPACES.items():
                if getattr(task["ids"], name) != getattr(ids, name):
                    self.refuse(f"ids-{task['pid']}.img", f"{task['threads'][0].who} is in another {kind} "
                                f"namespace ({name}) than the container's first task {root['pid']}")
        path = self.grant.namespaces.get("network")
        if path is not None:
            name = f"netns-{ids.net_ns_id}.img"
            netns = self.images.one(name, "NETNS", "netns_entry", required=False)
            ext_key = _text(netns.ext_key) if netns is not None and netns.HasField("ext_key") else ""
            if path and ext_key != NETNS_EXT_KEY:
                self.refuse(name, f"the network namespace is not marked external (ext_key "
                                  f"{_safe(ext_key)!r}): CRIU would build one from the images instead of "
                                  f"joining the one the container's spec names")
            if not path and ext_key:
                self.refuse(name, f"asks to join an external network namespace (ext_key "
                                  f"{_safe(ext_key)!r}), but the container's spec creates one")

    # -- seccomp --------------------------------------------------------------------------------
    def seccomp(self, tasks: list[dict]) -> None:
        if not self.grant.seccomp:
            return
        for task in tasks:
            if not task["alive"]:
                continue
            leader = task["threads"][0]
            force_tsync = leader.core.tc.HasField("old_seccomp_filter")
            leader_mode, leader_chain = self.seccomp_of(leader)
            for t in task["threads"]:
                mode, chain = (leader_mode, leader_chain) if t is leader else self.seccomp_of(t)
                if t is not leader and t.core.HasField("tc") and t.core.tc.HasField("old_seccomp_mode"):
                    if t.core.tc.old_seccomp_mode not in (SECCOMP_STRICT, SECCOMP_FILTER):
                        self.refuse(t.image, f"{t.who} has old_seccomp_mode {t.core.tc.old_seccomp_mode}, "
                                             f"but the container's spec confines it with a seccomp filter")
                if mode == SECCOMP_FILTER:
                    self.filter_content(t, chain)
                if mode in (SECCOMP_FILTER, SECCOMP_STRICT):
                    continue
                # CRIU records seccomp on the leader of a multi-threaded task
                # only; the leader's TSYNC filter then covers every thread
                # (criu/pie/restorer.c:restore_seccomp_filter).
                covered = (t is not leader and leader_mode == SECCOMP_FILTER
                           and (force_tsync or any(f.flags & SECCOMP_FILTER_FLAG_TSYNC for f in leader_chain)))
                if not covered:
                    name = {SECCOMP_DISABLED: "disabled"}.get(mode, str(mode))
                    self.refuse(t.image, f"{t.who} has seccomp_mode {name}, but the container's spec "
                                         f"confines it with a seccomp filter")

    def seccomp_of(self, t: _Thread):
        """(mode, chain of filters, newest first) as CRIU would restore them."""
        tc, thread_core = t.core.tc, t.core.thread_core
        mode = thread_core.seccomp_mode if thread_core.HasField("seccomp_mode") else SECCOMP_DISABLED
        index = thread_core.seccomp_filter
        if t.leader is None and t.core.HasField("tc"):   # criu/cr-restore.c:check_core moves these
            if tc.HasField("old_seccomp_mode"):
                mode = tc.old_seccomp_mode
            if tc.HasField("old_seccomp_filter"):
                index = tc.old_seccomp_filter
        if mode not in (SECCOMP_DISABLED, SECCOMP_STRICT, SECCOMP_FILTER):
            self.refuse(t.image, f"{t.who} has unknown seccomp_mode {mode}")
        if mode != SECCOMP_FILTER:
            return mode, []
        filters = self.seccomp_filters()
        chain, seen = [], set()
        while True:
            if index >= len(filters) or index in seen:
                self.refuse(t.image, f"{t.who} names seccomp filter {index}, which seccomp.img does not "
                                     f"hold (seccomp_filter)")
            seen.add(index)
            entry = filters[index]
            if not entry.filter or len(entry.filter) % 8 or len(entry.filter) // 8 > BPF_MAXINSNS:
                self.refuse_image("seccomp.img", f"has filter {index}, which is not a BPF program "
                                                 f"({len(entry.filter)} bytes)")
            chain.append(entry)
            if not entry.HasField("prev"):
                return mode, chain
            index = entry.prev

    def filter_content(self, t: _Thread, chain: list) -> None:
        """Every syscall the spec denies whatever its arguments stays denied by the chain."""
        if self.denied is None:
            self.denied = _Denied(self.grant.seccomp_profile)
        for run in self.denied.runs:
            through = (1 << run.window) - 1
            for entry in chain:   # the kernel applies every filter; the strictest action wins
                through &= self.allowed(entry.filter, run)
            leak = through & run.denied
            if leak:
                number = run.base + (leak & -leak).bit_length() - 1
                shown = number if number < X32_SYSCALL_BIT else f"{number:#x}"
                self.refuse("seccomp.img", f"{t.who} has a seccomp filter that lets syscall "
                                           f"{self.denied.name(run, number)} ({run.label} {shown}) through, "
                                           f"which the container's spec denies")

    def allowed(self, program: bytes, run) -> int:
        key = (program, run.label)
        if key not in self.bpf_cache:
            try:
                self.bpf_cache[key] = _allowed_syscalls(program, run.audit_arch, run.base, run.window)
            except _BadProgram as bad:
                self.refuse_image("seccomp.img", f"holds a filter the kernel would not load ({bad})")
        return self.bpf_cache[key]

    def seccomp_filters(self) -> list:
        if self.filters is None:
            entry = self.images.one("seccomp.img", "SECCOMP", "seccomp_entry", required=False)
            self.filters = list(entry.seccomp_filters) if entry is not None else []
        return self.filters

    # -- mounts ---------------------------------------------------------------------------------
    def mounts(self, mnt_ns_id: int) -> None:
        image = f"mountpoints-{mnt_ns_id}.img"
        entries = self.images.entries(image, "MNTS", "mnt_entry")
        if not entries:
            self.refuse_image(image, "is missing or empty, but the container's spec creates a mount namespace")
        _MountCheck(self, image, entries).run()

    # -- cgroups --------------------------------------------------------------------------------
    def cgroups(self, tasks: list[dict]) -> None:
        _CgroupCheck(self, tasks).run()

    # -- open files -----------------------------------------------------------------------------
    def files(self, net_ns_id: int) -> None:
        for entry in self.images.entries("files.img", "FILES", "file_entry") or ():
            what, image = None, "files.img"
            kind = entry.type
            if kind == FD_PACKETSK:
                self.needs("CAP_NET_RAW", image, self.owner(entry.id), "is a packet socket")
                self.socket(entry.id, entry.psk.opts, entry.psk, net_ns_id)
            elif kind == FD_INETSK:
                if entry.isk.type == SOCK_RAW:
                    self.needs("CAP_NET_RAW", image, self.owner(entry.id), "is a raw socket")
                self.socket(entry.id, entry.isk.opts, entry.isk, net_ns_id)
            elif kind == FD_UNIXSK:
                self.socket(entry.id, entry.usk.opts, entry.usk, net_ns_id)
            elif kind == FD_NETLINKSK:
                self.socket(entry.id, entry.nlsk.opts, entry.nlsk, net_ns_id)
            elif kind == FD_TUNF:
                what = ("CAP_NET_ADMIN", "is a tun device")
            elif kind == FD_FANOTIFY:
                what = ("CAP_SYS_ADMIN", "is a fanotify group")
            elif kind == FD_BPFMAP and CAP_NUMBER["CAP_BPF"] not in self.grant.bounding:
                what = ("CAP_SYS_ADMIN", "is a BPF map (CAP_BPF would do too)")
            elif kind == FD_TIMERFD and entry.tfd.clockid in (CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM):
                what = ("CAP_WAKE_ALARM", f"is a timerfd on alarm clock {entry.tfd.clockid}")
            if what:
                self.needs(what[0], image, self.owner(entry.id), what[1])

    def owner(self, file_id: int):
        """A function naming the task that holds file `file_id` (fdinfo-FILES_ID.img), for a message."""
        def name() -> str:
            for task in self.task_list:
                if task["ids"] is None:
                    continue
                fds = self.images.entries(f"fdinfo-{task['ids'].files_id}.img", "FDINFO", "fdinfo_entry")
                for fd in fds or ():
                    if fd.id == file_id:
                        return f"{task['threads'][0].who} fd {fd.fd} (file {file_id})"
            return f"file {file_id}, which no task holds,"
        return name

    def socket(self, file_id: int, opts, sock, net_ns_id: int) -> None:
        who = self.owner(file_id)
        if sock.HasField("ns_id") and sock.ns_id != net_ns_id:
            self.refuse("files.img", f"{who()} is a socket in network namespace {sock.ns_id}, not the "
                                     f"container's {net_ns_id}")
        if opts.so_mark:
            self.needs("CAP_NET_ADMIN", "files.img", who, f"asks for SO_MARK {opts.so_mark}")
        if opts.so_priority > 6:
            self.needs("CAP_NET_ADMIN", "files.img", who, f"asks for SO_PRIORITY {opts.so_priority}")
        # CRIU restores buffer sizes with SO_SNDBUFFORCE/SO_RCVBUFFORCE (criu/sockets.c).
        for name, limit in (("so_sndbuf", self.host.socket_buffer_max[0]),
                            ("so_rcvbuf", self.host.socket_buffer_max[1])):
            if getattr(opts, name) > limit:
                self.needs("CAP_NET_ADMIN", "files.img", who,
                           f"asks for a {getattr(opts, name)}-byte buffer ({name}), above this host's {limit}")

    def apparmor(self) -> None:
        entry = self.images.one("apparmor.img", "APPARMOR", "apparmor_entry", required=False)
        if entry is not None and entry.namespaces:
            self.refuse_image("apparmor.img", "holds AppArmor namespaces and policies, which CRIU would load "
                                        "into this host's kernel")


    # -- memory pages ---------------------------------------------------------------------------
    def pages(self) -> None:
        """Each pagemap against the pages image it names: CRIU reads the pages of a
        task's private memory with preadv and takes a 0 at the end of the file for
        a short read, so it retries forever, logging two lines each time
        (criu/pie/restorer.c, the Preadv loop; criu/pagemap.c:process_async_reads).
        CRIU checks that every page lies in a private VMA of the task
        (criu/mem.c:restore_priv_vma_content) and nothing else here."""
        users: dict[int, str] = {}   # pages_id -> the pagemap that names it
        for name in sorted(self.images.names):
            match = PAGEMAP_IMAGE.fullmatch(name)
            if match:
                self.pagemap(name, self.pagemap_owner(bool(match.group(1)), int(match.group(2))), users)

    def pagemap_owner(self, shmem: bool, number: int) -> str:
        if shmem:
            return f"shared memory {number}"
        for task in self.task_list:
            if task["pid"] == number:
                return task["threads"][0].who
        return f"pid {number}, which pstree.img does not list,"

    def pagemap(self, name: str, who: str, users: dict) -> None:
        def refuse(what: str):
            self.refuse(name, what, DAMAGE_HINT)
        data = self.images.raw(name, MAX_BYTES["PAGEMAP"])
        entries = self.images.decode(name, data, "PAGEMAP", self.images.pb.pagemap_head,
                                     self.images.pb.pagemap_entry, reuse=True)
        head = next(entries, None)
        if head is None:
            refuse(f"{who} has no pagemap_head (pages_id)")
        pages = f"pages-{head.pages_id}.img"   # criu/image.c:open_pages_image_at
        if pages not in self.images.names:
            refuse(f"{who} has its pages in {pages} (pages_id {head.pages_id}), which is missing")
        if head.pages_id in users:
            refuse(f"{who} has its pages in {pages} (pages_id {head.pages_id}), which {users[head.pages_id]} "
                   f"names too")
        users[head.pages_id] = name
        end, present, top = 0, 0, self.host.task_size
        for index, e in enumerate(entries):   # up to a million runs: the common case is kept short
            # What CRIU makes of an entry (criu/pagemap.c:init_compat_pagemap_entry).
            flags = (e.flags if e.HasField("flags") else PE_PRESENT) | (PE_PARENT if e.in_parent else 0)
            count = e.nr_pages if e.HasField("nr_pages") else e.compat_nr_pages
            vaddr = e.vaddr
            if (flags not in self.run_flags or count <= 0 or vaddr % PAGE_SIZE
                    or vaddr < end or vaddr + count * PAGE_SIZE > top):
                refuse(self.bad_run(f"{who} entry {index} at {vaddr:#x}", flags, count, vaddr, end))
            end = vaddr + count * PAGE_SIZE
            if flags & PE_PRESENT:
                present += count
        try:
            size = os.stat(pages, dir_fd=self.images.fd, follow_symlinks=False).st_size
        except OSError as exc:
            raise from_os_error(exc, f"CRIU image {pages} cannot be read", BadArchive,
                                hint=DAMAGE_HINT) from None
        if size != present * PAGE_SIZE:
            self.refuse_image(pages, f"is {size} bytes, but {name} puts {present} pages ({present * PAGE_SIZE} "
                                     f"bytes) of {who} in it (nr_pages)", DAMAGE_HINT)

    def bad_run(self, where: str, flags: int, count: int, vaddr: int, end: int) -> str:
        """What is wrong with a pagemap entry, the first thing first."""
        if flags & PE_PARENT:
            # The restorer reads such a run at the pages image's current
            # offset (criu/mem.c:restore_priv_vma_content enqueues it, and
            # skip_pagemap_pages does not move past it): another run's pages,
            # or past the end of the file, where it spins (seen here).
            return (f"{where} has its pages in a parent image (flags {flags:#x}, PE_PARENT), but ferry's "
                    f"archives hold no pre-dump")
        if flags & ~(PE_LAZY | PE_PRESENT):
            return f"{where} has unknown flags {flags:#x}"
        if not flags & PE_PRESENT:
            # CRIU marks every run that could be lazy PE_LAZY, and PE_PRESENT
            # too when its pages are in the image (criu/page-xfer.c:ppb_xfer_flags).
            # A plain restore reads a run without PE_PRESENT as it reads a
            # PE_PARENT one, and spun on both here.
            if flags & PE_LAZY:
                return (f"{where}: its pages are to come from a page server (flags PE_LAZY without "
                        f"PE_PRESENT), and a restore from an archive has none")
            return f"{where} has no pages (flags 0), yet CRIU would read some for it"
        if count <= 0:
            return f"{where} has nr_pages {count}"
        if vaddr % PAGE_SIZE:
            # criu/mem.c:restore_priv_vma_content counts pages by shifting lengths.
            return f"{where} is not page-aligned (vaddr)"
        if vaddr < end:
            # CRIU writes runs in address order, each once (criu/page-xfer.c:page_xfer_dump_pages).
            return (f"{where} starts below the end {end:#x} of the entry before it: entries must be sorted "
                    f"and must not overlap (vaddr)")
        return (f"{where} ends at {vaddr + count * PAGE_SIZE:#x}, beyond a task's address space "
                f"({self.host.task_size:#x}) (nr_pages {count})")


# ---- seccomp filters' content ---------------------------------------------------------------
#
# runc compiles the spec's profile with libseccomp; the images hold the compiled
# classic BPF. Rather than compile the profile again, each filter is run here on
# an abstract seccomp_data: arch fixed, nr ranging over a set of syscall numbers
# (a bitmask over a window of numbers), instruction pointer and arguments
# unknown. Jumps on nr split the set, jumps on unknown values take both ways, so
# the result, the numbers for which some path returns an allowing action, holds
# for every argument. A syscall the spec denies outright must be outside it for
# at least one filter of the chain. Syscalls the spec allows only for some
# arguments (personality, socket here) are not compared.

SECCOMP_RET_ACTION_FULL = 0xffff0000
# Actions that let a syscall run: ALLOW, LOG, and TRACE (a tracer in the
# container may let it through).
ALLOWING_ACTIONS = (0x7fff0000, 0x7ffc0000, 0x7ff00000)
ALLOWING_SPEC_ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_NOTIFY")
SYSCALL_WINDOW = 768    # syscall numbers checked from each base (x86_64 ends at 462, x32 at 547 today)
SECCOMP_DATA_SIZE = 64  # nr, arch, instruction_pointer, args[6]
X32_SYSCALL_BIT = 0x40000000
# (label, libseccomp name, AUDIT_ARCH of seccomp_data.arch, base of the numbers)
# for each ABI a task of this machine can enter the kernel with.
ABIS = {
    "x86_64": (("x86_64", "x86_64", 0xc000003e, 0), ("x32", "x32", 0xc000003e, X32_SYSCALL_BIT),
               ("x86", "x86", 0x40000003, 0)),
    "aarch64": (("aarch64", "aarch64", 0xc00000b7, 0), ("arm", "arm", 0x40000028, 0)),
}


class _BadProgram(Exception):
    pass


class _Run(NamedTuple):
    label: str
    token: int          # libseccomp's architecture token
    audit_arch: int
    base: int
    window: int
    denied: int         # bit i: the spec denies syscall base+i whatever its arguments


class _Denied:
    """The syscalls the spec denies outright, per ABI, numbered by libseccomp as runc's filter is."""

    def __init__(self, profile: dict):
        self.tables = syscall_tables()
        default_allows = profile.get("defaultAction") in ALLOWING_SPEC_ACTIONS
        allowing, denying = set(), set()
        for rule in profile.get("syscalls") or []:
            if rule.get("action") in ALLOWING_SPEC_ACTIONS:
                allowing.update(rule.get("names") or [])
            elif not rule.get("args"):
                denying.update(rule.get("names") or [])
        covered = {a.removeprefix("SCMP_ARCH_").lower() for a in profile.get("architectures") or []}
        self.runs = []
        for label, arch, audit_arch, base in ABIS.get(os.uname().machine, ()):
            token, names = self.tables[label]
            denied = 0
            for index, name in enumerate(names):
                if arch not in covered:   # libseccomp kills any other ABI
                    denied |= 1 << index
                elif name is None:        # runc's filter answers ENOSYS to numbers libseccomp does not know
                    denied |= (not default_allows) << index
                elif (name in denying) if default_allows else (name not in allowing):
                    denied |= 1 << index
            self.runs.append(_Run(label, token, audit_arch, base, SYSCALL_WINDOW, denied))

    def name(self, run: _Run, number: int) -> str:
        names = self.tables[run.label][1]
        index = number - run.base
        return (names[index] if 0 <= index < len(names) else None) or "unknown"


# ---- libseccomp's syscall names, cached ------------------------------------------------------------
#
# Resolving every number of every ABI through libseccomp with ctypes cost each
# restore about 5 ms. The names depend only on this machine and the library, so
# they are kept in a file under /run/ferry (a tmpfs: one per boot, per host),
# keyed on what picks the library that dlopen (and runc) loads: LD_LIBRARY_PATH,
# the dynamic linker's cache, and the opened file's identity. The file is read
# as untrusted input: any doubt about it, and the names are resolved again.

SECCOMP_NAMES_CACHE = "/run/ferry/seccomp-names.json"
SECCOMP_NAMES_MAX_BYTES = 256 * 1024   # 20 KiB today, for 3 x 768 numbers
SECCOMP_NAMES_FORMAT = 1
LIBSECCOMP = "libseccomp.so.2"
LD_SO_CACHE = "/etc/ld.so.cache"
RTLD_DI_LINKMAP = 2
SYSCALL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
SYSCALL_NAMES = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(?: [A-Za-z_][A-Za-z0-9_]{0,63})*")


def syscall_tables() -> dict:
    """{ABI label: (libseccomp's arch token, names)}, names[i] libseccomp's name for base+i, or None."""
    abis = ABIS.get(os.uname().machine, ())
    if not abis:
        return {}
    tables = _cached_tables(abis)
    if tables is None:
        tables, library, key = _resolve_tables(abis)
        if key is not None:
            _remember_tables(library, key, tables)
    return tables


def _resolve_tables(abis: tuple) -> tuple[dict, str | None, list | None]:
    """The names, asked of libseccomp; the path dlopen opened it by and the cache key (None if unknown)."""
    import ctypes
    try:
        lib = ctypes.CDLL(LIBSECCOMP)
        libc = ctypes.CDLL(None)
    except OSError:
        raise BadArchive(f"cannot check the seccomp filters in CRIU's images: {LIBSECCOMP} cannot be "
                         "loaded", hint="install libseccomp2 (runc needs it too)") from None
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    libc.free.argtypes = [ctypes.c_void_p]
    library = _opened_path(ctypes, libc, lib)
    # Taken before the names: a library replaced while they are resolved then fails to match the key.
    key = _library_key(library) if library is not None else None
    tables = {}
    for label, arch, _audit_arch, base in abis:
        token = lib.seccomp_arch_resolve_name(arch.encode())
        names: list = [None] * SYSCALL_WINDOW
        for index in range(SYSCALL_WINDOW if token else 0):
            pointer = lib.seccomp_syscall_resolve_num_arch(token, base + index)
            if pointer:
                names[index] = ctypes.string_at(pointer).decode("ascii", "replace")
                libc.free(pointer)
        tables[label] = (token, tuple(names))
    return tables, library, key


def _opened_path(ctypes, libc, lib) -> str | None:
    """The path the dynamic linker opened `lib` by (struct link_map's l_name, which follows l_addr)."""
    try:
        dlinfo = libc.dlinfo
    except AttributeError:
        return None
    dlinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    dlinfo.restype = ctypes.c_int
    link_map = ctypes.c_void_p()
    if dlinfo(lib._handle, RTLD_DI_LINKMAP, ctypes.byref(link_map)) != 0 or not link_map.value:
        return None
    name = ctypes.c_char_p.from_address(link_map.value + ctypes.sizeof(ctypes.c_void_p)).value
    return os.fsdecode(name) if name and name.startswith(b"/") else None


def _library_key(library: str) -> list | None:
    """What the names hold for, with `library` the path dlopen took; None when it cannot be told."""
    try:
        resolved = os.path.realpath(library)
        info = os.stat(resolved)
        linker = os.stat(LD_SO_CACHE)
    except OSError:
        return None
    return [SECCOMP_NAMES_FORMAT, os.uname().machine, SYSCALL_WINDOW, os.environ.get("LD_LIBRARY_PATH"),
            os.environ.get("LD_PRELOAD"), [linker.st_dev, linker.st_ino, linker.st_size, linker.st_mtime_ns],
            library, resolved, [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns]]


def _private_dir(path: str) -> int | None:
    """An fd on directory `path` if only this user (root) can write it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and not info.st_mode & 0o022:
        return fd
    os.close(fd)
    return None


def _cached_tables(abis: tuple) -> dict | None:
    try:
        directory = _private_dir(os.path.dirname(SECCOMP_NAMES_CACHE))
        if directory is None:
            return None
        try:
            fd = os.open(os.path.basename(SECCOMP_NAMES_CACHE),
                         os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
        finally:
            os.close(directory)
        with open(fd, "rb") as f:
            info = os.fstat(fd)
            if (not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022
                    or info.st_size > SECCOMP_NAMES_MAX_BYTES):
                return None
            data = f.read(SECCOMP_NAMES_MAX_BYTES + 1)
        if len(data) > SECCOMP_NAMES_MAX_BYTES:
            return None
        return _parse_tables(data, abis)
    except Exception:   # never worth a failed restore: the names are resolved again
        return None


def _parse_tables(data: bytes, abis: tuple) -> dict | None:
    from ferry.util import strictjson
    cache = strictjson.exact_keys(strictjson.loads(data), ("library", "key", "abis"), "the cache")
    library, entries = cache["library"], cache["abis"]
    if not (type(library) is str and library.startswith("/") and len(library) < PATH_MAX
            and "\0" not in library):
        return None
    key = _library_key(library)
    if key is None or not _same(cache["key"], key):
        return None
    if type(entries) is not list or len(entries) != len(abis):
        return None
    tables = {}
    for entry, (label, _arch, _audit_arch, _base) in zip(entries, abis):
        strictjson.exact_keys(entry, ("label", "token", "names"), "an ABI")
        token, names = entry["token"], entry["names"]
        if (type(entry["label"]) is not str or entry["label"] != label or type(token) is not int
                or not 0 <= token <= 0xffffffff or type(names) is not list or len(names) != SYSCALL_WINDOW):
            return None
        known = [name for name in names if name is not None]
        if not set(map(type, known)) <= {str} or (known and not token):
            return None
        # One regex over them all (a third of the time of one per name); the
        # count of spaces refuses a name that holds one.
        joined = " ".join(known)
        if known and not (SYSCALL_NAMES.fullmatch(joined) and joined.count(" ") == len(known) - 1):
            return None
        tables[label] = (token, tuple(names))
    return tables


def _same(a, b) -> bool:
    """a == b with the same JSON types all the way down (True is not 1)."""
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _remember_tables(library: str, key: list, tables: dict) -> None:
    names = [name for _token, table in tables.values() for name in table if name is not None]
    if not all(SYSCALL_NAME.fullmatch(name) for name in names):
        return   # a cache that could never be read back
    import json
    from ferry.util.fs import atomic_write
    data = json.dumps({"library": library, "key": key,
                       "abis": [{"label": label, "token": token, "names": list(table)}
                                for label, (token, table) in tables.items()]}, separators=(",", ":"))
    if len(data) > SECCOMP_NAMES_MAX_BYTES:
        return
    directory = os.path.dirname(SECCOMP_NAMES_CACHE)
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd = _private_dir(directory)
        if fd is None:
            return   # others could swap the file: no cache there
        os.close(fd)
        atomic_write(SECCOMP_NAMES_CACHE, data, mode=0o600)
    except OSError:
        pass   # a read-only /run: the next restore resolves the names again


def _split(op: int, mask: int, k: int, base: int, window: int) -> tuple[int, int]:
    """(taken, not taken) parts of the set of numbers `mask` for a jump comparing nr with k."""
    if op == 0x10:    # jeq
        index = k - base
        if 0 <= index < window and mask >> index & 1:
            return 1 << index, mask & ~(1 << index)
        return 0, mask
    if op in (0x20, 0x30):   # jgt, jge
        low = k - base + (1 if op == 0x20 else 0)
        low = min(max(low, 0), window)
        below = mask & ((1 << low) - 1)
        return mask & ~below, below
    taken = 0   # jset
    remaining = mask
    while remaining:
        bit = remaining & -remaining
        if (base + bit.bit_length() - 1) & k:
            taken |= bit
        remaining ^= bit
    return taken, mask & ~taken


def _allowed_syscalls(program: bytes, audit_arch: int, base: int, window: int) -> int:
    """The numbers (bit i for base+i) for which some path of `program` allows the syscall.

    Abstract values: an int is known, "nr" is seccomp_data.nr (refined by
    jumps), None is unknown. Jumps only go forward, so one pass in program
    order visits every state; states at one instruction with the same values
    are merged by joining their sets of numbers.
    """
    count = len(program) // 8
    if not 0 < count <= BPF_MAXINSNS or len(program) % 8:
        raise _BadProgram(f"{len(program)} bytes")
    code = list(struct.iter_unpack("<HBBI", program))
    pending: list[dict] = [{} for _ in range(count)]
    pending[0][(0, 0, (None,) * 16)] = (1 << window) - 1   # the kernel starts with A = X = 0
    allowed = 0

    def go(target: int, state: tuple, mask: int) -> None:
        if not mask:
            return
        if target >= count:
            raise _BadProgram("a jump past the end")
        pending[target][state] = pending[target].get(state, 0) | mask

    for pc in range(count):
        op, jt, jf, k = code[pc]
        for (a, x, memory), mask in pending[pc].items():
            kind = op & 0x07
            if op == 0x20:            # ld [k]: seccomp_data word
                if k % 4 or k >= SECCOMP_DATA_SIZE:
                    raise _BadProgram(f"a load at offset {k}")
                go(pc + 1, ("nr" if k == 0 else audit_arch if k == 4 else None, x, memory), mask)
            elif op in (0x00, 0x01, 0x80, 0x81, 0x60, 0x61):   # ld/ldx imm, len, mem
                if op in (0x60, 0x61) and k >= 16:
                    raise _BadProgram(f"scratch slot {k}")
                value = k if op in (0x00, 0x01) else SECCOMP_DATA_SIZE if op in (0x80, 0x81) else memory[k]
                go(pc + 1, (value, x, memory) if op in (0x00, 0x80, 0x60) else (a, value, memory), mask)
            elif op in (0x02, 0x03):  # st, stx
                if k >= 16:
                    raise _BadProgram(f"scratch slot {k}")
                slots = list(memory)
                slots[k] = a if op == 0x02 else x
                go(pc + 1, (a, x, tuple(slots)), mask)
            elif kind == 0x04:        # alu
                go(pc + 1, (_alu(op, a, k if not op & 0x08 else x), x, memory), mask)
            elif op == 0x05:          # ja
                go(pc + 1 + k, (a, x, memory), mask)
            elif kind == 0x05 and op & 0xf0 in (0x10, 0x20, 0x30, 0x40) and op & ~0xf8 == 0x05:
                operand = k if not op & 0x08 else x
                taken, fallen = pc + 1 + jt, pc + 1 + jf
                state = (a, x, memory)
                if isinstance(a, int) and isinstance(operand, int):
                    go(taken if _compare(op & 0xf0, a, operand) else fallen, state, mask)
                elif a == "nr" and isinstance(operand, int):
                    yes, no = _split(op & 0xf0, mask, operand, base, window)
                    go(taken, state, yes)
                    go(fallen, state, no)
                else:
                    go(taken, state, mask)
                    go(fallen, state, mask)
            elif op in (0x06, 0x16):  # ret k, ret a
                action = k if op == 0x06 else a if isinstance(a, int) else None
                if action is None or action & SECCOMP_RET_ACTION_FULL in ALLOWING_ACTIONS:
                    allowed |= mask
            elif op == 0x07:          # tax
                go(pc + 1, (a, a, memory), mask)
            elif op == 0x87:          # txa
                go(pc + 1, (x, x, memory), mask)
            else:
                raise _BadProgram(f"instruction {op:#x}")
        pending[pc] = {}
    return allowed


def _alu(op: int, a, operand):
    if not (isinstance(a, int) and (isinstance(operand, int) or op == 0x84)):
        return None
    fn = op & 0xf0
    if fn in (0x30, 0x90) and not operand:
        return None   # division by zero: the kernel ends the program (kills)
    result = {0x00: lambda: a + operand, 0x10: lambda: a - operand, 0x20: lambda: a * operand,
              0x30: lambda: a // operand, 0x40: lambda: a | operand, 0x50: lambda: a & operand,
              0x60: lambda: a << (operand & 31), 0x70: lambda: a >> (operand & 31), 0x80: lambda: -a,
              0x90: lambda: a % operand, 0xa0: lambda: a ^ operand}.get(fn)
    if result is None:
        raise _BadProgram(f"alu operation {op:#x}")
    return result() & 0xffffffff


def _compare(fn: int, a: int, operand: int) -> bool:
    return {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand, 0x40: bool(a & operand)}[fn]


def _lsm_label_ok(label: str, wanted: str) -> bool:
    if not label:
        return True
    if "\0" in label:
        return False
    if wanted:   # AppArmor shows "profile (enforce)"
        return label == wanted or label.startswith(wanted + " (")
    return label == "unconfined"


class _MountCheck:
    """The mount tree of the container's mount namespace against the spec's mounts."""

    def __init__(self, check: _Check, image: str, entries: list):
        self.check, self.image, self.entries = check, image, entries
        self.grant = check.grant

    def refuse(self, entry, what: str):
        self.check.refuse(self.image, f"mount {entry.mnt_id} at {_safe(entry.mountpoint)} {what}")

    def run(self) -> None:
        by_id, by_point = {}, {}
        for e in self.entries:
            for name in ("mountpoint", "root", "source", "options", "ext_key", "fsname"):
                if "\0" in _text(getattr(e, name)):
                    self.refuse(e, f"has a NUL byte in its {name}")
            if not _is_clean_path(e.mountpoint):
                self.refuse(e, "has a mountpoint that is not a clean absolute path")
            if not (e.ext_key or _is_clean_path(e.root)):
                self.refuse(e, f"has root {_safe(e.root)!r}, not a clean absolute path (no '..')")
            if e.mnt_id in by_id:
                self.refuse(e, "reuses a mount id")
            if e.mountpoint in by_point:
                self.refuse(e, "is mounted over another mount of the same mountpoint")
            by_id[e.mnt_id] = by_point[e.mountpoint] = e
            if e.with_plugin or e.ext_mount or e.deleted:
                flag = next(n for n in ("with_plugin", "ext_mount", "deleted") if getattr(e, n))
                self.refuse(e, f"sets {flag}, which ferry's containers never have")
            if e.shared_id or e.master_id or e.internal_sharing:
                self.refuse(e, "asks for mount propagation (shared_id/master_id), which the container's "
                               "spec does not ask for")
        self.by_id, self.by_point = by_id, by_point
        self.by_dev: dict[int, list] = {}
        for e in self.entries:
            self.by_dev.setdefault(e.root_dev, []).append(e)
        root = by_point.get("/")
        if root is None:
            self.check.refuse(self.image, "has no mount at / for the container's root")
        if root.parent_mnt_id in by_id:
            self.refuse(root, "is not the root of its mount namespace")
        if root.ext_key:
            self.refuse(root, "is an external mount")
        self.root = root
        for e in self.entries:
            if e is not root:
                self.tree(e)
        for e in self.entries:
            if e is root:
                self.flags(e, MS_RDONLY if self.grant.root_readonly else 0, "the spec's root")
            elif e.ext_key:
                self.external(e)
            else:
                self.internal(e)
        self.coverage()

    def tree(self, e) -> None:
        parent = self.by_id.get(e.parent_mnt_id)
        if parent is None or parent is e:
            self.refuse(e, f"has parent {e.parent_mnt_id}, which is not a mount of this namespace")
        enclosing = self.enclosing(e.mountpoint)
        if parent.mountpoint != enclosing:
            self.refuse(e, f"names parent {parent.mnt_id} at {_safe(parent.mountpoint)}, but lies on the "
                           f"mount at {_safe(enclosing)}")

    def enclosing(self, path: str) -> str:
        """The mountpoint of the nearest mount strictly above `path`."""
        while path != "/":
            path = posixpath.dirname(path)
            if path in self.by_point:
                return path
        return "/"

    def flags(self, e, wanted: int, what: str) -> None:
        have = e.flags | e.sb_flags
        missing = [name for name, bit in FLAG_OPTIONS.items() if wanted & bit and not have & bit]
        if missing:
            self.refuse(e, f"lacks {','.join(missing)}, which {what} asks for (flags {e.flags:#x})")

    def external(self, e) -> None:
        key = e.ext_key
        if key == "/dev/null" and e.mountpoint in self.grant.masked:
            return   # runc masks a file by binding /dev/null over it; it maps the key to the host's /dev/null
        spec = self.grant.mounts.get(key)
        if spec is None and e.mountpoint == key and self.cgroup_v1_bind(key):
            # Without a cgroup namespace, runc binds each of the host's v1
            # hierarchies below the spec's cgroup mount, and maps them as
            # external mounts of their own paths (runc's getCgroupMounts).
            spec = self.grant.mounts[posixpath.dirname(key)]
            self.flags(e, spec.flags, f"the spec's cgroup mount at {spec.destination}")
            return
        if spec is None or not spec.bind or e.mountpoint != key:
            self.refuse(e, f"asks for external mount {_safe(key)!r}, which the container's spec does not "
                           f"bind there")
        self.flags(e, spec.flags, f"the spec's bind mount of {key}")

    def cgroup_v1_bind(self, key: str) -> bool:
        parent = self.grant.mounts.get(posixpath.dirname(key))
        if parent is None or parent.type != "cgroup" or "cgroup" in self.grant.namespaces:
            return False
        names = {"unified" if h == frozenset({""}) else ",".join(sorted(c.removeprefix("name=") for c in h))
                 for h in self.check.host.cgroup_hierarchies}
        return posixpath.basename(key) in names

    def internal(self, e) -> None:
        fstype = FSTYPES.get(e.fstype, f"fstype {e.fstype}")
        if e.fstype == FSTYPE_CODE["auto"] or e.fsname:   # CRIU mounts fsname from source (criu/mount.c)
            self.refuse(e, f"asks for a new mount of {self.fs_name(e)}, which the container's spec does not "
                           f"ask for")
        same = [o for o in self.by_dev[e.root_dev] if o is not e]
        if e.root_dev == self.root.root_dev:
            self.refuse(e, f"is a bind of the container's root filesystem ({_safe(e.root)}), which the "
                           f"container's spec does not ask for")
        for other in same:
            if other.ext_key and _under(e.root, other.root):
                self.refuse(e, f"would be bound from external mount {other.mnt_id} "
                               f"({_safe(other.ext_key)}), which the container's spec does not ask for")
        if e.root == "/":
            if any(o.root == "/" and not o.ext_key for o in same):
                self.refuse(e, f"mounts the same {fstype} a second time")
            if e.root_dev >> 20:
                self.refuse(e, f"asks for a new mount of {self.fs_name(e)} on block device "
                               f"{e.root_dev >> 20}:{e.root_dev & 0xfffff}, which the container's spec "
                               f"does not ask for")
            self.fresh(e, fstype)
        else:
            self.bind(e, fstype, same)

    def fresh(self, e, fstype: str) -> None:
        point = e.mountpoint
        spec = self.grant.mounts.get(point)
        if point in self.grant.masked and e.fstype == TMPFS:
            self.flags(e, MS_RDONLY, "a masked path")
            self.options(e, "tmpfs", None)
            return
        if spec is not None and not spec.bind:
            if spec.type == "cgroup" and e.fstype == TMPFS:   # runc's tmpfs for cgroup v1 hierarchies
                self.flags(e, spec.flags & ~MS_RDONLY, f"the spec's {spec.type} mount")
                self.options(e, "tmpfs", None)
                return
            if spec.type == "cgroup" and e.fstype in (CGROUP2, CGROUP) or FSTYPE_CODE.get(spec.type) == e.fstype:
                self.flags(e, spec.flags, f"the spec's {spec.type} mount")
                self.options(e, fstype, spec.size)
                return
            self.refuse(e, f"is a {fstype}, but the container's spec mounts {spec.type} there")
        parent = self.grant.mounts.get(posixpath.dirname(point))
        if parent is not None and parent.type == "cgroup" and e.fstype in (CGROUP, CGROUP2):
            self.flags(e, parent.flags, f"the spec's {parent.type} mount")   # one hierarchy per subdirectory
            self.options(e, fstype, None)
            return
        self.refuse(e, f"asks for a new mount of {self.fs_name(e)}, which the container's spec does not ask for")

    @staticmethod
    def fs_name(e) -> str:
        name = _safe(e.fsname) if e.fsname else FSTYPES.get(e.fstype, f"fstype {e.fstype}")
        return name + (f" from {_safe(e.source)}" if e.source and e.source != name else "")

    def options(self, e, fstype: str, size: int | None) -> None:
        options = [o for o in e.options.split(",") if o]
        if fstype in ("cgroup", "cgroup2"):
            self.cgroup_options(e, fstype, set(options))
            return
        allowed = FS_OPTIONS.get(fstype)
        if allowed is None:
            self.refuse(e, f"is a {fstype}, which ferry does not know how to check")
        for option in options:
            if option.partition("=")[0] not in allowed:
                self.refuse(e, f"asks for {fstype} option {_safe(option)!r}, which the container's spec does not")
        if fstype == "tmpfs":
            self.tmpfs(e, size)

    def tmpfs(self, e, size: int | None) -> None:
        if size is not None:
            values = dict(o.partition("=")[::2] for o in e.options.split(",") if o)
            have = _size(values["size"]) if "size" in values else None
            if "nr_blocks" in values and values["nr_blocks"].isdigit():
                have = min(have or RLIM_INFINITY, int(values["nr_blocks"]) * 4096)
            if have is None or have == 0 or have > size:
                self.refuse(e, f"asks for a tmpfs of {values.get('size', 'unlimited size')}, more than the "
                               f"spec's {size} bytes")
        self.check_tar(e, size)

    def cgroup_options(self, e, fstype: str, options: set) -> None:
        options -= {"rw", "ro"}
        if fstype == "cgroup2":
            extra = options - self.check.host.cgroup2_options
            if extra:
                self.refuse(e, f"asks for cgroup2 option {_safe(min(extra))!r}, which this host's "
                               f"cgroup2 does not have")
            return
        if frozenset(options) not in self.check.host.cgroup_hierarchies:
            self.refuse(e, f"asks for cgroup options {_safe(','.join(sorted(options)))!r}, which are not "
                           f"one of this host's cgroup hierarchies")

    def bind(self, e, fstype: str, same: list) -> None:
        """A bind of a kernel filesystem's subtree: readonlyPaths of /proc and /sys, the console."""
        sources = [o for o in same if o.root == "/" and not o.ext_key]
        source = sources[0] if sources else None
        if source is None or source.fstype not in (PROC, SYSFS, DEVPTS) or source.fstype != e.fstype:
            self.refuse(e, f"is a bind of {_safe(e.root)} from a {fstype} that no fresh /proc, /sys or "
                           f"devpts mount of this container provides")
        if source.fstype == DEVPTS:
            if not (self.grant.terminal and e.mountpoint == "/dev/console" and re.fullmatch(r"/\d+", e.root)):
                self.refuse(e, f"binds pty {_safe(e.root)}, but only a terminal's /dev/console may")
            return
        relative = "/" + posixpath.relpath(e.mountpoint, source.mountpoint)
        if e.mountpoint not in self.grant.readonly or not _under(e.mountpoint, source.mountpoint) \
                or e.root != relative:
            self.refuse(e, f"binds {_safe(e.root)} of {fstype}, which the container's spec does not ask for "
                           f"(its readonlyPaths are bound onto themselves)")
        self.flags(e, MS_RDONLY, "a read-only path")

    def coverage(self) -> None:
        """Masked and read-only paths below a restored /proc or /sys are covered as runc covers them."""
        for path in sorted(self.grant.masked | self.grant.readonly):
            at = self.by_point.get(path)
            below = self.by_point[self.enclosing(path)]
            if below.fstype not in (PROC, SYSFS) or not self.check.host.exists(path):
                continue   # not in a kernel filesystem restored here, or not on this kernel (runc skips it)
            if path in self.grant.masked and at is None:
                self.check.refuse(self.image, f"leaves {_safe(path)} unmasked, but the container's spec "
                                              f"masks it")
            if path in self.grant.readonly and at is None and not (below.flags | below.sb_flags) & MS_RDONLY:
                self.check.refuse(self.image, f"leaves {_safe(path)} writable, but the container's spec "
                                              f"makes it read-only")

    def check_tar(self, e, size: int | None) -> None:
        """The tmpfs's contents, which GNU tar extracts as root (criu/filesystems.c:tmpfs_restore)."""
        limit = size if size is not None else UNSIZED_TMPFS_BYTES
        for name in (f"tmpfs-dev-{e.root_dev}.tar.gz.img", f"tmpfs-{e.mnt_id}.tar.gz.img"):
            fd = self.check.images.open(name, limit + limit // 2 + MIB)
            if fd is None:
                continue
            with os.fdopen(fd, "rb") as f:
                _check_tar(self.check, name, f, limit, self.grant.devices)


def _check_tar(check: _Check, name: str, compressed, limit: int, devices: frozenset) -> None:
    stream = _BoundedGunzip(compressed, limit + MIB)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for count, member in enumerate(tar):
                if count >= MAX_TMPFS_FILES:
                    check.refuse_image(name, f"holds more than {MAX_TMPFS_FILES} files")
                parts = member.name.split("/")
                link_parts = member.linkname.split("/") if member.linkname else []
                if ".." in parts or member.name.startswith("/") or "\0" in member.name:
                    check.refuse(name, f"tmpfs member {_safe(member.name)!r} climbs out of its mount")
                if member.islnk() and (".." in link_parts or member.linkname.startswith("/")):
                    check.refuse(name, f"tmpfs member {_safe(member.name)!r} is a hard link to "
                                       f"{_safe(member.linkname)!r}, outside its mount")
                if member.isdev() and not member.isfifo():
                    key = ("b" if member.isblk() else "c", member.devmajor, member.devminor)
                    if key not in devices:
                        check.refuse(name, f"tmpfs member {_safe(member.name)!r} is device {key[0]} "
                                           f"{key[1]}:{key[2]}, which the container's spec does not give it")
    except BadArchive:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:
        why = _safe(str(exc) or type(exc).__name__)
        check.refuse_image(name, f"is not a gzip'd tar of at most {limit} bytes ({why})")


class _BoundedGunzip:
    """A gzip stream that stops with an error past `limit` decompressed bytes."""

    def __init__(self, compressed, limit: int):
        self.inner = gzip.GzipFile(fileobj=compressed)
        self.left = limit

    def read(self, size: int = -1) -> bytes:
        want = self.left + 1 if size is None or size < 0 else min(size, self.left + 1)
        chunk = self.inner.read(want)
        self.left -= len(chunk)
        if self.left < 0:
            raise ValueError("it holds more than its mount may")
        return chunk


class _CgroupCheck:
    """cgroup.img against this host's hierarchies; runc maps each to the container's cgroup."""

    def __init__(self, check: _Check, tasks: list[dict]):
        self.check, self.tasks = check, tasks
        self.image = "cgroup.img"

    def refuse(self, what: str):
        self.check.refuse(self.image, what)

    def run(self) -> None:
        entries = self.check.images.entries(self.image, "CGROUP", "cgroup_entry")
        cg = entries[0] if entries else None
        if entries and len(entries) != 1:
            self.refuse(f"holds {len(entries)} entries, not one")
        root_cg_set = self.check.inventory.root_cg_set
        host_names = {name for hierarchy in self.check.host.cgroup_hierarchies for name in hierarchy}
        tops: dict[str, str] = {}   # controller name -> its top directory (the dumped container's cgroup)
        for controller in (cg.controllers if cg else ()):
            names = [_text(n) for n in controller.cnames]
            unknown = [n for n in names if n not in host_names]
            if not names or unknown:
                self.refuse(f"names cgroup controller {_safe(','.join(unknown or names))!r}, which this host "
                            f"does not have: CRIU would create it outside the container's cgroup")
            if len(controller.dirs) != 1:
                self.refuse(f"controller {_safe(','.join(names))} has {len(controller.dirs)} top directories, "
                            f"not the container's one")
            top = controller.dirs[0]
            parts = _text(top.dir_name).split("/")
            if "\0" in top.dir_name or len(top.dir_name) >= PATH_MAX or any(p in ("", ".", "..") for p in parts):
                self.refuse(f"controller {_safe(','.join(names))} has directory {_safe(top.dir_name)!r}, not "
                            f"a clean relative path")
            self.perms(top.dir_perms if top.HasField("dir_perms") else None, top.dir_name)
            for prop in top.properties:
                self.prop(top.dir_name, prop, top=True)
            self.children(top)
            for name in names:
                tops[name] = top.dir_name
        sets = {}
        for cg_set in (cg.sets if cg else ()):
            sets[cg_set.id] = cg_set
            for member in cg_set.ctls:
                top = tops.get(_text(member.name))
                if top is None:
                    self.refuse(f"set {cg_set.id} names controller {_safe(member.name)!r}, which has no "
                                f"directory here")
                prefix = "/" + top
                if "\0" in _text(member.path) or ".." in member.path.split("/") or not _under(member.path, prefix):
                    self.refuse(f"set {cg_set.id} puts tasks in {_safe(member.path)} "
                                f"({_safe(member.name) or 'cgroup2'}), outside the container's cgroup "
                                f"{_safe(prefix)}")
                if member.cgns_prefix and member.cgns_prefix != len(prefix):
                    self.refuse(f"set {cg_set.id} has cgns_prefix {member.cgns_prefix} for {_safe(member.path)}, "
                                f"not the container's cgroup {_safe(prefix)}")
        for task in self.tasks:
            for t in task["threads"]:
                if not task["alive"] or not t.core.HasField("thread_core"):
                    continue
                tc = t.core.thread_core
                cg_set = tc.cg_set if tc.HasField("cg_set") else (t.core.tc.cg_set if t.core.HasField("tc") else 0)
                if cg_set and cg_set != root_cg_set and cg_set not in sets:
                    self.check.refuse(t.image, f"{t.who} names cgroup set {cg_set} (cg_set), which cgroup.img "
                                               f"does not hold")
        if "cgroup" in self.check.grant.namespaces:
            root = self.tasks[0]["threads"][0]
            tc = root.core.thread_core
            cg_set = tc.cg_set if tc.HasField("cg_set") else root.core.tc.cg_set
            # A root task in CRIU's own set stays in CRIU's cgroup namespace.
            members = sets[cg_set].ctls if cg_set in sets and cg_set != root_cg_set else ()
            if not members or not all(m.cgns_prefix for m in members):
                self.check.refuse(root.image, f"{root.who} would stay in the host's cgroup namespace (cg_set "
                                              f"{cg_set} has no cgns_prefix), but the container's spec creates one")

    def children(self, top) -> None:
        stack = [(top.dir_name, child) for child in top.children]
        while stack:
            path, d = stack.pop()
            if not _text(d.dir_name) or "/" in d.dir_name or d.dir_name in (".", "..") or "\0" in d.dir_name:
                self.refuse(f"cgroup {_safe(path)} has child {_safe(d.dir_name)!r}, not a plain name")
            path = f"{path}/{d.dir_name}"
            self.perms(d.dir_perms if d.HasField("dir_perms") else None, path)
            for prop in d.properties:
                self.prop(path, prop, top=False)
            stack.extend((path, child) for child in d.children)

    def prop(self, path: str, prop, *, top: bool) -> None:
        name = _text(prop.name)
        if "\0" in _text(prop.value) or not name or "/" in name or name in (".", "..") or "\0" in name:
            self.refuse(f"cgroup {_safe(path)} has property {_safe(name)!r}, not a plain file name")
        if name == "release_agent":
            self.refuse(f"cgroup {_safe(path)} sets release_agent, which runs as root on this host")
        # CRIU dumps uninitialised permissions for the top freezer.state it adds
        # (seen in every real dump: mode 0o52750000, uid 22041); it is never
        # restored there, because runc created that directory (soft mode).
        if not (top and name == "freezer.state"):
            self.perms(prop.perms if prop.HasField("perms") else None, f"{path}/{name}")

    def perms(self, perms, path: str) -> None:
        if perms is not None and (perms.uid or perms.gid or perms.mode & 0o022):
            self.refuse(f"cgroup {_safe(path)} asks for owner {perms.uid}:{perms.gid} mode {perms.mode & 0o7777:o}, "
                        f"not root's, not group- or other-writable")
