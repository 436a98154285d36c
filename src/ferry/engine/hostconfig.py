"""What `run` asks of the host beyond ferry's defaults: privileges, host
namespaces, limits and the root's writability (podman's HostConfig).

Every field may come from a forged archive, so each is checked for type and
range, and a restore re-grants what it holds only under the rules of
engine/checkpoints.py. A key is written only when it differs from its
default: records made before the field existed read the same.
"""

from __future__ import annotations

import posixpath
import re
from typing import NamedTuple

from ferry.util.hostspec import ALL, CAPABILITIES, CPU_PERIOD, DEFAULT_CAPABILITIES, READ_ONLY_TMPFS, \
    capabilities, tmpfs_options
from ferry.util.records import checked
from ferry.util.strictjson import exact_keys, shown

MAX_PATH = 4095
# podman's --ulimit names (its rlimit table), as RLIMIT_<NAME> in the OCI spec.
ULIMIT_NAMES = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
                "rss", "rtprio", "rttime", "sigpending", "stack", "as")
RLIM_INFINITY = (1 << 64) - 1   # the OCI spec's "unlimited" (-1 on the command line)
MAX_TMPFS = 64
MAX_TMPFS_OPTIONS = 16
MAX_MEMORY = 1 << 62
MAX_NANO_CPUS = 1 << 50        # about a million CPUs: any real quota fits
MIN_CPU_QUOTA = 1000           # the kernel's (and podman's) least CFS quota, 1 ms
IPC_MODES = ("private", "host")
# tmpfs options a record may ask the kernel (or runc) for: nothing else of an
# archive reaches a mount call.
TMPFS_FLAGS = frozenset({"ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "tmpcopyup",
                         "notmpcopyup"})
TMPFS_VALUES = {
    "size": re.compile(r"^[0-9]{1,19}[kmgKMG]?\Z|^[0-9]{1,3}%\Z"),
    "nr_inodes": re.compile(r"^[0-9]{1,19}[kmgKMG]?\Z"),
    "mode": re.compile(r"^[0-7]{1,4}\Z"),
    "uid": re.compile(r"^[0-9]{1,10}\Z"),
    "gid": re.compile(r"^[0-9]{1,10}\Z"),
}


@checked
class TmpfsMount(NamedTuple):
    """One --tmpfs DEST[:OPTIONS] (or --mount type=tmpfs): a fresh tmpfs at `destination`."""
    destination: str
    options: tuple[str, ...] = ()

    def _check(self):
        _check_destination(self.destination, "tmpfs destination")
        if not isinstance(self.options, tuple) or len(self.options) > MAX_TMPFS_OPTIONS:
            raise ValueError(f"tmpfs options must be a list of at most {MAX_TMPFS_OPTIONS}")
        for option in self.options:
            if not isinstance(option, str):
                raise ValueError(f"tmpfs option {shown(option)} is not a string")
            key, equals, value = option.partition("=")
            if not (option in TMPFS_FLAGS or (equals and key in TMPFS_VALUES and TMPFS_VALUES[key].match(value))):
                raise ValueError(f"tmpfs option {shown(option)} is not one ferry allows")
            if key == "uid" or key == "gid":
                if int(value) >= 1 << 32:
                    raise ValueError(f"tmpfs option {shown(option)} is out of range")

    def mount_options(self) -> list[str]:
        """The options podman gives the mount: these, then its defaults that none overrides."""
        return tmpfs_options(self.options)

    def to_dict(self) -> dict:
        return {"destination": self.destination, "options": list(self.options)}

    @classmethod
    def from_dict(cls, data) -> "TmpfsMount":
        exact_keys(data, ("destination", "options"), "tmpfs")
        if not isinstance(data["options"], list):
            raise ValueError("tmpfs options must be a list")
        return cls(data["destination"], tuple(data["options"]))


