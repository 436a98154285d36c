"""Probes of host features ferry relies on.

Each probe returns a Check and never raises: a failure to probe is itself a
finding. The keys (Check.key) and the JSON shape are stable, because tests and
tools read them. Parsing is split into pure functions so unit tests can drive it.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import shutil
from typing import Callable, NamedTuple

from ferry.host.criulog import criu_messages, criu_said  # noqa: F401  (re-exported)
from ferry.util import proc
from ferry.util.errors import FerryError

MIN_CRIU = (4, 2)
# CRIU's page pipes grow past the 1 MiB default on large dumps and lazy page
# transfers; without CAP_SYS_RESOURCE only this sysctl lets them (HOST-NOTES).
WANTED_PIPE_MAX_SIZE = 64 * 1024 * 1024
CAP_SYS_RESOURCE = 24
TCP_REPAIR = 19

OK, MISSING, WARNING = "ok", "missing", "warning"


class Check(NamedTuple):
    key: str
    status: str          # ok | missing | warning
    value: str           # what was found: a version, a mode, "yes"/"no"
    detail: str          # one line on how it was found or why it failed
    impact: str          # what breaks without it
    required: bool       # checkpoint/restore cannot work without it

    @property
    def blocking(self) -> bool:
        return self.required and self.status != OK

    def to_dict(self) -> dict:
        return self._asdict()


# ---- pure parsers -------------------------------------------------------

def parse_criu_version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"^Version:\s*(\d+(?:\.\d+)+)", text, re.MULTILINE)
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


def parse_runc_version(text: str) -> str | None:
    match = re.search(r"^runc version\s+(\S+)", text, re.MULTILINE)
    return match.group(1) if match else None


def cgroup_mode(mounts: str) -> str:
    """v1, hybrid or v2, from the text of /proc/self/mounts."""
    fs_at = {}
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            fs_at[fields[1]] = fields[2]
    top = fs_at.get("/sys/fs/cgroup")
    if top == "cgroup2":
        return "v2"
    has_v1 = any(t == "cgroup" and p.startswith("/sys/fs/cgroup/") for p, t in fs_at.items())
    if has_v1 and fs_at.get("/sys/fs/cgroup/unified") == "cgroup2":
        return "hybrid"
    if has_v1:
        return "v1"
    return "none"


def has_capability(proc_status: str, bit: int) -> bool:
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", proc_status, re.MULTILINE)
    return bool(match) and bool(int(match.group(1), 16) >> bit & 1)


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


# ---- probes -------------------------------------------------------------

def _guarded(key: str, impact: str, required: bool):
    """Turn an unexpected exception inside a probe into a 'missing' finding."""
    def wrap(fn: Callable[[], Check]) -> Callable[[], Check]:
        @functools.wraps(fn)
        def probe() -> Check:
            try:
                return fn()
            except (FerryError, OSError) as exc:
                return Check(key, MISSING, "no", str(exc), impact, required)
        return probe
    return wrap


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


IMPACT = {
    "root": "ferry manages namespaces, mounts, cgroups and CRIU, which need root",
    "criu": "no checkpoint or restore at all",
    "pycriu": "ferry cannot drive CRIU over RPC (stats, lazy pages, page server)",
    "runc": "no containers can run",
    "cgroups": "containers cannot be given resource limits or frozen for a dump",
    "cgroup_manager": "runc cannot place containers in cgroups",
    "overlayfs": "container root filesystems cannot be mounted",
    "netns": "containers cannot have their own network",
    "nftables": "no published ports and no network lock during a checkpoint",
    "tcp_repair": "established TCP connections cannot survive a checkpoint (--tcp-established)",
    "userfaultfd": "no lazy pages (post-copy): a future live migration would copy all memory while the "
                   "container is frozen",
    "soft_dirty": "no pre-dump (pre-copy): a future live migration would use stop-and-copy or lazy pages",
    "rlimits": "container rlimits cannot exceed the host's hard limits, so ferry clamps them",
    "pipe_max_size": "large dumps and lazy page transfer fail with 'page-pipe: tee ... Operation not permitted'",
}


@_guarded("root", IMPACT["root"], True)
def probe_root() -> Check:
    uid = os.geteuid()
    if uid == 0:
        return Check("root", OK, "yes", "running as uid 0", IMPACT["root"], True)
    return Check("root", MISSING, "no", f"running as uid {uid}; run ferry as root",
                 IMPACT["root"], True)


@_guarded("criu", IMPACT["criu"], True)
def probe_criu() -> Check:
    binary = proc.criu_binary()
    if binary is None:
        where = os.environ.get("FERRY_CRIU") or "PATH"
        return Check("criu", MISSING, "none", f"criu not found in {where}; run 'make setup'",
                     IMPACT["criu"], True)
    version = parse_criu_version(proc.run([binary, "--version"], desc="criu --version").stdout)
    if version is None:
        return Check("criu", MISSING, "unknown", f"{binary} --version printed no version",
                     IMPACT["criu"], True)
    if version < MIN_CRIU:
        return Check("criu", MISSING, version_text(version),
                     f"{binary} is {version_text(version)}, older than "
                     f"{version_text(MIN_CRIU)} (fails on this kernel); run 'make setup'",
                     IMPACT["criu"], True)
    check = proc.run([binary, "check"], desc="criu check", check=False)
    if check.returncode != 0:
        return Check("criu", MISSING, version_text(version),
                     f"'{binary} check' failed: {criu_said(check.stderr + check.stdout)}",
                     IMPACT["criu"], True)
    said = proc.tail(check.stdout, 1) or "ok"
    return Check("criu", OK, version_text(version), f"{binary}: criu check: {said}",
                 IMPACT["criu"], True)


@_guarded("pycriu", IMPACT["pycriu"], True)
def probe_pycriu() -> Check:
    try:
        import pycriu
        from pycriu import rpc_pb2  # noqa: F401  generated at CRIU build time
    except ImportError as exc:
        return Check("pycriu", MISSING, "no", f"cannot import pycriu ({exc}); run 'make setup'",
                     IMPACT["pycriu"], True)
    version = getattr(pycriu, "__version__", None)
    if version is None:
        from pycriu import version as v  # type: ignore[attr-defined]
        version = v.__version__
    return Check("pycriu", OK, str(version), f"imported from {os.path.dirname(pycriu.__file__)}",
                 IMPACT["pycriu"], True)


def _criu_feature(key: str, feature: str, impact: str) -> Check:
    binary = proc.criu_binary()
    if binary is None:
        return Check(key, MISSING, "unknown", "criu not found, so it cannot be probed", impact, False)
    result = proc.run([binary, "check", "--feature", feature],
                      desc=f"criu check --feature {feature}", check=False)
    if result.returncode == 0:
        return Check(key, OK, "yes", f"criu check --feature {feature}: supported", impact, False)
    said = criu_said(result.stderr + result.stdout)
    return Check(key, MISSING, "no", f"criu check --feature {feature}: {said}", impact, False)


@_guarded("userfaultfd", IMPACT["userfaultfd"], False)
def probe_userfaultfd() -> Check:
    return _criu_feature("userfaultfd", "uffd-noncoop", IMPACT["userfaultfd"])


@_guarded("soft_dirty", IMPACT["soft_dirty"], False)
def probe_soft_dirty() -> Check:
    return _criu_feature("soft_dirty", "mem_dirty_track", IMPACT["soft_dirty"])


@_guarded("runc", IMPACT["runc"], True)
def probe_runc() -> Check:
    out = proc.run(["runc", "--version"], desc="runc --version").stdout
    version = parse_runc_version(out)
    if version is None:
        return Check("runc", MISSING, "unknown", "runc --version printed no version",
                     IMPACT["runc"], True)
    return Check("runc", OK, version, f"{shutil.which('runc', path=proc.TOOL_PATH)}",
                 IMPACT["runc"], True)


@_guarded("cgroups", IMPACT["cgroups"], True)
def probe_cgroups() -> Check:
    mode = cgroup_mode(_read("/proc/self/mounts"))
    if mode == "none":
        return Check("cgroups", MISSING, "none", "no cgroup filesystem under /sys/fs/cgroup",
                     IMPACT["cgroups"], True)
    detail = {"v1": "cgroup v1 controllers under /sys/fs/cgroup",
              "hybrid": "v1 controllers under /sys/fs/cgroup, cgroup2 at /sys/fs/cgroup/unified",
              "v2": "unified cgroup2 at /sys/fs/cgroup"}[mode]
    return Check("cgroups", OK, mode, detail, IMPACT["cgroups"], True)


@_guarded("cgroup_manager", IMPACT["cgroup_manager"], True)
def probe_cgroup_manager() -> Check:
    # crun refuses hybrid mode, and there is no systemd to delegate to, so
    # ferry always drives runc with its cgroupfs manager.
    systemd = os.path.isdir("/run/systemd/system")
    why = "systemd is running, but cgroupfs keeps ferry independent of it" if systemd \
        else "no systemd on this host"
    return Check("cgroup_manager", OK, "cgroupfs", f"runc with cgroupfs ({why})",
                 IMPACT["cgroup_manager"], True)


@_guarded("overlayfs", IMPACT["overlayfs"], True)
def probe_overlayfs() -> Check:
    if "overlay" not in _read("/proc/filesystems").split():
        return Check("overlayfs", MISSING, "no", "overlay is not in /proc/filesystems",
                     IMPACT["overlayfs"], True)
    if os.geteuid() != 0:
        return Check("overlayfs", OK, "yes", "listed in /proc/filesystems (mount not tried: not root)",
                     IMPACT["overlayfs"], True)
    import tempfile
    with tempfile.TemporaryDirectory(prefix="ferry-overlay-probe-") as tmp:
        dirs = {name: os.path.join(tmp, name) for name in ("lower", "upper", "work", "merged")}
        for path in dirs.values():
            os.mkdir(path)
        options = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
        proc.run(["mount", "--make-private", "-t", "overlay", "overlay", "-o", options, dirs["merged"]],
                 desc="trial overlay mount")
        proc.run(["umount", dirs["merged"]], desc="unmount trial overlay")
    return Check("overlayfs", OK, "yes", "a trial overlay mount worked", IMPACT["overlayfs"], True)


@_guarded("netns", IMPACT["netns"], True)
def probe_netns() -> Check:
    result = proc.run(["unshare", "--net", "--", "true"], desc="unshare --net", check=False)
    if result.returncode != 0:
        return Check("netns", MISSING, "no", f"unshare --net failed: {proc.tail(result.stderr, 1)}",
                     IMPACT["netns"], True)
    return Check("netns", OK, "yes", "a new network namespace could be created",
                 IMPACT["netns"], True)


@_guarded("nftables", IMPACT["nftables"], True)
def probe_nftables() -> Check:
    version = proc.run(["nft", "--version"], desc="nft --version").stdout.strip()
    result = proc.run(["nft", "list", "tables"], desc="nft list tables", check=False)
    if result.returncode != 0:
        return Check("nftables", MISSING, "no", f"nft list tables failed: {proc.tail(result.stderr, 1)}",
                     IMPACT["nftables"], True)
    return Check("nftables", OK, version.split()[1] if " " in version else version,
                 "the kernel answers nf_tables requests", IMPACT["nftables"], True)


@_guarded("tcp_repair", IMPACT["tcp_repair"], False)
def probe_tcp_repair() -> Check:
    import socket   # only `ferry system check` probes; checkpoint and restore import this module too
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
        except OSError as exc:
            return Check("tcp_repair", MISSING, "no", f"setsockopt(TCP_REPAIR) failed: {exc.strerror}",
                         IMPACT["tcp_repair"], False)
    return Check("tcp_repair", OK, "yes", "setsockopt(TCP_REPAIR) accepted", IMPACT["tcp_repair"], False)


@_guarded("rlimits", IMPACT["rlimits"], False)
def probe_rlimits() -> Check:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc_ = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    limits = f"hard limits: nofile {_limit(nofile)}, nproc {_limit(nproc_)}"
    if has_capability(_read("/proc/self/status"), CAP_SYS_RESOURCE):
        return Check("rlimits", OK, "yes", f"CAP_SYS_RESOURCE present; {limits}",
                     IMPACT["rlimits"], False)
    return Check("rlimits", WARNING, "no", f"no CAP_SYS_RESOURCE; {limits}",
                 IMPACT["rlimits"], False)


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


@_guarded("pipe_max_size", IMPACT["pipe_max_size"], False)
def probe_pipe_max_size() -> Check:
    size = int(_read("/proc/sys/fs/pipe-max-size").strip())
    if size >= WANTED_PIPE_MAX_SIZE:
        return Check("pipe_max_size", OK, str(size), f"fs.pipe-max-size is {size} bytes",
                     IMPACT["pipe_max_size"], False)
    return Check("pipe_max_size", WARNING, str(size),
                 f"fs.pipe-max-size is {size}, below {WANTED_PIPE_MAX_SIZE}; "
                 f"ferry raises it before a dump when root",
                 IMPACT["pipe_max_size"], False)


PROBES: tuple[Callable[[], Check], ...] = (
    probe_root, probe_criu, probe_pycriu, probe_runc, probe_cgroups, probe_cgroup_manager,
    probe_overlayfs, probe_netns, probe_nftables, probe_tcp_repair, probe_userfaultfd,
    probe_soft_dirty, probe_rlimits, probe_pipe_max_size,
)


def run_all() -> list[Check]:
    return [probe() for probe in PROBES]


@functools.lru_cache(maxsize=None)
def cached(key: str) -> Check:
    """One probe by key, computed once per process (for test skips)."""
    for probe in PROBES:
        if probe.__name__ == f"probe_{key}":
            return probe()
    raise KeyError(key)
