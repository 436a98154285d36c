"""What a checkpoint needs to know about the host that wrote it: arch, kernel,
CRIU's own cpuinfo (decoded, and raw so a destination can run `criu cpuinfo
check` against it), CRIU and runc versions, cgroup mode and hostname.

It only reads the host, through the probes and the subprocess chokepoint.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from typing import NamedTuple

from ferry.host import probes
from ferry.util import proc
from ferry.util.errors import Incompatible, NotFound
from ferry.util.records import checked
from ferry.util.strictjson import shown

CPUINFO_IMAGE = "cpuinfo.img"   # the file `criu cpuinfo dump` writes


@checked
class HostInfo(NamedTuple):
    arch: str
    kernel: str
    cpu: dict                 # CRIU's cpuinfo entry, as pycriu decodes it
    criu_version: str
    runc_version: str
    cgroup_mode: str          # v1 | hybrid | v2 | none
    hostname: str
    cpuinfo_image: str        # base64 of the cpuinfo.img `criu cpuinfo dump` wrote

    def _check(self):
        for name, value in zip(self._fields, self):
            wanted = dict if name == "cpu" else str
            if not isinstance(value, wanted):
                raise ValueError(f"host.{name} must be a {wanted.__name__}")
        try:
            json.dumps(self.cpu)
        except (TypeError, ValueError):
            raise ValueError("host.cpu is not plain JSON data") from None
        try:
            base64.b64decode(self.cpuinfo_image, validate=True)
        except binascii.Error:
            raise ValueError("host.cpuinfo_image is not base64") from None

    def to_dict(self) -> dict:
        return self._asdict()

    @classmethod
    def from_dict(cls, data: dict) -> "HostInfo":
        """ValueError unless `data` has exactly the fields, each of the right type."""
        if not isinstance(data, dict):
            raise ValueError("host must be an object")
        names = set(cls._fields)
        if set(data) != names:
            missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
            raise ValueError("host: " + "; ".join(
                part for part in (f"missing {', '.join(missing)}" if missing else "",
                                  f"unknown {_listed(unknown)}" if unknown else "") if part))
        return cls(**data)

    def cpuinfo_image_bytes(self) -> bytes:
        """The raw cpuinfo.img, to write into a dir for `criu cpuinfo check -D DIR`."""
        return base64.b64decode(self.cpuinfo_image, validate=True)


def criu_path() -> str:
    binary = proc.criu_binary()
    if binary is None:
        where = os.environ.get("FERRY_CRIU") or "PATH"
        raise NotFound(f"criu not found in {where}", hint="run 'make setup' as root")
    return binary


def decode_cpuinfo(raw: bytes) -> dict:
    """The entry of a cpuinfo.img, decoded by pycriu into plain JSON data."""
    try:
        from pycriu import images
    except ImportError as exc:
        raise Incompatible(f"pycriu is not importable ({exc})", hint="run 'make setup' as root") from None
    try:
        entries = images.load(io.BytesIO(raw))["entries"]
        entry = entries[0]
    except Exception as exc:  # pycriu raises many kinds on a bad image
        raise Incompatible(f"cannot decode CRIU's {CPUINFO_IMAGE} ({exc or type(exc).__name__})") from None
    return json.loads(json.dumps(entry))


def criu_cpuinfo(criu: str) -> bytes:
    import tempfile   # only when the host's answers are not cached yet
    with tempfile.TemporaryDirectory(prefix="ferry-cpuinfo-") as tmp:
        proc.run([criu, "cpuinfo", "dump", "-D", tmp], desc="criu cpuinfo dump")
        with open(os.path.join(tmp, CPUINFO_IMAGE), "rb") as f:
            return f.read()


HOST_INFO_TTL = 60.0   # seconds one answer serves: a migration asks on both sides, twice
_host_info: tuple[float, HostInfo] | None = None


def host_info() -> HostInfo:
    """This host's facts for a compatibility check (three tool runs, about 50 ms), remembered a minute."""
    import time
    global _host_info
    if _host_info is None or time.monotonic() - _host_info[0] > HOST_INFO_TTL:
        _host_info = (time.monotonic(), _probe_host())
    return _host_info[1]


# The tools' answers (CRIU and runc versions, the CPU) on a tmpfs, for this boot
# and these binaries: probing them costs a restore about 90 ms, three tool runs.
HOST_CACHE = "/run/ferry/host-info.json"
TOOL_FACTS = ("criu_version", "runc_version", "cpu", "cpuinfo_image")


def _probe_host() -> HostInfo:
    criu = criu_path()
    key = _tools_key(criu)
    facts = _cached_facts(key)
    if facts is None:
        criu_version = probes.parse_criu_version(proc.run([criu, "--version"], desc="criu --version").stdout)
        if criu_version is None:
            raise Incompatible(f"{criu} --version printed no version", hint="run 'make setup' as root")
        runc_version = probes.parse_runc_version(proc.run(["runc", "--version"], desc="runc --version").stdout)
        if runc_version is None:
            raise Incompatible("runc --version printed no version", hint="run 'make setup' as root")
        raw_cpuinfo = criu_cpuinfo(criu)
        facts = {"criu_version": probes.version_text(criu_version), "runc_version": runc_version,
                 "cpu": decode_cpuinfo(raw_cpuinfo), "cpuinfo_image": base64.b64encode(raw_cpuinfo).decode("ascii")}
        _remember_facts(key, facts)
    with open("/proc/self/mounts") as f:
        cgroup_mode = probes.cgroup_mode(f.read())
    uname = os.uname()
    return HostInfo(arch=uname.machine, kernel=uname.release, cgroup_mode=cgroup_mode, hostname=uname.nodename,
                    **facts)


def _tools_key(criu: str) -> list | None:
    """What the cached answers hold for: this boot, and these criu and runc binaries."""
    import shutil
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            key: list = [f.read().strip()]
        for path in (criu, shutil.which("runc", path=proc.TOOL_PATH) or "runc"):
            info = os.stat(path)
            key += [os.path.realpath(path), info.st_mtime_ns, info.st_size, info.st_ino]
        return key
    except OSError:
        return None


def _cached_facts(key: list | None) -> dict | None:
    if key is None:
        return None
    try:
        with open(HOST_CACHE) as f:
            cached = json.load(f)
        facts = cached["facts"] if cached.get("key") == key else None
        if facts is not None and set(facts) == set(TOOL_FACTS):
            HostInfo(arch="", kernel="", cgroup_mode="", hostname="", **facts)   # the types, checked
            return facts
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


def _remember_facts(key: list | None, facts: dict) -> None:
    if key is None:
        return
    from ferry.util.fs import atomic_write
    try:
        os.makedirs(os.path.dirname(HOST_CACHE), mode=0o755, exist_ok=True)
        atomic_write(HOST_CACHE, json.dumps({"key": key, "facts": facts}), mode=0o644)
    except OSError:
        pass   # read-only /run: the next restore probes again


def _listed(keys: list, at_most: int = 5) -> str:
    """Keys a forged archive chose, fit for one line of bounded length."""
    text = ", ".join(shown(k, 40) for k in keys[:at_most])
    return text + (f" and {len(keys) - at_most} more" if len(keys) > at_most else "")