# What ferry mounts itself (runtime/spec.py, the /etc files): a tmpfs may not
# take their place, nor go below /proc or /sys. /dev/shm may: it replaces ferry's.
RESERVED = frozenset({"/proc", "/sys", "/dev", "/dev/pts", "/dev/mqueue", "/etc/hosts", "/etc/hostname",
                      "/etc/resolv.conf", "/run/.containerenv"})


def _check_destination(path, what: str) -> None:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > MAX_PATH \
            or posixpath.normpath(path) != path or path.startswith("//") or path == "/":
        raise ValueError(f"{what} {shown(path)} must be an absolute, normalised path below /")
    if path in RESERVED or path.startswith(("/proc/", "/sys/")):
        raise ValueError(f"{what} {shown(path)} is a path ferry mounts itself")


@checked
class HostConfig(NamedTuple):
    """What `run` asked of the host. Defaults are ferry's behaviour without the flags."""
    memory: int = 0                       # bytes; 0: no limit (-m)
    nano_cpus: int = 0                    # CPUs x 10^9; 0: no quota (--cpus)
    ulimits: tuple[tuple[str, int, int], ...] = ()   # (name, soft, hard), replacing ferry's default of that name
    cap_add: tuple[str, ...] = ()         # CAP_* names, or ALL
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    read_only: bool = False               # the root filesystem
    read_only_tmpfs: bool = True          # with read_only: tmpfs at /run, /tmp, /var/tmp (podman's default)
    tmpfs: tuple[TmpfsMount, ...] = ()
    ipc: str = "private"                  # or "host"

    def _check(self):
        for key, top in (("memory", MAX_MEMORY), ("nano_cpus", MAX_NANO_CPUS)):
            value = getattr(self, key)
            if type(value) is not int or not 0 <= value <= top:
                raise ValueError(f"host.{key} must be a whole number from 0 to {top}")
        if self.nano_cpus and self.nano_cpus * CPU_PERIOD // 10**9 < MIN_CPU_QUOTA:
            raise ValueError("host.nano_cpus gives a CPU quota below 1 ms")
        if not isinstance(self.ulimits, tuple) or len(self.ulimits) > len(ULIMIT_NAMES):
            raise ValueError(f"host.ulimits must be a list of at most {len(ULIMIT_NAMES)}")
        for limit in self.ulimits:
            if not isinstance(limit, tuple) or len(limit) != 3 or limit[0] not in ULIMIT_NAMES \
                    or not all(type(v) is int and 0 <= v <= RLIM_INFINITY for v in limit[1:]) \
                    or limit[1] > limit[2]:
                raise ValueError(f"host.ulimits holds {shown(limit)}, which is not [name, soft, hard] with "
                                 "soft <= hard")
        if len({limit[0] for limit in self.ulimits}) != len(self.ulimits):
            raise ValueError("host.ulimits names a limit twice")
        for key in ("cap_add", "cap_drop"):
            caps = getattr(self, key)
            if not isinstance(caps, tuple) or len(caps) > len(CAPABILITIES) + 1:
                raise ValueError(f"host.{key} must be a list of at most {len(CAPABILITIES) + 1} capabilities")
            for cap in caps:
                if cap != ALL and cap not in CAPABILITIES:
                    raise ValueError(f"host.{key} holds {shown(cap)}, which is not a capability")
            if len(set(caps)) != len(caps):
                raise ValueError(f"host.{key} names a capability twice")
        for key in ("privileged", "read_only", "read_only_tmpfs"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"host.{key} must be true or false")
        if not isinstance(self.tmpfs, tuple) or len(self.tmpfs) > MAX_TMPFS \
                or not all(isinstance(t, TmpfsMount) for t in self.tmpfs):
            raise ValueError(f"host.tmpfs must be a list of at most {MAX_TMPFS} tmpfs mounts")
        if len({t.destination for t in self.tmpfs}) != len(self.tmpfs):
            raise ValueError("host.tmpfs mounts two at the same destination")
        if self.ipc not in IPC_MODES:
            raise ValueError(f"host.ipc {shown(self.ipc)} is not one of {', '.join(IPC_MODES)}")

    def to_dict(self) -> dict:
        return non_defaults(self, DEFAULT_HOST)

    @classmethod
    def from_dict(cls, data) -> "HostConfig":
        values = dict(known_keys(data, cls._fields, "host"))
        for key in ("ulimits", "cap_add", "cap_drop", "tmpfs"):
            if key in values and not isinstance(values[key], list):
                raise ValueError(f"host.{key} must be a list")
        if "ulimits" in values:
            values["ulimits"] = tuple(tuple(u) if isinstance(u, list) else u for u in values["ulimits"])
        for key in ("cap_add", "cap_drop"):
            if key in values:
                values[key] = tuple(values[key])
        if "tmpfs" in values:
            if len(values["tmpfs"]) > MAX_TMPFS:
                raise ValueError(f"host.tmpfs must be a list of at most {MAX_TMPFS} tmpfs mounts")
            values["tmpfs"] = tuple(TmpfsMount.from_dict(t) for t in values["tmpfs"])
        return cls(**values)

    # -- what it means ----------------------------------------------------------------------
    def capabilities(self, available: frozenset[str] | None = None) -> tuple[str, ...]:
        """The bounding (and effective) set, as podman computes it: ALL and
        --privileged mean every capability `available` (this host's bounding
        set) has; --cap-drop ALL starts from none."""
        return capabilities(self.privileged, self.cap_add, self.cap_drop, available)

    def tmpfs_mounts(self) -> tuple[TmpfsMount, ...]:
        """--tmpfs and --mount type=tmpfs, then --read-only's own where none is given."""
        mounts = list(self.tmpfs)
        if self.read_only and self.read_only_tmpfs:
            taken = {t.destination for t in mounts}
            mounts += [TmpfsMount(path) for path in READ_ONLY_TMPFS if path not in taken]
        return tuple(mounts)

    def cpu_quota(self) -> int:
        return self.nano_cpus * CPU_PERIOD // 10**9 if self.nano_cpus else 0

    def grants(self) -> list[str]:
        """What this asks beyond ferry's defaults, as the flags that ask it:
        a restore of an archive not this root's own re-grants them only when
        the user allows (engine/checkpoints.py). Limits only restrict."""
        asked = []
        if self.privileged:
            asked.append("--privileged")
        added = [c for c in self.cap_add if c not in DEFAULT_CAPABILITIES]
        if added:
            asked.append("--cap-add " + ",".join(added))
        if self.ipc == "host":
            asked.append("--ipc host")
        return asked


def non_defaults(record, default) -> dict:
    """The record's JSON form: only the fields that differ from `default`."""
    return {key: _plain(getattr(record, key)) for key in record._fields
            if getattr(record, key) != getattr(default, key)}


def _plain(value):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def known_keys(data, fields: tuple[str, ...], what: str) -> dict:
    """`data` when it is an object whose keys are all `fields` (any may be absent)."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be an object")
    unknown = sorted(k for k in data if k not in fields)
    if unknown:
        raise ValueError(f"{what} has unknown {', '.join(shown(k) for k in unknown)}")
    return data


DEFAULT_HOST = HostConfig()


# ---- the flags' values, parsed as podman parses them (ValueError: the one-line message) --------

_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?\Z")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_memory(text: str) -> int:
    """-m 512m, 1g, 1024k, 1.5g or bytes (binary units, as podman's RAMInBytes)."""
    found = _MEMORY_RE.match(text.strip())
    if not found:
        raise ValueError(f"invalid value for memory: invalid size: {text!r}")
    value = int(float(found.group(1)) * _UNITS[(found.group(2) or "").lower()])
    if value > MAX_MEMORY:
        raise ValueError(f"invalid value for memory: {text!r} is too large")
    return value


def parse_cpus(text: str) -> int:
    """--cpus 1.5: nano CPUs; 0 or less means no limit, as in podman."""
    try:
        cpus = float(text)
    except ValueError:
        raise ValueError(f'invalid argument "{text}" for "--cpus" flag: not a number') from None
    if cpus != cpus or cpus in (float("inf"), float("-inf")):
        raise ValueError(f'invalid argument "{text}" for "--cpus" flag: not a number')
    if cpus <= 0:
        return 0
    nano = round(cpus * 1e9)
    if nano > MAX_NANO_CPUS:
        raise ValueError(f"--cpus {text} is more CPUs than any host has")
    if nano * CPU_PERIOD // 10**9 < MIN_CPU_QUOTA:
        raise ValueError("CPU cfs quota cannot be less than 1ms (i.e. 1000)")
    return nano


def parse_ulimit(text: str) -> tuple[str, int, int]:
    """--ulimit NAME=SOFT[:HARD]; -1 is unlimited."""
    def fail(why: str) -> ValueError:
        return ValueError(f"ulimit option {text!r} requires name=SOFT:HARD, failed to be parsed: {why}")
    name, equals, values = text.partition("=")
    if not equals:
        raise fail(f"invalid ulimit argument: {text}")
    if name not in ULIMIT_NAMES:
        raise fail(f"invalid ulimit type: {name}")
    parts = values.split(":")
    if len(parts) > 2:
        raise fail(f"too many limit value arguments - {values}, can only have up to two, `soft[:hard]`")
    numbers = []
    for part in parts:
        if not re.fullmatch(r"-?[0-9]{1,20}", part):
            raise fail(f"invalid syntax: {part!r}")
        number = int(part)
        if number == -1:
            number = RLIM_INFINITY
        if not 0 <= number <= RLIM_INFINITY:
            raise fail(f"value out of range: {part}")
        numbers.append(number)
    soft, hard = numbers[0], numbers[-1]
    if soft > hard:
        raise fail(f"ulimit soft limit must be less than or equal to hard limit: {parts[0]} > {parts[-1]}")
    return name, soft, hard


def merge_ulimits(texts) -> tuple[tuple[str, int, int], ...]:
    """Several --ulimit: a later one of the same name wins (as podman's)."""
    limits: dict[str, tuple[str, int, int]] = {}
    for text in texts:
        limit = parse_ulimit(text)
        limits.pop(limit[0], None)
        limits[limit[0]] = limit
    return tuple(limits.values())


def parse_capabilities(texts) -> tuple[str, ...]:
    """--cap-add/--cap-drop values: names with or without CAP_, any case, or ALL;
    several in one value separated by commas."""
    caps: list[str] = []
    for text in texts:
        for word in text.split(","):
            word = word.strip().upper()
            if word == ALL:
                name = ALL
            else:
                name = word if word.startswith("CAP_") else f"CAP_{word}"
                if name not in CAPABILITIES:
                    raise ValueError(f'"{name}": unknown capability')
            if name not in caps:
                caps.append(name)
    return tuple(caps)


def parse_tmpfs(text: str) -> TmpfsMount:
    """--tmpfs DEST[:OPTIONS], OPTIONS comma-separated (size=64m,mode=1777,noexec...)."""
    destination, _, options = text.partition(":")
    if not destination.startswith("/"):
        raise ValueError(f"invalid container path {destination!r}, must be an absolute path")
    return _tmpfs(destination, [o for o in options.split(",") if o] if options else [])


def _tmpfs(destination: str, options: list[str]) -> TmpfsMount:
    destination = posixpath.normpath(destination)
    if destination.startswith("//"):
        destination = "/" + destination.lstrip("/")
    if destination == "/":
        raise ValueError("a tmpfs cannot be mounted at /")
    for option in options:
        key, equals, _ = option.partition("=")
        if option not in TMPFS_FLAGS and not (equals and key in TMPFS_VALUES):
            raise ValueError(f"unknown mount option {option!r}: invalid mount option")
    try:
        return TmpfsMount(destination, tuple(options))
    except ValueError as exc:
        raise ValueError(f"--tmpfs {destination}: {exc}") from None


MOUNT_FORMAT = ("incorrect mount format: should be --mount type=<bind|tmpfs|volume>,[src=<host-dir|volume-name>,]"
                "target=<ctr-dir>[,options]")


class ParsedMount(NamedTuple):
    """One --mount: a bind or a volume, in -v's form (SRC:DEST[:ro]), or a tmpfs."""
    volume: str | None
    tmpfs: TmpfsMount | None


def parse_mount(text: str) -> ParsedMount:
    """podman's --mount type=bind|volume|tmpfs,src=...,dst=...[,ro][,tmpfs-size=...][,tmpfs-mode=...]."""
    fields: dict[str, str | None] = {}
    for item in text.split(","):
        key, equals, value = item.partition("=")
        key = key.strip().lower()
        if key in ("source", "src"):
            key = "src"
        elif key in ("destination", "dst", "target"):
            key = "dst"
        elif key == "readonly":
            key = "ro"
        if key in fields:
            raise ValueError(f"{key}: option given twice in --mount {text!r}")
        fields[key] = value if equals else None
    kind = fields.pop("type", None)
    if kind is None:
        raise ValueError(MOUNT_FORMAT)
    if kind not in ("bind", "volume", "tmpfs"):
        raise ValueError(f"invalid filesystem type {kind!r}")
    destination = fields.pop("dst", None)
    if not destination:
        raise ValueError("must set volume destination")
    if not destination.startswith("/"):
        raise ValueError(f"invalid container path {destination!r}, must be an absolute path")
    readonly = False
    if "ro" in fields:
        flag = fields.pop("ro")
        if flag not in (None, "true", "false"):
            raise ValueError(f"invalid value for ro: {flag!r} (true or false)")
        readonly = flag != "false"
    if "rw" in fields:
        flag = fields.pop("rw")
        if flag not in (None, "true", "false"):
            raise ValueError(f"invalid value for rw: {flag!r} (true or false)")
        readonly = flag == "false"
    if kind == "tmpfs":
        options = ["ro"] if readonly else []
        if "tmpfs-size" in fields:
            options.append(f"size={fields.pop('tmpfs-size')}")
        if "tmpfs-mode" in fields:
            options.append(f"mode={fields.pop('tmpfs-mode')}")
        if fields.get("src"):
            raise ValueError("src: invalid mount option for a tmpfs")
        fields.pop("src", None)
        _refuse_left(fields)
        return ParsedMount(None, _tmpfs(destination, options))
    source = fields.pop("src", None)
    _refuse_left(fields)
    if not source:
        raise ValueError(f"--mount type={kind} needs src=" + ("HOST_PATH" if kind == "bind" else
                         "NAME: ferry makes no anonymous volumes"))
    if kind == "bind" and not source.startswith("/"):
        raise ValueError(f"--mount type=bind: src {source!r} must be an absolute host path")
    if kind == "volume" and source.startswith((".", "/")):
        raise ValueError(f"--mount type=volume: src {source!r} must be a volume name")
    if ":" in source or ":" in destination:
        raise ValueError(f"--mount {text!r}: ferry's paths may not hold ':'")
    return ParsedMount(f"{source}:{destination}" + (":ro" if readonly else ""), None)


def _refuse_left(fields: dict) -> None:
    if fields:
        raise ValueError(f"{next(iter(fields))}: invalid mount option")


def parse_ipc(text: str) -> str:
    """--ipc host, or private / shareable (a namespace of its own, ferry's default)."""
    if text == "host":
        return "host"
    if text in ("private", "shareable"):
        return "private"
    if text in ("none",) or text.startswith(("container:", "ns:")):
        raise ValueError(f"--ipc {text}: ferry supports host, private or shareable")
    raise ValueError(f"unrecognized namespace mode {text} passed")
